"""Trainers, one module per model family, looked up by `config.trainer`."""
import importlib

TRAINERS = {
    "gan": "jaxmedgan.trainers.gan",
    "classifier": "jaxmedgan.trainers.classifier",
    "stylegan2": "jaxmedgan.trainers.stylegan2",
    "pix2pix": "jaxmedgan.trainers.pix2pix",
    "dual_gan": "jaxmedgan.trainers.dual_gan",
    "pggan": "jaxmedgan.trainers.pggan",
    "per_class": "jaxmedgan.trainers.per_class",  # one unconditional GAN per class (train.per_class=True)
}


def get(name: str):
    """Returns the trainer module registered as `name`."""
    if name not in TRAINERS:
        raise ValueError(f"Unknown config.trainer {name!r}; expected one of {sorted(TRAINERS)}.")
    return importlib.import_module(TRAINERS[name])
