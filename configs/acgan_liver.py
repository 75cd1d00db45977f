"""ACGAN on the liver-lesion phantoms: class-conditional over cyst / metastasis / hemangioma.

Run:  jaxmedgan train --config configs/acgan_liver.py --workdir runs/acgan_liver
Expect: about 3-4 minutes on 2 CPU cores; one sample-grid row per class; `eval/aux_accuracy`
(the auxiliary head on held-out real ROIs) well above chance (1/3) by the end.
"""
from configs import dcgan_liver


def get_config():
    c = dcgan_liver.get_config()
    c.model.num_classes = 3
    return c
