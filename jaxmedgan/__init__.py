"""jaxmedgan: JAX/Flax GANs for medical image synthesis."""

__version__ = "0.1.0"
