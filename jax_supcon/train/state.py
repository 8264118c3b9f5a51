"""The train state, its sharded init and restore, and the compiled (donated) train step.

The state is built with `jax.eval_shape` and initialised by `jax.jit(init, out_shardings=...)`
straight into its shardings; a step is compiled once with the state donated. Every compiled step
also reports whether the state it produced is finite, so a diverged state is never saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jax_supcon import parallel
from jax_supcon.checkpoint import Checkpointer

# Key of the per-step flag that `jit_train_step` adds to a step's metrics (never logged).
FINITE = "state_is_finite"


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; a plain pytree, so orbax saves it whole."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; the step's key is fold_in(rng, step)
    ema: Any = flax.struct.field(default_factory=dict)  # {"params", "batch_stats"} averages; {} when off
    queue: Any = flax.struct.field(default_factory=dict)  # {"features", "labels"}, see train/queue.py; {} when off
    momentum: Any = flax.struct.field(default_factory=dict)  # the momentum encoder's {"params", "batch_stats"}

    def variables(self, use_ema: bool = False) -> dict[str, Any]:
        """`{"params", "batch_stats"}` for `model.apply`: the trained ones or their EMA."""
        if use_ema:
            if not self.ema:
                raise ValueError("the EMA weights were asked for, but this run keeps none (set ema_decay > 0)")
            return dict(self.ema)
        return {"params": self.params, "batch_stats": self.batch_stats}


DROPOUT_STREAM = 1 << 20  # folded into the step's key: the model's randomness apart from the augmentation's


def dropout_rngs(state: TrainState, stream: int = 0) -> dict[str, jax.Array]:
    """`rngs` for a training `model.apply`: the `dropout` key (dropout, stochastic depth) of this
    step, a pure function of the run's key, the step and `stream` (one per forward pass of the
    step), independent of the key the augmentation draws from."""
    key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), DROPOUT_STREAM + stream)
    return {"dropout": key}


def init_state_fn(
    init_variables: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    seed: int,
    *,
    ema: bool = False,
    queue: Callable[[], Any] = dict,
    momentum: bool = False,
) -> Callable[[], TrainState]:
    """A function of no arguments building the initial state (to eval_shape and jit); with `ema`,
    the state also carries an exponential moving average of the variables, starting at them;
    `queue()` builds its empty feature queue (`train.queue.init_queue`; none by default); with
    `momentum`, a momentum encoder's copy of the variables (MoCo's key encoder), starting at them."""

    def init() -> TrainState:
        init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
        variables = init_variables(init_rng)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            rng=state_rng,
            ema={"params": params, "batch_stats": batch_stats} if ema else {},
            queue=queue(),
            momentum={"params": params, "batch_stats": batch_stats} if momentum else {},
        )

    return init


def ema_rate(decay: float, step: jax.Array) -> jax.Array:
    """The EMA decay at `step`: `min(decay, (1 + step) / (10 + step))`, TensorFlow's
    ExponentialMovingAverage warm-up, so short runs are not dominated by the initial weights."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def apply_gradients(
    state: TrainState,
    grads: Any,
    tx: optax.GradientTransformation,
    *,
    batch_stats: Any = None,
    ema_decay: float = 0.0,
) -> TrainState:
    """The optax update of `state` by `grads`, the step advanced, BatchNorm statistics replaced by
    `batch_stats` (when given) and the EMA, if the state keeps one, moved towards the new variables."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=state.batch_stats if batch_stats is None else batch_stats,
        opt_state=opt_state,
    )
    if state.ema:
        rate = ema_rate(ema_decay, state.step)
        new = new.replace(ema=optax.incremental_update(new.variables(), state.ema, 1.0 - rate))
    return new


def is_finite(state: TrainState, loss: jax.Array) -> jax.Array:
    """Whether `loss` and every floating parameter and BatchNorm statistic of `state` are finite:
    a gradient can turn the parameters to NaN or Inf while the loss of its own step was finite."""
    leaves = [leaf for leaf in jax.tree.leaves(state.variables()) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.isfinite(loss).all(), *(jnp.isfinite(leaf).all() for leaf in leaves)]))


def abstract_state(init: Callable[[], TrainState], mesh: Mesh) -> TrainState:
    """Shapes, dtypes and shardings of the state, without allocating it: the feature queue sharded
    over the data axis (each device holds a slice), everything else replicated."""
    replicated, sharded = parallel.replicated(mesh), parallel.data_sharding(mesh)

    def place(path, leaf):
        in_queue = bool(path) and getattr(path[0], "name", None) == "queue"
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharded if in_queue else replicated)

    return jax.tree_util.tree_map_with_path(place, jax.eval_shape(init))


def state_shardings(state: TrainState) -> Any:
    return jax.tree.map(lambda leaf: leaf.sharding, state)


def init_state(init: Callable[[], TrainState], target: TrainState) -> TrainState:
    """A fresh state, initialised on the devices straight into `target`'s shardings."""
    return jax.jit(init, out_shardings=state_shardings(target))()


def with_encoder(state: TrainState, encoder: dict[str, Any]) -> TrainState:
    """`state` with the encoder's `params` and `batch_stats` replaced everywhere they live (the
    trained copy, the EMA, the momentum encoder), each placed in the sharding of the array it
    replaces: device arrays (a restored stage-1 encoder) are resharded on the devices, host
    arrays (imported weights, the whole value on every process) are copied in."""

    def place(old, new):
        if isinstance(new, jax.Array):
            return jax.device_put(new.astype(old.dtype), old.sharding)
        new = np.asarray(new, old.dtype)
        return jax.make_array_from_callback(new.shape, old.sharding, lambda index: new[index])

    def replaced(variables: dict[str, Any]) -> dict[str, Any]:
        out = dict(variables)
        for key in ("params", "batch_stats"):
            if "encoder" in variables[key]:  # a ViT has no batch statistics
                out[key] = {**variables[key], "encoder": jax.tree.map(place, variables[key]["encoder"], encoder[key])}
        return out

    trained = replaced({"params": state.params, "batch_stats": state.batch_stats})
    changes = {"params": trained["params"], "batch_stats": trained["batch_stats"]}
    if state.ema:
        changes["ema"] = replaced(state.ema)
    if state.momentum:
        changes["momentum"] = replaced(state.momentum)
    return state.replace(**changes)


def restore_or_init(
    init: Callable[[], TrainState],
    target: TrainState,
    checkpointer: Checkpointer,
    *,
    total_steps: int | None = None,
    initial_encoder: Callable[[], dict[str, Any]] | None = None,
) -> TrainState:
    """The newest readable checkpoint in the workdir if there is one (resume; damaged newer ones
    are set aside, see `Checkpointer.restore_newest_readable`), else a fresh sharded init, whose
    encoder is `initial_encoder()` when given (imported weights: read before anything compiles,
    ignored on resume); `target` is `abstract_state(init, mesh)`. A run of `total_steps` shorter
    than its checkpoint is refused: it would report the state of a longer run as its own. A file
    system without room for one checkpoint is refused here too, before anything is compiled."""
    checkpointer.check_space(target)
    if checkpointer.latest_step() is None:
        if initial_encoder is None:
            return init_state(init, target)
        encoder = initial_encoder()
        return with_encoder(init_state(init, target), encoder)
    state, step = checkpointer.restore_newest_readable(target)
    if total_steps is not None and step > total_steps:
        raise ValueError(
            f"total_steps={total_steps} is below the step of the run's latest checkpoint ({step}); "
            f"set --config.total_steps={step} or more to continue it, or pick a new --workdir"
        )
    return state


def jit_train_step(step_fn: Callable, shardings: Any, mesh: Mesh, *, replicated_args: int = 0) -> Callable:
    """`step_fn(state, batch, *extra) -> (state, metrics)` compiled once: state replicated and
    donated, batch sharded over the data axis, `replicated_args` extra inputs (frozen variables)
    replicated. The metrics gain `FINITE` (see `is_finite`), which the step loop checks before
    it logs or saves anything."""

    def checked_step(state, batch, *extra):
        new_state, metrics = step_fn(state, batch, *extra)
        return new_state, metrics | {FINITE: is_finite(new_state, metrics["loss"])}

    replicated = parallel.replicated(mesh)
    return jax.jit(
        checked_step,
        in_shardings=(shardings, parallel.data_sharding(mesh)) + (replicated,) * replicated_args,
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
