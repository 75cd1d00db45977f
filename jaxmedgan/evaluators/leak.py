"""Augmentation-leak statistics: how often generated images carry a transform, vs the real images.

Pure numpy/scipy on the predictions of a transform classifier (studies/leak.py trains it and draws
the images; this module never sees a model). Inputs, for transform names T = (identity, t_1, ...):

  fake_pred     int [N]    predicted transform index of each generated image
  heldout_pred  int [K, M] row k: predictions on the M held-out real images after transform T[k]
                           (row 0, identity, is the held-out reals as they are)

Per transform t (`leak_table`):
  rate_fake    share of generated images classified t, Wilson 95 % interval (`wilson`);
  rate_real    share of untransformed held-out reals classified t (the classifier's false-positive
               rate on real data -- the real images' own rate), Wilson interval;
  difference   rate_fake - rate_real with Newcombe's hybrid-score interval (Newcombe 1998, method
               10: Wilson intervals of both rates combined; `newcombe_difference`), and a one-sided
               Fisher exact p-value (H1: the generated rate is higher);
  sensitivity  share of held-out reals transformed by t that the classifier calls t; Youden's
               J = sensitivity - rate_real says whether t is identifiable on these data at all
               (a flip of a rotation-invariant phantom is not: J ~ 0);
  prevalence   the Rogan-Gladen estimate of the share of generated images that truly carry t,
               (rate_fake - rate_real) / J, clipped to [0, 1] (meaningful where J is large);
  leak         True when t is identifiable (J >= min_j), the lower end of the difference's
               interval at the Bonferroni-adjusted level 1 - alpha / m (m = transforms tested) is
               above 0, and the excess is at least `min_excess` -- a significant excess that is
               also large enough to matter.

`ada_p_assessment` flags runs whose ADA p reached the range where Karras et al. 2020 ("Training
Generative Adversarial Networks with Limited Data", arXiv:2006.06676, Sec. 2-3, Figs. 3-4) saw
augmentations start to leak: above about 0.6-0.8 for most transforms, with p below ~0.8 safe in
practice for their 'bgc' pipeline (numbers from the paper, not re-measured here).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

P_LEAK_ONSET = 0.6  # Karras et al. 2020: some transforms start to leak above p ~ 0.6 ...
P_LEAK_LIKELY = 0.8  # ... and most above p ~ 0.8 (below ~0.8 leaks were unlikely in practice)
MIN_J = 0.3  # Youden's J below this: the transform is not identifiable on these data, no flag
MIN_EXCESS = 0.05  # a flagged excess must also be at least 5 percentage points


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (no continuity correction) of a proportion k / n; (nan, nan) if n = 0."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"Wilson interval needs 0 <= k <= n, got k={k}, n={n}.")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(k1: int, n1: int, k2: int, n2: int,
                        confidence: float = 0.95) -> tuple[float, float, float]:
    """(p1 - p2, lower, upper): Newcombe's hybrid-score interval of a difference of independent
    proportions p1 = k1 / n1, p2 = k2 / n2 (method 10 of Newcombe 1998)."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, confidence)
    l2, u2 = wilson(k2, n2, confidence)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact p-value of H1: the proportion k1 / n1 is greater than k2 / n2."""
    if n1 <= 0 or n2 <= 0:
        return math.nan
    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater")[1])


def _check_predictions(names: Sequence[str], fake_pred: np.ndarray, heldout_pred: np.ndarray) -> None:
    k = len(names)
    if k < 2 or names[0] != "identity":
        raise ValueError("Transform names must start with 'identity' and hold at least one transform; got "
                         f"{list(names)}.")
    if fake_pred.ndim != 1 or heldout_pred.ndim != 2 or heldout_pred.shape[0] != k:
        raise ValueError(f"Expected fake predictions int [N] and held-out predictions int [K={k}, M]; got "
                         f"{fake_pred.shape} and {heldout_pred.shape}.")
    for what, a in (("fake", fake_pred), ("held-out", heldout_pred)):
        if a.size and (a.min() < 0 or a.max() >= k):
            raise ValueError(f"{what} predictions must be transform indices in [0, {k}); got range "
                             f"[{a.min()}, {a.max()}].")


def leak_table(names: Sequence[str], fake_pred: np.ndarray, heldout_pred: np.ndarray, *,
               sources: Mapping[str, str] | None = None, confidence: float = 0.95, min_j: float = MIN_J,
               min_excess: float = MIN_EXCESS) -> list[dict[str, Any]]:
    """One row per transform (identity first, never flagged) as the module docstring defines.

    names: transform names, names[0] = 'identity'; fake_pred int [N]; heldout_pred int [K, M];
    sources: transform -> where the training used it ('' or absent: a control, not used)."""
    fake_pred, heldout_pred = np.asarray(fake_pred), np.asarray(heldout_pred)
    _check_predictions(names, fake_pred, heldout_pred)
    sources = sources or {}
    n, m = len(fake_pred), heldout_pred.shape[1]
    tested = len(names) - 1
    adjusted = 1 - (1 - confidence) / max(tested, 1)  # Bonferroni over the transforms tested
    rows = []
    for k, name in enumerate(names):
        k_fake, k_real = int(np.sum(fake_pred == k)), int(np.sum(heldout_pred[0] == k))
        sens = float(np.mean(heldout_pred[k] == k)) if m else math.nan
        rate_fake, rate_real = (k_fake / n if n else math.nan), (k_real / m if m else math.nan)
        d, lo, hi = newcombe_difference(k_fake, n, k_real, m, confidence)
        _, lo_adj, _ = newcombe_difference(k_fake, n, k_real, m, adjusted)
        j = sens - rate_real
        identifiable = bool(k > 0 and j >= min_j)
        prevalence = float(np.clip(d / j, 0.0, 1.0)) if identifiable else math.nan
        rows.append({
            "transform": name, "source": sources.get(name, ""),
            "fake_count": k_fake, "num_fake": n, "rate_fake": rate_fake,
            "rate_fake_ci": list(wilson(k_fake, n, confidence)),
            "real_count": k_real, "num_real": m, "rate_real": rate_real,
            "rate_real_ci": list(wilson(k_real, m, confidence)),
            "difference": d, "difference_ci": [lo, hi], "difference_lower_adjusted": lo_adj,
            "p_value": fisher_greater(k_fake, n, k_real, m),
            "sensitivity": sens, "youden_j": j, "identifiable": identifiable,
            "prevalence_fake": prevalence,
            "leak": bool(identifiable and lo_adj > 0 and d >= min_excess),
        })
    return rows


def ada_p_assessment(p_final: float | None, p_max: float | None) -> dict[str, Any]:
    """Where the run's ADA p stands against Karras et al. 2020's leak range (module docstring).

    p_final: p at the evaluated checkpoint; p_max: the highest p logged during training (None:
    unknown). level: 'none' (no ADA p), 'below' (< P_LEAK_ONSET), 'onset' (< P_LEAK_LIKELY), 'likely'."""
    values = [p for p in (p_final, p_max) if p is not None and not math.isnan(p)]
    if not values:
        return {"p_final": None, "p_max": None, "level": "none", "flag": False,
                "note": "the run has no ADA p (no ADA in front of D)"}
    peak = max(values)
    level = "below" if peak < P_LEAK_ONSET else ("onset" if peak < P_LEAK_LIKELY else "likely")
    note = {"below": f"p stayed below {P_LEAK_ONSET}, where Karras et al. 2020 saw no leaks",
            "onset": f"p reached {peak:.2f}: inside the {P_LEAK_ONSET}-{P_LEAK_LIKELY} range where Karras et al. 2020 "
                     "saw some transforms start to leak",
            "likely": f"p reached {peak:.2f}: above {P_LEAK_LIKELY}, where Karras et al. 2020 saw most transforms leak"}
    return {"p_final": p_final, "p_max": p_max, "level": level, "flag": level != "below", "note": note[level]}


CONTROL_EXCESS = "excess of a transform the training never applied (not an augmentation leak)"


def summarize(rows: Sequence[Mapping[str, Any]], ada: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict over a leak table and the ADA assessment: leaking transforms (flagged and used by
    the training), control excesses (flagged but never applied: the generator makes images that
    look transformed -- mirrored anatomy, say -- or the classifier misreads them; not a leak), and
    unidentifiable transforms."""
    tested = [r for r in rows if r["transform"] != "identity"]
    leaks = [r["transform"] for r in tested if r["leak"] and r["source"]]
    excess = [r["transform"] for r in tested if r["leak"] and not r["source"]]
    verdict = ("leak" if leaks else CONTROL_EXCESS if excess
               else "at risk (ADA p)" if ada.get("flag") else "no leak detected")
    return {"leaking_transforms": leaks, "control_excess": excess,
            "not_identifiable": [r["transform"] for r in tested if not r["identifiable"]],
            "ada_p_flag": bool(ada.get("flag", False)), "verdict": verdict}


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ci(ci: Sequence[float]) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def markdown(report: Mapping[str, Any]) -> str:
    """A markdown page of a leak report (`studies.leak.run` writes it beside the JSON)."""
    s, ada = report["summary"], report["ada"]
    lines = [f"# Augmentation leak report: {report.get('workdir', '')}", "",
             f"Checkpoint step {report.get('step')}; {report.get('num_fake')} generated vs "
             f"{report.get('num_heldout')} held-out real images ({report.get('heldout_source', '')}); transform "
             f"classifier trained on {report.get('num_train')} real training images, held-out accuracy "
             f"{_pct(report.get('classifier_accuracy'))} %.", "",
             f"**Verdict: {s['verdict']}**" + (f" -- leaking: {', '.join(s['leaking_transforms'])}"
                                               if s["leaking_transforms"] else "")
             + (f" -- more frequent in generated than in real images, though never applied in training: "
                f"{', '.join(s['control_excess'])} (inspect the samples: a fidelity failure such as mirrored "
                "anatomy, or the transform classifier misreading off-distribution images)"
                if s.get("control_excess") else ""), "",
             f"ADA p: {ada['note']}.", "",
             "Rates in %, 95 % Wilson intervals; difference = generated - real with Newcombe's interval; "
             "J = Youden's J of the transform classifier on held-out reals (below "
             f"{report.get('settings', {}).get('min_j', MIN_J)}: not identifiable, never flagged).", "",
             "| transform | used by | generated | real | difference | p (Fisher) | J | leak |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["transforms"]:
        if r["transform"] == "identity":
            continue
        lines.append(f"| {r['transform']} | {r['source'] or 'control'} | {_pct(r['rate_fake'])} "
                     f"{_ci(r['rate_fake_ci'])} | {_pct(r['rate_real'])} {_ci(r['rate_real_ci'])} | "
                     f"{_pct(r['difference'])} {_ci(r['difference_ci'])} | {r['p_value']:.2g} | "
                     f"{r['youden_j']:.2f}{'' if r['identifiable'] else ' (n/i)'} | "
                     f"{('**LEAK**' if r['source'] else '**EXCESS** (never applied)') if r['leak'] else 'no'} |")
    if s["not_identifiable"]:
        lines += ["", "Not identifiable on these data (the real images carry no canonical orientation/appearance "
                  f"for them, so no rate can be read): {', '.join(s['not_identifiable'])}."]
    return "\n".join(lines) + "\n"
