"""Conditional StyleGAN2-ADA on the liver-lesion phantoms (cyst / metastasis / hemangioma).

StyleGAN2-ADA was made for small data (Karras et al. 2020: a few thousand images); the liver set
has 182 lesions. This is configs/stylegan2_ada_spine.py on the liver data at its 64 px, with
three classes and an ADA p that can move within a CPU-length run.

Run:  jaxmedgan train --config configs/stylegan2_ada_liver.py --workdir runs/sg2_liver
Expect: a few seconds per step on 2 CPU cores (64 px, batch 16, <= 64 channels), so the default
300 steps take roughly 10-20 minutes plus compilation; sample grids with one row per class. Like
the spine config, it is a starting point for accelerators: class differences need far longer
training (`--config.train.steps`), which a GPU or TPU makes affordable.
Clinical term: --config.clinical.checkpoint=runs/classifier_liver --config.clinical.weight=0.1
(a classifier trained by configs/classifier_liver.py on the same classes at 64 px).
"""
import ml_collections

from configs import common, stylegan2_ada_spine


def get_config() -> ml_collections.ConfigDict:
    c = stylegan2_ada_spine.get_config()
    c.data = common.data("phantom-liver", 64, augment=False)  # ADA augments what D sees instead
    c.model.num_classes = 3  # cyst / metastasis / hemangioma
    c.loss.r1_gamma = 0.0002 * 64**2 / 16  # StyleGAN2-ADA 'auto': 0.0002 * res^2 / batch
    # ADA moves p by batch * interval / (kimg * 1000) per update: 100 kimg (not 500) lets p react
    # within a few thousand steps on 182 lesions, where D overfits fastest.
    c.ada.kimg = 100.0
    return c
