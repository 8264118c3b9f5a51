"""Device mesh and host -> device transfer.

One `("data",)` mesh over every device of every process. Host batches (this process's rows)
become global `jax.Array`s sharded over `data`; train state is replicated. With jit and these
shardings XLA inserts the collectives: BatchNorm and the loss see the global batch.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D data-parallel mesh over `devices` (default: all devices of all processes)."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


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
