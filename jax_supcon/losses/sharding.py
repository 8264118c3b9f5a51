"""`sharded`: a feature loss over a batch sharded on a mesh axis, each device taking its anchor
rows against the all-gathered contrast set (`shard_map`), inputs checked on their global shapes."""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jax_supcon.losses.layout import (
    check_common,
    extra_samples,
)

# ----------------------------------------------------------------------------- sharding

CONTRAST_ARGUMENTS = ("contrast_features", "contrast_labels", "contrast_mask", "key_features")


def sharded(loss_fn: Callable[..., jax.Array], mesh: Mesh, axis_name: str = "data") -> Callable[..., jax.Array]:
    """`loss_fn(features, labels=None, *, mask=None, **kwargs)` on a batch sharded over
    `axis_name`: each device computes its anchor rows against the all-gathered contrast set.

    Inputs are validated on their global shapes before the `shard_map`; the result is the same
    scalar (and gradient) as the unsharded loss. Extra contrast samples (`contrast_features`,
    `contrast_labels`, `contrast_mask`) are sharded like the batch: each device holds a slice of
    the queue, gathered into the contrast set with the batch; `key_features` like the batch.
    """

    def wrapped(features, labels=None, *, mask=None, **kwargs):
        inputs = {"features": features, "labels": labels, "mask": mask}
        inputs |= {name: kwargs.pop(name, None) for name in CONTRAST_ARGUMENTS}
        inputs = {k: v for k, v in inputs.items() if v is not None}
        if mesh.shape[axis_name] == 1:  # nothing to shard: skip the all-gather
            return loss_fn(**inputs, **kwargs)
        extra = extra_samples(*(inputs.get(name) for name in CONTRAST_ARGUMENTS))
        check_common(features, labels, mask, kwargs.get("contrast_mode", "all"), kwargs.get("chunk_size"), extra)
        devices = mesh.shape[axis_name]
        batch = features.shape[0]
        if batch % devices:
            raise ValueError(f"batch={batch} must divide by the {devices} devices of axis {axis_name!r}")
        if extra is not None and extra.features is not None and extra.features.shape[0] % devices:
            size = extra.features.shape[0]
            raise ValueError(f"contrast_features has {size} rows; it must divide by the {devices} devices")
        specs = {"features": P(axis_name), "labels": P(axis_name), "mask": P(axis_name, None)}
        specs |= {name: P(axis_name) for name in CONTRAST_ARGUMENTS}  # each device: a slice of the queue
        specs = {k: v for k, v in specs.items() if k in inputs}

        def local(args):
            rest = {k: v for k, v in args.items() if k != "features"}
            return loss_fn(args["features"], axis_name=axis_name, **rest, **kwargs)

        return jax.shard_map(local, mesh=mesh, in_specs=(specs,), out_specs=P())(inputs)

    return wrapped
