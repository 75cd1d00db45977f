"""Augmentation-leak statistics (evaluators/leak.py) against statsmodels / scipy and hand-built cases."""
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from jaxmedgan.evaluators import leak


@pytest.mark.parametrize("k,n,conf", [(0, 20, 0.95), (7, 50, 0.95), (50, 50, 0.95), (13, 40, 0.9), (1, 1, 0.99)])
def test_wilson_matches_statsmodels(k, n, conf):
    np.testing.assert_allclose(leak.wilson(k, n, conf), proportion_confint(k, n, alpha=1 - conf, method="wilson"),
                               atol=1e-12)


@pytest.mark.parametrize("k1,n1,k2,n2", [(30, 100, 10, 80), (0, 50, 0, 60), (45, 50, 3, 90), (5, 200, 20, 100)])
def test_newcombe_difference_matches_statsmodels(k1, n1, k2, n2):
    d, lo, hi = leak.newcombe_difference(k1, n1, k2, n2)
    assert d == pytest.approx(k1 / n1 - k2 / n2)
    ref = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff")
    np.testing.assert_allclose((lo, hi), ref, atol=1e-12)


def test_fisher_is_one_sided_towards_more_generated():
    assert leak.fisher_greater(30, 100, 10, 100) == pytest.approx(
        stats.fisher_exact([[30, 70], [10, 90]], alternative="greater")[1])
    assert leak.fisher_greater(30, 100, 10, 100) < 0.01 < 0.99 < leak.fisher_greater(10, 100, 30, 100)
    assert math.isnan(leak.fisher_greater(1, 0, 1, 2)) and math.isnan(leak.wilson(0, 0)[0])


def _case():
    """identity / hflip (unidentifiable: the classifier guesses) / invert (perfectly identifiable).
    Held-out reals: 100; generated: 200, 60 % of them inverted."""
    rng = np.random.default_rng(0)
    m = 100
    held = np.stack([rng.choice([0, 1], m),  # untransformed reals: identity or hflip at random
                     rng.choice([0, 1], m),  # flipped reals: the same guess
                     np.full(m, 2)])  # inverted reals: always recognised
    held[0, :3] = 2  # the classifier calls 3 % of the real images inverted
    fake = np.concatenate([np.full(120, 2), rng.choice([0, 1], 80)])
    return ("identity", "hflip", "invert"), fake, held


def test_leak_table_flags_an_identifiable_excess_only():
    names, fake, held = _case()
    rows = {r["transform"]: r for r in leak.leak_table(names, fake, held, sources={"invert": "d_augment x"})}
    inv, flip = rows["invert"], rows["hflip"]
    assert (inv["fake_count"], inv["num_fake"], inv["real_count"], inv["num_real"]) == (120, 200, 3, 100)
    assert inv["rate_fake"] == 0.6 and inv["rate_real"] == 0.03 and inv["sensitivity"] == 1.0
    assert inv["youden_j"] == pytest.approx(0.97) and inv["identifiable"] and inv["leak"]
    assert inv["prevalence_fake"] == pytest.approx((0.6 - 0.03) / 0.97)
    np.testing.assert_allclose(inv["rate_fake_ci"], proportion_confint(120, 200, method="wilson"))
    np.testing.assert_allclose(inv["difference_ci"], confint_proportions_2indep(120, 200, 3, 100, method="newcomb"))
    assert inv["source"] == "d_augment x" and flip["source"] == ""
    # The flip is a coin toss for this classifier: J ~ 0, never flagged, no prevalence.
    assert not flip["identifiable"] and not flip["leak"] and math.isnan(flip["prevalence_fake"])
    assert not rows["identity"]["leak"]
    # Bonferroni: with 2 transforms the flag uses the 97.5 % interval's lower end.
    lo_adj = leak.newcombe_difference(120, 200, 3, 100, 0.975)[1]
    assert inv["difference_lower_adjusted"] == pytest.approx(lo_adj)
    assert lo_adj < inv["difference_ci"][0]


def test_leak_needs_a_large_enough_significant_excess():
    names, _, held = _case()
    same = held[0]  # generated images classified exactly like the real ones: nothing to flag
    assert not any(r["leak"] for r in leak.leak_table(names, same, held))
    slight = np.concatenate([np.full(7, 2), np.zeros(93, int)])  # 7 % vs 3 %: below min_excess or CI
    assert not leak.leak_table(names, slight, held)[2]["leak"]
    big = np.concatenate([np.full(5000, 2), np.zeros(95000, int)])  # 5 % vs 3 %, significant but small
    assert not leak.leak_table(names, big, held, min_excess=0.05)[2]["leak"]


def test_leak_table_refuses_bad_inputs():
    names, fake, held = _case()
    with pytest.raises(ValueError, match="start with 'identity'"):
        leak.leak_table(("hflip", "identity", "invert"), fake, held)
    with pytest.raises(ValueError, match=r"K=3, M"):
        leak.leak_table(names, fake, held[:2])
    with pytest.raises(ValueError, match=r"indices in \[0, 3\)"):
        leak.leak_table(names, fake + 1, held)


@pytest.mark.parametrize("p_final,p_max,level,flag", [
    (None, None, "none", False), (0.2, 0.3, "below", False), (0.5, 0.7, "onset", True),
    (0.85, None, "likely", True), (0.1, 0.95, "likely", True)])
def test_ada_p_assessment_uses_the_papers_range(p_final, p_max, level, flag):
    out = leak.ada_p_assessment(p_final, p_max)
    assert (out["level"], out["flag"]) == (level, flag)
    assert leak.P_LEAK_ONSET == 0.6 and leak.P_LEAK_LIKELY == 0.8
    if level != "none":
        assert "Karras et al. 2020" in out["note"]


def test_summary_and_markdown_name_the_leak():
    names, fake, held = _case()
    rows = leak.leak_table(names, fake, held, sources={"invert": "ADA xflip"})
    ada = leak.ada_p_assessment(None, None)
    summary = leak.summarize(rows, ada)
    assert summary == {"leaking_transforms": ["invert"], "control_excess": [], "not_identifiable": ["hflip"],
                       "ada_p_flag": False, "verdict": "leak"}
    assert leak.summarize(rows[:2], leak.ada_p_assessment(0.9, None))["verdict"] == "at risk (ADA p)"
    text = leak.markdown({"workdir": "W", "step": 5, "num_fake": 200, "num_heldout": 100, "num_train": 10,
                          "classifier_accuracy": 0.7, "transforms": rows, "ada": ada, "summary": summary})
    assert "**Verdict: leak** -- leaking: invert" in text
    assert "| invert | ADA xflip | 60.0 [" in text and "**LEAK**" in text and "hflip" in text.split("identifiable")[-1]


def test_an_excess_of_a_transform_never_applied_is_not_called_a_leak():
    """The same excess on a control (training never inverted anything): flagged as an excess to
    inspect (mirrored anatomy, a misreading classifier), not as an augmentation leak."""
    names, fake, held = _case()
    rows = leak.leak_table(names, fake, held)
    summary = leak.summarize(rows, leak.ada_p_assessment(None, None))
    assert summary["leaking_transforms"] == [] and summary["control_excess"] == ["invert"]
    assert summary["verdict"] == leak.CONTROL_EXCESS
    text = leak.markdown({"workdir": "W", "step": 5, "num_fake": 200, "num_heldout": 100, "num_train": 10,
                          "classifier_accuracy": 0.7, "transforms": rows, "ada": leak.ada_p_assessment(None, None),
                          "summary": summary})
    assert "| invert | control | 60.0 [" in text and "**EXCESS** (never applied)" in text and "**LEAK**" not in text
    assert "never applied in training: invert" in text
