"""Segmentation experiment on MNI152 slices: U-Net segmenters trained on real, real + synthetic
and synthetic-only label-map/T1 pairs, scored by per-label Dice (95 % bootstrap CIs over slices)
on held-out real slices (jaxmedgan/studies/segmentation.py).

Run:  jaxmedgan evaluate segmentation --config configs/segmentation_brain.py --workdir runs/seg_brain
      (trains the pix2pix generator into runs/seg_brain/pix2pix first, from configs/pix2pix_brain.py,
      unless --config.generator_workdir=runs/pix2pix_brain points at a trained one)
Expect: the generator (1500 steps) then 3 segmenters x 600 steps: about 20 minutes on 2 idle CPU
cores (47 minutes measured on a shared, busy 2-core machine); runs/seg_brain/segmentation.md and
.json. Measured with these defaults (Dice [95 % CI], 90 held-out pairs from 18 slices):

| training data | n   | CSF               | GM                | WM                | core              | oedema            |
| real          | 190 | 0.17 [0.13, 0.21] | 0.76 [0.73, 0.78] | 0.74 [0.65, 0.78] | 0.59 [0.52, 0.66] | 0.48 [0.42, 0.55] |
| real+synth    | 590 | 0.30 [0.21, 0.39] | 0.75 [0.70, 0.79] | 0.77 [0.68, 0.80] | 0.61 [0.55, 0.68] | 0.53 [0.46, 0.61] |
| synth         | 400 | 0.30 [0.23, 0.37] | 0.80 [0.78, 0.81] | 0.77 [0.69, 0.81] | 0.68 [0.62, 0.74] | 0.57 [0.50, 0.63] |

The segmenters are short-trained (600 steps, loss still falling) and one template brain is a
small test set, so the CIs overlap; the 400 synthetic pairs (fresh tumours) are at least as
useful as the 190 real ones here. Thin CSF at 64 px is the hardest class.
"""
import ml_collections

from configs import pix2pix_brain


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.generator = pix2pix_brain.get_config()  # trained into WORKDIR/pix2pix unless generator_workdir
    c.generator_workdir = ""
    c.data = c.generator.data  # the real pairs (train + held-out) and the generator's data

    c.synthetic = ml_collections.ConfigDict()
    c.synthetic.num = 400  # synthetic pairs (fresh tumours on training-slice tissue maps)
    c.synthetic.seed = 7

    c.segmenter = ml_collections.ConfigDict()
    c.segmenter.features = 16  # U-Net widths C16-C32-... as the generator
    c.segmenter.max_features = 128
    c.segmenter.norm = "instance"
    c.segmenter.lr = 1e-3
    c.segmenter.steps = 600  # same for every arm
    c.segmenter.batch_size = 16
    c.segmenter.dice_weight = 1.0  # loss = CE + w (1 - soft Dice)
    c.segmenter.flip = True

    c.arms = ("real", "real+synth", "synth")
    c.eval = ml_collections.ConfigDict()
    c.eval.labels = (1, 2, 3, 4, 5)  # CSF, GM, WM, tumour core, oedema (background not reported)
    c.eval.bootstrap_samples = 1000
    c.eval.alpha = 0.05  # 95 % intervals
    return c
