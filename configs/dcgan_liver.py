"""Unconditional DCGAN on the embedded liver-lesion ROI phantoms (64x64, 1 channel).

Run:  jaxmedgan train --config configs/dcgan_liver.py --workdir runs/dcgan_liver
Expect: a few minutes on 2 CPU cores for the default 1000 steps; sample grids in
runs/dcgan_liver/samples showing round/irregular lesions on textured parenchyma after a few
hundred steps.
This file is also the base every liver-lesion GAN config overrides.
"""
import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.trainer = "gan"  # jaxmedgan.trainers registry key

    c.mesh = common.mesh()

    c.data = common.data("phantom-liver", 64)  # shared keys: configs/common.py

    c.model = ml_collections.ConfigDict()
    c.model.latent_dim = 100
    c.model.num_classes = 0  # 0: DCGAN; 3: ACGAN over cyst / metastasis / hemangioma
    c.model.g_features = 16  # G channels at the last hidden block (doubling towards 4x4)
    c.model.d_features = 16  # D channels at the first block (doubling towards 4x4)
    c.model.max_features = 128
    c.model.g_norm = "batch"  # G never sees real data, so BatchNorm there is DP-safe
    c.model.d_norm = "layer"  # per-example norm: keeps D's loss per example (DP-compatible)
    c.model.d_dropout = 0.0
    # How D sees the class when num_classes > 0: 'aux' (ACGAN auxiliary classifier), 'projection'
    # (Miyato & Koyama 2018: <class embedding, D features> added to D's logit), 'tac' (TAC-GAN: aux
    # head + a twin head on generated images), 'proj_aux', 'd2dce' (ReACGAN: embedding vs class proxies,
    # refused under DP). 'aux' until the others are measured on the liver data.
    c.model.cond = "aux"
    # >0: minibatch-stddev in D over groups of this size (fights mode collapse; groups > 1 mix
    # examples: refused under DP). Off in this base: configs/dual_gan_retina.py's DCGAN stage I
    # inherits it (its vessel masks were measured without); configs/acgan_liver.py turns it on.
    c.model.mbstd_group_size = 0
    # How G doubles its resolution (models/layers.py UPSAMPLES): 'transpose' (DCGAN's transposed
    # convs) or a resize-conv without checkerboard artefacts: 'nearest' | 'fir'.
    c.model.g_upsample = "transpose"

    c.loss = ml_collections.ConfigDict()
    c.loss.kind = "nonsaturating"  # adversarial loss: nonsaturating (logistic) | hinge
    c.loss.aux_weight = 1.0  # weight of the class cross-entropy terms (aux head; tac: aux and twin heads)
    c.loss.r1_gamma = 0.0  # >0: R1 penalty gamma/2 ||grad_x D(real)||^2 (per example; DP-safe)
    # >0: MSGAN mode-seeking lambda (Mao et al. 2019): G's loss += lambda / (mean|G(z1,y) - G(z2,y)| /
    # mean|z1 - z2| + 1e-5) on a second generated batch; touches G only (DP-safe).
    c.loss.mode_seeking = 0.0
    # model.cond = 'd2dce' (ReACGAN's data-to-data cross-entropy, weight aux_weight): the temperature T and
    # the positive margin m_p (negatives' margin 1 - m_p); ReACGAN's CIFAR10 values.
    c.loss.d2dce_temperature = 0.5
    c.loss.d2dce_margin = 0.98

    # Data-efficient training (jaxmedgan/augment/policy.py): augmentation of every image D sees,
    # none | diffaug (DiffAugment's fixed policy) | ada (config.ada: adaptive or fixed p).
    c.d_augment = common.d_augment("none")
    c.ada = common.ada()
    # G EMA for sampling: half-life ema.kimg (<= 0: batch * 10 / 32 kimg), ramped up to rampup x images seen.
    c.ema = common.ema()

    c.optim = ml_collections.ConfigDict()
    c.optim.g_lr = 2e-4
    c.optim.d_lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999

    # per_class=True (model.num_classes=0): one GAN per class (jaxmedgan/trainers/per_class.py)
    c.train = common.train(1000, 32, log_every=50, eval_every=250, per_class=False)

    c.eval = ml_collections.ConfigDict()
    c.eval.quality_every = 0  # >0: FID-domain (quality/fid_domain) every this many steps
    c.eval.quality_classifier = ""  # classifier workdir for the domain features (configs/classifier_liver.py)
    c.eval.quality_num = 256  # generated vs held-out real images per measurement
    c.eval.quality_metrics = "fid"  # any of fid,kid,pr
    # Class-conditional models: also per class (FID / PR of class k, share the classifier labels k),
    # logged as quality/*_class{k}; which class fails shows while training runs.
    c.eval.quality_per_class = True

    c.checkpoint = common.checkpoint(every=250, keep=3)

    # DP-SGD on the discriminator (see configs/acgan_liver_dp.py); fields: jaxmedgan/privacy/config.py.
    c.privacy = common.privacy()

    c.samples = common.samples(every=250)
    return c
