"""ACGAN on the liver-lesion phantoms: class-conditional over cyst / metastasis / hemangioma.

Run:  jaxmedgan train --config configs/acgan_liver.py --workdir runs/acgan_liver
Expect: a few minutes on 2 CPU cores (5 min 23 s measured for the default 1000 steps while other
jobs shared the cores; 100-190 img/s); one sample-grid row per class; `eval/aux_accuracy` (the
auxiliary head on 90 held-out real ROIs) 0.74 / 0.86 / 0.90 / 0.94 at steps 250 / 500 / 750 / 1000
(chance 1/3). Those figures predate model.mbstd_group_size = 4 (measured with 0); the 200-step check
(tests/trainers/gan_train_test.py) still passes with 4. `eval/diversity_ratio` (generated / held-out
intra-class pixel diversity, 1 = as varied as the data) is logged with each evaluation.

Conditioning (docs/results/diversity_liver.md, one seed, 1000 steps): aux + minibatch-stddev (this
default) gave the best FID-domain (1.50) with a diversity ratio of 0.53 (0.50 without the stddev
layer); projection (model.cond=projection) 0.65 at FID 2.83; one DCGAN per class
(configs/dcgan_liver.py with --config.train.per_class=True) 0.74 at FID 1.62 and the best recall.
The default stays aux until the downstream effect of each option is measured.
"""
from configs import dcgan_liver


def get_config():
    c = dcgan_liver.get_config()
    c.model.num_classes = 3
    # Minibatch-stddev, groups of 4, against within-class collapse (the train batch, and D's eval
    # batches, must be multiples of 4); DP configs set 0 (it mixes examples).
    c.model.mbstd_group_size = 4
    return c
