"""Downstream liver-lesion study (Frid-Adar et al. 2018 design) on the phantoms: does an ACGAN's
synthetic data help a lesion classifier (cyst / metastasis / hemangioma)?

Run (leak-free, the default: one ACGAN per (seed, fold), trained on that fold's training lesions only):
      jaxmedgan evaluate downstream --config configs/downstream_liver.py --out runs/downstream_liver \
          [--gan-steps 1000] [--real-fractions 0.1,0.25,0.5,1.0]
Learning curve with the sample-selection arms (e) filtered by (a)'s classifier and (f) class-balanced:
      ... --real-fractions 0.1,0.25,0.5,1.0 --config.downstream.experiments="('real','real+synthetic',\
          'synthetic','real+synthetic_filtered','real+synthetic_balanced')"
One GAN you trained yourself (it saw every lesion, so the test folds leak into (b)-(f); the report warns):
      jaxmedgan train --config configs/acgan_liver.py --workdir runs/acgan_liver
      jaxmedgan evaluate downstream --config configs/downstream_liver.py \
          --synthetic runs/acgan_liver --out runs/downstream_liver [--synthetic-dp runs/acgan_liver_dp]
Expect: (a) real / (b) real + synthetic / (c) synthetic only, 3-fold CV on the 182 phantom lesions x 2
seeds: 14 classifier runs of 300 steps plus 6 fold GANs (1000 steps, about 2.5 minutes each on 2
idle CPU cores; OUT/gans/..., reused on a rerun); each extra real fraction repeats all of it.
Measured (README "Downstream evaluation", docs/results/downstream_liver_learning_curve.md; leak-free,
1 seed, fractions 0.1-1.0, 56 minutes): at 100 % of the real lesions (a) 90.2 % balanced accuracy,
(b) -3.0 [-7.1, +0.6] points, (c) -12.7; at 10 % (14 lesions) (b) +4.3 [-1.6, +10.3]. The report
sets our numbers beside the study's 78.6 / 88.4 % (classic) and 85.7 / 92.4 % (classic + synthetic)
sensitivity / specificity.
"""
import ml_collections

from configs import classifier_liver


def get_config() -> ml_collections.ConfigDict:
    c = classifier_liver.get_config()
    c.train.steps = 300
    c.train.log_every = 100
    c.optim.warmup_steps = 30

    c.downstream = ml_collections.ConfigDict()
    # Those with data run; also real+synthetic_filtered (e), real+synthetic_balanced (f).
    c.downstream.experiments = ("real", "real+synthetic", "synthetic", "real+synthetic_dp")
    c.downstream.num_folds = 3  # stratified, lesion-level (patient-level with a `group` column)
    c.downstream.seeds = (0, 1)  # repeated CV: new folds, init and data order per seed
    c.downstream.synthetic_per_class = 100  # synthetic images per class added in (b) / (d), used in (c)
    c.downstream.synthetic_seed = 0  # which synthetic images (and GAN latents) are drawn
    c.downstream.bootstrap_samples = 1000  # group resamples for the 95 % intervals
    c.downstream.bootstrap_seed = 0
    c.downstream.reference = "frid-adar-2018"  # published numbers shown beside ours; "" = none
    # Without --synthetic: one GAN of this config per (fraction, seed, fold), trained on that fold's
    # real training images only (leak-free); "" = no GAN (then only (a) runs without --synthetic).
    c.downstream.gan_config = "configs/acgan_liver.py"
    c.downstream.gan_overrides = ()  # "key=value" for the GAN config, e.g. ("train.steps=200",)
    c.downstream.real_fractions = (1.0,)  # learning curve: shares of each training fold (nested, stratified)
    c.downstream.filter_threshold = 0.5  # real+synthetic_filtered: min p(requested class) under (a)'s classifier
    return c
