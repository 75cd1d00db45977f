"""Spine lesion-type classifier on the lateral spine radiograph phantoms (4 classes).

normal / compression_fracture / lytic_lesion / sclerotic_lesion at 32 px, the StyleGAN2 spine
preset's size, so this workdir can serve the clinical loss term
(`--config.clinical.checkpoint=runs/classifier_spine` in configs/stylegan2_ada_spine.py).

Run:  jaxmedgan train --config configs/classifier_spine.py --workdir runs/classifier_spine
Abnormal vs normal (the spine study's downstream task): add
      --config.data.relabel="normal:normal;abnormal:compression_fracture,lytic_lesion,sclerotic_lesion"
      --config.model.num_classes=2
"""
import ml_collections

from configs import classifier_liver


def get_config() -> ml_collections.ConfigDict:
    c = classifier_liver.get_config()
    c.data.source = "phantom-spine"  # TFDS: 250 train / 100 test images per class (spine_phantoms.py)
    c.data.image_size = 32  # px; spine phantoms take any power of two >= 16
    c.data.flip = False  # lateral films: anterior is on the left
    c.data.rotate90 = False  # the spine runs vertically
    c.data.max_translate_px = 2
    c.model.num_classes = 4
    c.model.stem_stride = 1  # 32 px: keep the full resolution in the stem
    return c
