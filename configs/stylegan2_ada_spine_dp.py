"""Conditional StyleGAN2-ADA on the spine phantoms with a differentially private discriminator.

Run:  jaxmedgan train --config configs/stylegan2_ada_spine_dp.py --workdir runs/sg2_spine_dp
What is private: D's loss on each real example (logistic loss + lazy R1, both through ADA) is
clipped to C = privacy.l2_clip per example and noised once per step with N(0, sigma^2 C^2) on a
Poisson batch (q = train.batch_size / N). On R1 steps (every loss.r1_interval) the R1 term is
folded into that same clipped loss, so each training step is one DP-SGD step and `dp/epsilon`
in metrics.jsonl is the RDP accountant's epsilon(q, sigma, steps, delta = 1/(10 N)). G, the fake
term and the EMA are post-processing. Minibatch-stddev is off (it mixes examples) and ADA's p is
fixed (the adaptive heuristic reads sign(D(real)), an unaccounted release).
Expect: the spine phantom set has 1000 training images (250 per class), so q = 16/1000,
delta = 1e-4, and epsilon grows with the step count; pick sigma for a target first, e.g.
`jaxmedgan privacy calibrate --target-epsilon 10 --delta 1e-4 --sampling-rate 0.016 --steps 300`,
or set --config.privacy.target_epsilon=10. Quality at small epsilon is far below the non-DP run
(DP hampers GAN training on small data, as the spine study reports).
"""
from configs import stylegan2_ada_spine


def get_config():
    c = stylegan2_ada_spine.get_config()
    c.privacy.enabled = True
    c.privacy.noise_multiplier = 1.0
    c.privacy.l2_clip = 1.0
    c.model.mbstd_group_size = 0  # minibatch-stddev mixes examples: refused under DP (1 = per example also OK)
    c.ada.mode = "fixed"  # the adaptive p heuristic is a data-dependent release: refused under DP
    c.ada.p = 0.2
    return c
