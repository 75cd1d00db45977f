"""Multi-process start-up: `jax.distributed.initialize` from flags, environment or cluster.

One process per host (TPU VM worker, SLURM task, or a local process with simulated CPU devices).
Sources, first match wins:
  * explicit arguments (the `train` flags --coordinator / --num-processes / --process-id);
  * JAXMEDGAN_COORDINATOR_ADDRESS, JAXMEDGAN_NUM_PROCESSES, JAXMEDGAN_PROCESS_ID;
  * JAXMEDGAN_DISTRIBUTED=auto: JAX's cluster detection (TPU pods, SLURM, Open MPI, ...).
Nothing set: a single process, no initialisation.
"""
from __future__ import annotations

import os

import jax

ENV_ADDRESS = "JAXMEDGAN_COORDINATOR_ADDRESS"
ENV_NUM = "JAXMEDGAN_NUM_PROCESSES"
ENV_ID = "JAXMEDGAN_PROCESS_ID"
ENV_AUTO = "JAXMEDGAN_DISTRIBUTED"


def settings(coordinator: str | None = None, num_processes: int | None = None,
             process_id: int | None = None, environ=None) -> dict | None:
    """The `jax.distributed.initialize` keyword arguments to use, or None for a single process."""
    env = os.environ if environ is None else environ
    coordinator = coordinator or env.get(ENV_ADDRESS)
    num = num_processes if num_processes is not None else env.get(ENV_NUM)
    pid = process_id if process_id is not None else env.get(ENV_ID)
    if coordinator or num is not None or pid is not None:
        missing = [n for n, v in (("coordinator address", coordinator), ("number of processes", num),
                                  ("process id", pid)) if v in (None, "")]
        if missing:
            raise ValueError(f"Multi-process launch is missing the {', '.join(missing)}: set all of "
                             f"--coordinator/--num-processes/--process-id (or {ENV_ADDRESS}, {ENV_NUM}, "
                             f"{ENV_ID}).")
        num, pid = int(num), int(pid)
        if not 0 <= pid < num:
            raise ValueError(f"process id {pid} must be in [0, {num}).")
        return {"coordinator_address": coordinator, "num_processes": num, "process_id": pid}
    if env.get(ENV_AUTO, "").lower() in ("1", "auto", "true"):
        return {}  # let JAX detect the cluster (TPU pod metadata, SLURM variables, ...)
    return None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Initialises jax.distributed when a multi-process launch is configured; True if it did."""
    kwargs = settings(coordinator, num_processes, process_id)
    if kwargs is None:
        return False
    # Must run before any JAX computation. CPU devices of different processes then talk through
    # JAX's default CPU collectives (gloo over TCP). Generous heartbeat / shutdown timeouts: on a
    # shared host (CI's parallel test workers) a CPU-starved process is slow, not dead; JAX's 300 s
    # shutdown barrier failed a 2-process CI run whose second process arrived late.
    jax.distributed.initialize(**kwargs, heartbeat_timeout_seconds=300, shutdown_timeout_seconds=900)
    return True
