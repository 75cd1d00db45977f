"""Downstream chest X-ray study on the chest radiograph phantoms (5 co-occurring findings): do
PGGAN samples labelled by latent class optimisation (LCO) help a multi-label classifier?

Run (32 px throughout: the classifier, the GAN and the study must share one image size):
  jaxmedgan train --config configs/classifier_chest.py --workdir runs/classifier_chest
  jaxmedgan train --config configs/pggan_chest.py --workdir runs/pggan_chest32 \\
      --config.data.image_size=32 --config.train.steps=STEPS  # STEPS = trainers.pggan.steps_for_schedule
  jaxmedgan sample --workdir runs/pggan_chest32 --classifier runs/classifier_chest --num 100 \\
      --labels "none;cardiomegaly;effusion;nodule;consolidation;pneumothorax" --out runs/lco_chest
  jaxmedgan evaluate downstream --config configs/downstream_chest.py --synthetic runs/lco_chest \\
      --out runs/downstream_chest
The synthetic source is the LCO archive's multi-hot `samples.npz` (a `labels.csv` folder works too);
`synthetic_per_class` counts images per requested label vector (here 6 vectors x <= 100 images),
and `synthetic_success_only` keeps only samples the LCO classifier agreed with. Caveat: that
classifier was trained on all real training phantoms, so (b)/(c) see labels derived from the test
folds (give DIR/fold0..fold2 for a leak-free study).
Experiments: (a) real / (b) real + synthetic / (c) synthetic only, 3-fold stratified CV on 600
phantom chests (rarest-finding strata) x 2 seeds: 14 classifier runs of 400 steps of batch 32.
The report (report.md/json) gives macro AUC, exact-match accuracy, per-finding sensitivity /
specificity / AUC with bootstrap intervals, a finding x experiment AUC table, and McNemar on
"every finding right". Real data: --config.data.source=chexpert --config.data.image_dir=ROOT
--config.data.uncertainty=u_ignore (unknown labels are skipped in training and metrics).
Cost: about 14 runs x 400 steps; a reduced run (5 runs x 220 steps) took 3 minutes on the shared,
heavily loaded 2-core CPU, so expect roughly 15-20 minutes for the full study there.
Measured (reduced: 300 real phantoms, 2 folds, seed 0, 220 steps, no GAN: the "synthetic" set was
300 other phantom chests, seed 777, an ideal generator with exact labels): macro AUC (a) real 0.752,
(b) real + synthetic 0.725, (c) synthetic only 0.729; per finding (a) cardiomegaly 0.987, effusion
0.681, nodule 0.681, consolidation 0.725, pneumothorax 0.687. At 220 steps the classifiers are
undertrained (classifier_chest reaches 0.903 with 800 steps on 2000 images), so these are a smoke
measure of the pipeline, not of a GAN; the PGGAN + LCO study above has not been run yet.
"""
import ml_collections

from configs import classifier_chest, downstream_liver


def get_config() -> ml_collections.ConfigDict:
    c = classifier_chest.get_config()
    c.data.num_train = 600  # the cross-validated real set (chest_phantoms.TRAIN_SEED); 2000 = 3x the time
    c.train.steps = 400  # per classifier run (classifier_chest: 800 for its own 2000 images)
    c.train.log_every = 100
    c.optim.warmup_steps = 40
    c.downstream = ml_collections.ConfigDict(downstream_liver.get_config().downstream.to_dict())
    c.downstream.experiments = ("real", "real+synthetic", "synthetic", "real+synthetic_dp")  # those with data run
    c.downstream.synthetic_per_class = 100  # multi-label: images per distinct label vector (LCO target)
    c.downstream.synthetic_success_only = False  # True: drop LCO samples the classifier disagreed with
    c.downstream.reference = ""  # no published sensitivity / specificity on these phantoms
    c.downstream.gan_config = ""  # multi-label: no class-conditional GAN; give --synthetic (LCO archives per fold)
    return c
