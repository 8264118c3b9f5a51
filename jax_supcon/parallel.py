"""Device mesh and host -> device transfer.

One `("data",)` mesh over every device of every process. Host batches (this process's rows)
become global `jax.Array`s sharded over `data`; train state is replicated. With jit and these
shardings XLA inserts the collectives: BatchNorm and the loss see the global batch.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D data-parallel mesh over `devices` (default: all devices of all processes)."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def is_main_process() -> bool:
    """Process 0 of a multi-process run (the only one that writes files and prints)."""
    return jax.process_index() == 0


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    """One-line error, before anything is compiled, when the global batch cannot be split."""
    if batch_size <= 0 or batch_size % mesh.size:
        raise ValueError(f"{name}={batch_size} must be a positive multiple of the device count ({mesh.size})")


def data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of every field -> global arrays sharded over `data`."""
    sharding = data_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def prefetch_to_device(
    batches: Iterator[Mapping[str, np.ndarray]], mesh: Mesh, size: int = 2
) -> Iterator[dict[str, jax.Array]]:
    """Global arrays of the next `size` host batches, copied to the devices ahead of the step that
    uses them (transfers are asynchronous, so they overlap with the running step)."""
    queue: collections.deque = collections.deque()
    for batch in batches:
        queue.append(to_global(batch, mesh))
        if len(queue) > size:
            yield queue.popleft()
    yield from queue


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    if not value.lstrip("-").isdigit():
        raise ValueError(f"{name}={value!r} must be an integer")
    return int(value)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    before_start: Callable[[], None] | None = None,
) -> bool:
    """Start JAX's multi-controller runtime if this process is one of several; returns whether it did.

    Values come from the arguments (CLI flags), else from the environment a launcher sets
    (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`; `launch/local.sh` does),
    else, with `auto`, from JAX's cluster detection (SLURM, Cloud TPU VMs, Open MPI, Kubernetes).
    Nothing set and no `auto`: a single-process run. CPU collectives go over gloo.
    `before_start` runs just before the runtime starts (the CLI gives SIGTERM back there, for JAX's
    preemption notice to take it).
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    if not auto and all(value is None for value in given.values()):
        return False
    if not auto and None in given.values():
        missing = [key for key, value in given.items() if value is None]
        raise ValueError(
            f"a multi-process run needs coordinator_address, num_processes and process_id; missing {missing} "
            "(set them as flags or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or use "
            "--distributed_auto on SLURM and TPU VMs)"
        )
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes={num_processes} must be >= 1")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if before_start is not None:
        before_start()
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True
