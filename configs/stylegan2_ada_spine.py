"""Conditional StyleGAN2-ADA on the lateral spine radiograph phantoms (Schonfeld & Veeravagu).

Run:  jaxmedgan train --config configs/stylegan2_ada_spine.py --workdir runs/sg2_spine
Expect: about 1-1.5 s per step on 2 idle CPU cores at these defaults (32 px, batch 16, <= 64
channels; benchmarks/stylegan2_throughput.py measured 4.9 s/step = 304 s/kimg with ADA and lazy
regularisation on 2 cores shared with other jobs, load ~10), i.e. 300 steps in roughly 5-8
minutes plus 1-2 minutes of compilation. Sample grids in runs/sg2_spine/samples have one row per
class (normal, compression fracture, lytic lesion, sclerotic lesion); after a few hundred steps
they show a column of bright vertebral bodies on a darker soft-tissue background; the class
differences (wedged / lucent / dense body) need far longer training.
`ada_p` stays near 0 in such a short run (ADA moves p by at most 1 per 500 kimg).
Full-size StyleGAN2-ADA ('auto' at 256 px) for the study, on accelerators:
  --config.data.image_size=256 --config.model.channel_base=16384 --config.model.channel_max=512
  --config.model.latent_dim=512 --config.model.w_dim=512 --config.loss.r1_gamma=0.8192
  --config.train.batch_size=16 --config.train.steps=1500000  (25000 kimg)

Clinical term: point --config.clinical.checkpoint at a classifier trained on the phantoms at the
same image size (a `trainer='classifier'` workdir, e.g. `jaxmedgan train --config
configs/classifier_spine.py`; `models.trained_classifier.save` writes one from any state) and set --config.clinical.weight=0.1; eval/clinical_acc_* then
report its per-class accuracy on generated images.
"""
import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.trainer = "stylegan2"  # jaxmedgan.trainers registry key

    c.mesh = common.mesh()

    c.data = common.data("phantom-spine", 32, augment=False)  # ADA augments what D sees instead; keys: configs/common.py

    c.model = ml_collections.ConfigDict()
    c.model.latent_dim = 64  # z_dim
    c.model.w_dim = 64
    c.model.num_classes = 4  # c_dim: normal / compression fracture / lytic / sclerotic; 0 = unconditional
    c.model.mapping_layers = 2  # G mapping depth (StyleGAN2-ADA 'auto': 2)
    c.model.d_mapping_layers = 8  # D label-mapping depth (StyleGAN2-ADA keeps its default 8)
    c.model.channel_base = 2048  # channels at r px: min(channel_base // r, channel_max)
    c.model.channel_max = 64
    c.model.mbstd_group_size = 4  # 0: off, 1: per example (DP-compatible), >1 mixes examples
    c.model.mbstd_num_channels = 1
    c.model.conv_clamp = 0.0  # activation clamp (StyleGAN2-ADA: 256 with fp16); 0 = off

    c.loss = ml_collections.ConfigDict()
    c.loss.r1_gamma = 0.0002 * 32**2 / 16  # StyleGAN2-ADA 'auto': 0.0002 * res^2 / batch
    c.loss.r1_interval = 16  # lazy R1: every 16 steps, weighted x16
    c.loss.pl_weight = 2.0
    c.loss.pl_interval = 4  # lazy path-length reg: every 4 steps, weighted x4
    c.loss.pl_batch_shrink = 2
    c.loss.pl_decay = 0.01
    c.loss.style_mixing_prob = 0.9

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 0.0025  # both nets; rescaled by interval/(interval+1) for lazy regularisation
    c.optim.b1 = 0.0
    c.optim.b2 = 0.99
    c.optim.eps = 1e-8

    c.ema = ml_collections.ConfigDict()
    c.ema.kimg = -1.0  # G EMA half-life in kimg; -1: batch * 10 / 32 (StyleGAN2-ADA 'auto')
    c.ema.rampup = 0.05  # half-life <= rampup * images seen; 0 = no ramp-up

    # ADA (augment/controller.py): mode adaptive | fixed | none, p (initial or constant), target of
    # r_t = E[sign(D(real))], interval (steps between p updates), kimg (for p to move by 1), pipeline.
    c.ada = common.ada()

    c.clinical = ml_collections.ConfigDict()
    # A classifier-trainer workdir (`trainer='classifier'`, arch cnn or resnet, trained on the GAN's
    # classes in the same order, single-label); "" = no classifier.
    c.clinical.checkpoint = ""
    c.clinical.weight = 0.0  # lambda of lambda * CE(classifier(G(z, c)), c); 0 = plain StyleGAN2-ADA
    # True only if the classifier never saw the private training images (e.g. trained on a public
    # dataset): under DP a non-public classifier's term is refused (it bypasses the clipped D update).
    c.clinical.public_data = False
    c.clinical.eval_per_class = 32  # generated images per class for the classifier accuracy

    # per_class=True (with model.num_classes=0): one GAN per class (trainers/per_class.py);
    # fast_compile=True: XLA opt level 0, faster compiles, slower steps (tests, smoke runs).
    c.train = common.train(300, 16, log_every=25, eval_every=100, per_class=False, fast_compile=False)

    c.checkpoint = common.checkpoint(every=100, keep=3)

    # DP-SGD on D's real-data term (see configs/stylegan2_ada_spine_dp.py and trainers/stylegan2.py):
    # the project's shared privacy section, off here.
    c.privacy = common.privacy()

    c.samples = common.samples(every=100, truncation_psi=1.0)
    return c
