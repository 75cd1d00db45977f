"""Device mesh and sharding rules: the only module that knows about devices.

The mesh has a `data` axis (batch parallelism) and a `model` axis (size 1 today: parameters are
replicated). `config.mesh.data = -1` takes every device of every process.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MODEL_AXIS = "model"

# (regex on the "/"-joined parameter path, PartitionSpec). First match wins; the default replicates.
DEFAULT_PARAM_RULES: tuple[tuple[str, P], ...] = ((r".*", P()),)


def make_mesh(mesh_config: Any = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a (data, model) mesh from `config.mesh` (fields `data`, `model`; -1 = the rest)."""
    devices = list(jax.devices() if devices is None else devices)
    data = int(getattr(mesh_config, "data", -1)) if mesh_config is not None else -1
    model = int(getattr(mesh_config, "model", 1)) if mesh_config is not None else 1
    if model < 1:
        raise ValueError(f"config.mesh.model must be >= 1, got {model}.")
    if data == -1:
        if len(devices) % model:
            raise ValueError(f"config.mesh.model={model} does not divide the {len(devices)} devices.")
        data = len(devices) // model
    if data * model > len(devices):
        raise ValueError(f"config.mesh asks for data={data} x model={model} devices but only "
                         f"{len(devices)} are available.")
    grid = np.asarray(devices[: data * model]).reshape(data, model)
    return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def tree_shardings(tree: Any, mesh: Mesh, rules: Sequence[tuple[str, P]] = DEFAULT_PARAM_RULES) -> Any:
    """Maps every leaf of `tree` (params, optimiser state, ...) to a NamedSharding by `rules`."""

    def rule_for(path, leaf):
        name = _path_str(path)
        for pattern, spec in rules:
            if re.fullmatch(pattern, name):
                ndim = getattr(leaf, "ndim", 0)
                return NamedSharding(mesh, spec if len(spec) <= ndim else P())
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(rule_for, tree)


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """This process's share of the global batch; checks it divides over processes and devices."""
    n_data = mesh.shape[DATA_AXIS]
    if global_batch_size % n_data:
        raise ValueError(f"Global batch size {global_batch_size} is not divisible by the "
                         f"{n_data} devices of the mesh's data axis.")
    return global_batch_size // jax.process_count()


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Turns this process's host batch (numpy, leading axis local) into global sharded arrays."""
    sharding = batch_sharding(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
