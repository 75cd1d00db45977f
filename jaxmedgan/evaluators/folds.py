"""Stratified group k-fold splits: every group (patient / lesion) in exactly one test fold.

Each group gets a stratum (its most common class; for multi-label data its rarest positive
finding, or 'no finding'). Within each stratum the groups are shuffled (seeded), ordered by size
(largest first) and dealt, one at a time, to the fold holding the fewest examples of that stratum
(ties: fewest examples overall, then lowest fold index). With one image per group (liver lesions)
this makes per-class counts of any two folds differ by at most one.
"""
from __future__ import annotations

import numpy as np


def group_strata(groups: np.ndarray, targets: np.ndarray, multi_label: bool) -> dict[int, int]:
    """{group id: stratum}: most common class, or for multi-label the rarest positive finding (K = none)."""
    groups = np.asarray(groups)
    targets = np.asarray(targets)
    if multi_label:
        pos = targets > 0.5
        freq = pos.sum(0)
        k = targets.shape[1]
        per_example = np.where(pos.any(1), np.argmin(np.where(pos, freq[None, :], np.iinfo(np.int64).max), 1), k)
    else:
        per_example = targets.astype(np.int64)
    out = {}
    for g in np.unique(groups):
        values, counts = np.unique(per_example[groups == g], return_counts=True)
        out[int(g)] = int(values[np.argmax(counts)])  # ties: the smallest stratum id
    return out


def stratified_group_kfold(targets: np.ndarray, groups: np.ndarray | None, num_folds: int, seed: int, *,
                           multi_label: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(train index int64 [N - n_f], test index int64 [n_f])] for f in range(num_folds)."""
    targets = np.asarray(targets)
    n = len(targets)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) like the targets; got {groups.shape}.")
    num_groups = len(np.unique(groups))
    if not 2 <= num_folds <= num_groups:
        raise ValueError(f"num_folds={num_folds} must be in [2, {num_groups}] (the number of groups).")
    strata = group_strata(groups, targets, multi_label)
    uniq, sizes = np.unique(groups, return_counts=True)
    size_of = dict(zip(uniq.tolist(), sizes.tolist()))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x464F4C44]))  # "FOLD"
    fold_of: dict[int, int] = {}
    total = np.zeros(num_folds, np.int64)
    for stratum in sorted(set(strata.values())):
        members = np.asarray([g for g in uniq.tolist() if strata[g] == stratum])
        members = members[rng.permutation(len(members))]
        members = sorted(members.tolist(), key=lambda g: -size_of[g])  # stable: shuffled within a size
        in_stratum = np.zeros(num_folds, np.int64)
        for g in members:
            f = min(range(num_folds), key=lambda i: (in_stratum[i], total[i], i))
            fold_of[g] = f
            in_stratum[f] += size_of[g]
            total[f] += size_of[g]
    example_fold = np.asarray([fold_of[int(g)] for g in groups])
    return [(np.flatnonzero(example_fold != f), np.flatnonzero(example_fold == f)) for f in range(num_folds)]
