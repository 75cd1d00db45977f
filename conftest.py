"""Test-wide setup: 8 forced CPU devices so sharding code runs as on a small mesh.

Must run before jax is imported anywhere, hence a root-level conftest.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep test output readable and avoid TF/absl noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
