"""pix2pix label map -> T1 MRI on the MNI152 template with seeded synthetic tumours (64x64, 6 classes).

Run:  jaxmedgan train --config configs/pix2pix_brain.py --workdir runs/pix2pix_brain
Expect: about 10 minutes on 2 idle CPU cores for the default 1500 steps (19 minutes measured on
a shared, busy machine); `eval/l1` (mean |G(m) - x| on the held-out slices, [-1, 1] units) falls
to ~0.04 (measured: 0.041 at step 1500); grids in runs/pix2pix_brain/samples show rows
map | generated | real with tumour cores, rims and hypointense oedema where the map puts them. This file is also the base of the other pix2pix
configs (configs/dual_gan_retina.py's stage II, configs/segmentation_brain.py).
"""
import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.trainer = "pix2pix"  # jaxmedgan.trainers registry key

    c.mesh = common.mesh()

    c.data = ml_collections.ConfigDict()
    c.data.source = "mni-brain"  # mni-brain | brats-folder | nifti-folder | retina | fundus-folder
    c.data.image_dir = ""  # user folders (brats-folder, nifti-folder, fundus-folder)
    c.data.image_size = 64  # px
    c.data.channels = 1
    c.data.num_labels = 6  # one-hot map channels: bg, CSF, GM, WM, tumour core, oedema
    c.data.lesion_from = 4  # a map with any class >= this counts as "tumour" (labels.csv)
    c.data.variants = 4  # MNI: tumour versions per slice (+ the healthy slice)
    c.data.resolution_mm = 2  # MNI template resolution before resizing
    c.data.holdout_fraction = 0.2  # user folders: fraction of cases held out
    c.data.augment = False  # pairs must move together; the sources draw their own variants

    c.model = ml_collections.ConfigDict()
    c.model.g_features = 16  # C16-C32-C64-C128-... (pix2pix: 64)
    c.model.g_max_features = 128  # (pix2pix: 512)
    c.model.bottleneck_size = 1  # px; U-Net depth = log2(image_size / bottleneck_size)
    c.model.g_norm = "instance"  # per example: DP-compatible
    c.model.dropout = 0.5  # in the first num_dropout_blocks decoder blocks
    c.model.num_dropout_blocks = 3
    c.model.d_features = 16
    c.model.d_max_features = 128
    c.model.d_num_strided = 3  # 3 -> 70x70 px PatchGAN receptive field
    c.model.d_norm = "instance"
    # How the U-Net decoder doubles its resolution (models/layers.py UPSAMPLES): 'transpose' (pix2pix's
    # transposed convs) or a resize-conv without checkerboard artefacts: 'nearest' | 'fir'.
    c.model.g_upsample = "transpose"

    c.loss = ml_collections.ConfigDict()
    c.loss.l1_weight = 100.0  # lambda of the L1 term
    c.loss.kind = "nonsaturating"  # adversarial loss per patch: nonsaturating (logistic, pix2pix) | hinge

    # Data-efficient training (jaxmedgan/augment/policy.py): augmentation of every (map, image) pair D
    # sees, none | diffaug | ada (config.ada); geometric ops move map and image together, colour only the image.
    c.d_augment = common.d_augment("none")
    c.ada = common.ada()  # used by d_augment.kind='ada' only
    # G EMA for sampling: half-life ema.kimg (<= 0: batch * 10 / 32 kimg), ramped up to rampup x images seen.
    c.ema = common.ema()

    c.optim = ml_collections.ConfigDict()
    c.optim.g_lr = 2e-4
    c.optim.d_lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999

    c.train = common.train(1500, 8, log_every=50, eval_every=250)

    c.checkpoint = common.checkpoint(every=500, keep=2)

    # DP-SGD on the joint per-example D + G loss (trainers/pix2pix.py); the fields are every GAN's
    # (jaxmedgan/privacy/config.py). clip_fake is unused here (pix2pix's fake term is inside the
    # clipped loss); clip_method 'auto' is ghost clipping of the joint loss.
    c.privacy = common.privacy()

    c.samples = common.samples(every=500)
    return c
