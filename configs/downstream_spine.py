"""Downstream spine study (Schonfeld & Veeravagu design) on the spine radiograph phantoms: does a
conditional StyleGAN2-ADA's synthetic data help an abnormal-vs-normal classifier, and can one be
trained without access to real images (experiment (c), synthetic only)?

Run:  jaxmedgan train --config configs/stylegan2_ada_spine.py --workdir runs/sg2_spine
      jaxmedgan evaluate downstream --config configs/downstream_spine.py \
          --synthetic runs/sg2_spine --out runs/downstream_spine [--synthetic-dp runs/sg2_spine_dp]
The GAN is conditioned on the 4 lesion types; its samples are relabelled with the real set
(normal vs abnormal = fracture, lytic, sclerotic) before training. 3-fold CV x 2 seeds on the
1000 training phantoms, 300 classifier steps per run.
"""
import ml_collections

from configs import classifier_spine, downstream_liver


def get_config() -> ml_collections.ConfigDict:
    c = classifier_spine.get_config()
    c.data.relabel = "normal:normal;abnormal:compression_fracture,lytic_lesion,sclerotic_lesion"
    c.model.num_classes = 2
    c.train.steps = 300
    c.train.log_every = 100
    c.optim.warmup_steps = 30
    c.downstream = ml_collections.ConfigDict(downstream_liver.get_config().downstream.to_dict())
    c.downstream.reference = ""  # the spine study reports no comparable sensitivity / specificity
    # No fold GANs by default: a StyleGAN2 per (seed, fold) needs an accelerator. For a leak-free
    # study give --gan-config configs/stylegan2_ada_spine.py with gan_overrides matching this image size.
    c.downstream.gan_config = ""
    return c
