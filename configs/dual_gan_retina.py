"""Dual GAN on the real fundus photograph shipped with scikit-image (skimage.data.retina()).

Stage I: an unconditional GAN generating 32x32 vessel masks -- StyleGAN2-ADA (default,
`configs/dual_gan_retina.py:stylegan2`) or the DCGAN (`configs/dual_gan_retina.py:gan`),
recorded as `stage1_family`; stage II: pix2pix mask -> RGB fundus crop. Vessel masks of the real
image come from the documented Frangi pipeline (jaxmedgan/data/retina.py); training crops (64 px
of the 512 px image, resized to 32, rotated/flipped, seeded) come from the left 70 % of the
image, held-out crops from the right 30 %.

Run:    jaxmedgan train --config configs/dual_gan_retina.py --workdir runs/dual_gan_retina
Sample: jaxmedgan sample --workdir runs/dual_gan_retina --num 16 --out runs/dual_gan_samples
Figure + stage-I statistics: python docs/figures/make_retina_figure.py --workdir W --out F.png
Expect: ~20 min for stage I (6000 steps at ~5 steps/s on 2 CPU cores shared with one other job,
plus compilation) and ~5 min for stage II (1500 steps).

Measured (docs/figures/make_retina_figure.py, 256 generated masks at the 'zero' threshold, vs real
masks: a training sample | the held-out ones). Stage II: held-out L1 0.143; its vessel pixels are
darker than the background by 0.059 on held-out real masks (green channel, [-1, 1] units; the real
crops: 0.092).
                        StyleGAN2 6000 steps  StyleGAN2 1000  DCGAN 1500  real train  real held-out
  vessel fraction       0.101                 0.021           0.170       0.113       0.051
  pairwise IoU          0.078                 0.124           0.930       0.053       0.024
  pairwise L1           0.170                 0.033           0.012       0.200       0.097
  8 px shift IoU        0.073                 0.062           0.791       0.067       0.015
  IoU with nearest
    training mask       0.195                 --              --          --          0.160
  stage-II vessel gap   0.121                 0.037           0.086       --          0.059
StyleGAN2 (32 channels, batch 16, 'auto' R1 gamma 0.0128, mbstd 4, adaptive ADA at 100 kimg per
unit p, path-length reg) draws curved, branching vessel segments at 96 kimg (6000 steps) with the
training masks' vessel fraction and diversity, close to but not copies of training masks; at 16
kimg it drew sparse specks. The DCGAN collapses to one tiled blob per 4x4 base cell (D dropout,
a 4x weaker D learning rate, layer-norm G, thicker crops, softer masks, R1 and R1 +
minibatch-stddev did not fix it within 1000-1500 steps); it is kept as the `:gan` option.
`mask_threshold='fraction'` keeps a briefly trained stage I usable for tests.
"""
import ml_collections

from configs import common, dcgan_liver, pix2pix_brain, stylegan2_ada_spine
from jaxmedgan.data import retina
from jaxmedgan.trainers.dual_gan import STAGE1_FAMILIES  # trainer registry keys a stage I may use

DEFAULT_STAGE1_FAMILY = "stylegan2"


def stage1_gan() -> ml_collections.ConfigDict:
    """Stage I as the project's unconditional DCGAN (trainers/gan.py)."""
    s1 = dcgan_liver.get_config()
    s1.train.steps = 1500
    s1.train.batch_size = 32
    s1.model.g_features = 16
    s1.model.d_features = 16
    s1.checkpoint.every = 500
    s1.samples.every = 500
    return s1


def stage1_stylegan2() -> ml_collections.ConfigDict:
    """Stage I as unconditional StyleGAN2-ADA (trainers/stylegan2.py), 32 channels, 'auto' R1."""
    s1 = stylegan2_ada_spine.get_config()
    s1.data.source = "dual_gan"  # unused: trainers/dual_gan.py feeds the mask arrays
    s1.model.num_classes = 0
    s1.model.channel_base = 1024  # 32 channels at every resolution up to 32 px
    s1.model.channel_max = 32
    s1.model.latent_dim = 64
    s1.model.w_dim = 64
    s1.model.mbstd_group_size = 4
    s1.loss.r1_gamma = -1.0  # -1: StyleGAN2-ADA 'auto', 0.0002 * res^2 / batch (set by trainers/dual_gan.py)
    s1.ada.mode = "adaptive"
    s1.ada.kimg = 100.0  # p may move by 1 per 100 kimg (500 in long runs): lets p react in a short run
    s1.train.steps = 6000  # 96 kimg: vessel segments (at 1000 steps / 16 kimg: specks)
    s1.train.batch_size = 16
    s1.checkpoint.every = 1000
    s1.samples.every = 1000
    return s1


def get_config(stage1_family: str = DEFAULT_STAGE1_FAMILY) -> ml_collections.ConfigDict:
    """`stage1_family` ('gan' | 'stylegan2') picks stage I: `--config configs/dual_gan_retina.py:stylegan2`."""
    stage1_family = stage1_family or DEFAULT_STAGE1_FAMILY
    if stage1_family not in STAGE1_FAMILIES:
        raise ValueError(f"configs/dual_gan_retina.py: stage-I family must be one of {STAGE1_FAMILIES} "
                         f"(--config configs/dual_gan_retina.py:FAMILY), got {stage1_family!r}.")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.trainer = "dual_gan"

    c.mesh = common.mesh()

    c.data = ml_collections.ConfigDict()
    c.data.image_dir = ""  # fundus-folder source: DRIVE / STARE / HRF-style folder
    c.data.image_size = 32  # px of both stages
    c.data.holdout_fraction = 0.2  # fundus-folder: fraction of images held out
    c.data.augment = False
    c.data.mask_blur_px = 0.7  # stage I trains on Gaussian-softened masks (see trainers/dual_gan.py)
    retina.retina_data_config(c)
    c.mask_threshold = "zero"  # binarise stage-I output: 'zero' (> 0) | 'fraction' (training vessel fraction)

    # Stage I: unconditional GAN on vessel masks. Its trainer key (c.stage1.trainer) must equal
    # stage1_family; a workdir's config.json without stage1_family is a DCGAN one.
    c.stage1_family = stage1_family
    c.stage1 = stage1_gan() if stage1_family == "gan" else stage1_stylegan2()

    s2 = pix2pix_brain.get_config()  # stage II: pix2pix mask -> fundus; data comes from c.data
    s2.train.steps = 1500
    s2.train.batch_size = 16
    s2.model.g_features = 16
    s2.model.d_features = 16
    s2.model.d_num_strided = 2  # 34 px patches on 32 px crops
    s2.checkpoint.every = 500
    s2.samples.every = 500
    c.stage2 = s2
    return c
