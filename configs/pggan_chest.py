"""Unconditional progressive GAN (PGGAN) on the chest radiograph phantoms, 4 -> 64 px.

Run:  jaxmedgan train --config configs/pggan_chest.py --workdir runs/pggan_chest
      jaxmedgan sample --workdir runs/pggan_chest --num 64 --out runs/pggan_chest/samples_64
Plan: 5 levels (4, 8, 16, 32, 64 px); level 0 stabilises for schedule.stable_kimg, each later
level fades in over schedule.fade_kimg then stabilises for stable_kimg (alpha, level and kimg are
logged; metrics 'level', 'alpha', 'kimg'). `trainers.pggan.steps_for_schedule(config)` gives the
steps to reach the end of the 64 px stabilisation: 1125 at these defaults, which is train.steps.
Measured (jitted `level_step` at these defaults, 1 CPU device, 2 cores shared with other jobs at
load ~11): 4 px 0.016 s/step, 16 px 0.52 s/step, 64 px 3.1 s/step (batch 16), 20-60 s to compile
each level; so the full 1125 steps take roughly 25 minutes there (estimate from those rates: most
of it the 250 steps at 64 px), less on an idle machine. A 4-step 16 px CLI smoke run on
phantom-chest (dataset build included) took 95 s wall under the same load.
Paper-scale settings (Karras et al. 2018, on accelerators): --config.schedule.fade_kimg=600
--config.schedule.stable_kimg=600 --config.model.channel_base=8192 --config.model.channel_max=512
--config.model.latent_dim=512 and batch sizes 16 up to 128 px, fewer above.

Small data sets: --config.d_augment.kind=diffaug (or ada) augments what D sees (trainers/pggan.py).

`tiny()` is the 16 px preset the tests train through two levels.
"""
import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.trainer = "pggan"  # jaxmedgan.trainers registry key

    c.mesh = common.mesh()

    c.data = common.data("phantom-chest", 64, augment=False)  # PGGAN trains on the data as is; keys: configs/common.py
    c.data.image_size = 64  # px, final resolution: a power of two >= 16 (phantom-chest's minimum)

    c.model = ml_collections.ConfigDict()
    c.model.latent_dim = 128
    c.model.num_classes = 0  # unconditional (labels come later from a classifier, see lco)
    c.model.channel_base = 1024  # features at r px: min(channel_base // r, channel_max)
    c.model.channel_max = 64
    c.model.mbstd_group_size = 4  # 0: off; 1: per example; >1 mixes examples (not under DP)
    c.model.mbstd_num_channels = 1

    c.loss = ml_collections.ConfigDict()
    c.loss.gp_weight = 10.0  # WGAN-GP lambda
    # Lazy penalty: every k-th D step with weight x k (StyleGAN2's lazy R1 applied to WGAN-GP); under
    # DP the other steps' clipped loss holds no input gradient, so ghost clipping covers them.
    c.loss.gp_interval = 1
    # Where the penalty is taken: 'interpolates' (WGAN-GP, as published) | 'fake' (at G's images, where
    # G puts its mass; under DP a public term outside the clipped loss, so ghost clipping covers every
    # D step: losses/pggan.py).
    c.loss.gp_on = "interpolates"
    c.loss.drift_weight = 0.001  # epsilon_drift * D(real)^2

    # Data-efficient training (jaxmedgan/augment/policy.py): augmentation of every image D sees, at
    # the level's resolution: none | diffaug (DiffAugment's fixed policy) | ada (config.ada: p adaptive
    # on sign(D(real)), or fixed). The gradient penalty is taken between augmented reals and fakes.
    c.d_augment = common.d_augment("none")
    c.ada = common.ada()  # used by d_augment.kind='ada' only

    c.optim = ml_collections.ConfigDict()
    c.optim.g_lr = 1e-3  # PGGAN: Adam lr 0.001, betas (0, 0.99), eps 1e-8
    c.optim.d_lr = 1e-3
    c.optim.b1 = 0.0
    c.optim.b2 = 0.99
    c.optim.eps = 1e-8
    c.optim.reset_on_new_level = True  # fresh Adam moments when a level starts (reset_opt_for_new_lod)

    c.schedule = ml_collections.ConfigDict()
    c.schedule.fade_kimg = 2.0  # images (thousands) over which alpha rises 0 -> 1 at each new level
    c.schedule.stable_kimg = 2.0  # images (thousands) at alpha = 1 before the next level

    c.ema = ml_collections.ConfigDict()
    # G EMA decay per step; 0 = samples from the raw G. 0.99 = a 69-step (1.1 kimg) half-life, about
    # half a phase here. PGGAN's 10 kimg half-life (0.999 at batch 16) suits its 12 M-image runs, not
    # this 14-18 kimg schedule: measured at 32 px, the 0.999 EMA G still mixed in the initial weights of
    # the newest layers and sampled saturated white images at the end while the raw G drew chests.
    c.ema.beta = 0.99

    # steps = trainers.pggan.steps_for_schedule at these defaults; batch_size: what the pipeline
    # delivers per step (the largest per-level batch), batch_sizes per resolution (missing =
    # batch_size); eval_every: no evaluator yet (metrics: jaxmedgan evaluate); per_class=True: one
    # unconditional GAN per class (trainers/per_class.py); fast_compile=True: XLA opt level 0,
    # faster compiles, slower steps (tests, smoke runs).
    batch_sizes = ml_collections.ConfigDict({"r4": 16, "r8": 16, "r16": 16, "r32": 16, "r64": 16})
    c.train = common.train(1125, 16, log_every=20, eval_every=1000000, per_class=False, fast_compile=False,
                           batch_sizes=batch_sizes)

    # Every 125 steps = one phase (2 kimg / batch 16); all 10 phase ends kept (FID-domain ranks
    # them: python -m jaxmedgan.studies.fid_validation --rank-workdir).
    c.checkpoint = common.checkpoint(every=125, keep=10)

    c.privacy = common.privacy()  # DP-SGD on D: see configs/pggan_chest_dp.py

    c.samples = common.samples(every=125)  # one sample grid per phase end

    # `jaxmedgan sample --labels ...`: latent class optimisation (jaxmedgan/lco.py) via a classifier.
    c.lco = ml_collections.ConfigDict()
    c.lco.classifier_workdir = ""  # multi-label classifier workdir (configs/classifier_chest.py)
    c.lco.steps = 100  # Adam steps on the latents
    c.lco.lr = 0.1
    c.lco.prior_weight = 1.0  # shell prior (||z||^2/d - 1)^2 keeps z on the Gaussian's typical shell
    c.lco.prior = "shell"  # shell | gaussian
    c.lco.confidence = 0.75  # a finding's BCE stops once the classifier is this sure (1.0 = plain BCE)
    return c


def tiny() -> ml_collections.ConfigDict:
    """16 px, 3 levels, a few dozen images per phase: the preset the tests train."""
    c = get_config()
    c.data.image_size = 16
    c.model.latent_dim = 16
    c.model.channel_base = 64
    c.model.channel_max = 16
    c.model.mbstd_group_size = 4
    c.schedule.fade_kimg = 0.016
    c.schedule.stable_kimg = 0.016
    c.train.batch_size = 8
    c.train.batch_sizes = ml_collections.ConfigDict({"r4": 8, "r8": 8, "r16": 4})
    c.train.steps = 6
    c.train.log_every = 2
    c.train.quiet = True
    c.train.fast_compile = True
    c.checkpoint.every = 3
    c.checkpoint.async_save = False
    c.samples.every = 1000
    c.samples.per_row = 2
    return c
