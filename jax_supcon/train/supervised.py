"""The cross-entropy baseline: the same encoder and a linear classifier trained end to end on one
augmented view per image (label smoothing optional); reports test top-1 and top-5."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jax_supcon import losses, models, optim
from jax_supcon.checkpoint import Checkpointer
from jax_supcon.data import augment
from jax_supcon.train import common


def supervised_step(state, batch, *, model, tx, schedule, config):
    """One cross-entropy step of encoder + classifier on an augmented view of each image."""
    rng = jax.random.fold_in(state.rng, state.step)
    images = augment.augment_views(rng, batch["image"], config.augment, 1)[:, 0]

    def loss_fn(params):
        logits, updated = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True, mutable=["batch_stats"]
        )
        loss = losses.cross_entropy_loss(logits, batch["label"], label_smoothing=config.label_smoothing)
        return loss, (logits, updated["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = common.apply_gradients(state, grads, tx, batch_stats=batch_stats, ema_decay=config.ema_decay)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    metrics = {"loss": loss, "train_top1": accuracy, "learning_rate": schedule(state.step)}
    return new_state, metrics


def correct_counts(variables, batch, *, model, config) -> jax.Array:
    """[top-1 hits, top-5 hits] among the unpadded examples of an evaluation batch."""
    logits = model.apply(variables, augment.preprocess_eval(batch["image"], config.augment), train=False)
    return common.top_k_hits(logits, batch["label"], batch["mask"])


def evaluate(variables, source, mesh, *, model, config) -> dict[str, float]:
    """Top-1 and top-5 accuracy over the whole `source` (padding excluded)."""
    count = jax.jit(functools.partial(correct_counts, model=model, config=config))
    top1, top5 = common.sum_over_split(lambda batch: count(variables, batch), source, mesh, config.eval_batch_size)
    return {"test_top1": int(top1) / source.num_examples, "test_top5": int(top5) / source.num_examples}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None) -> dict:
    """Run (or resume) the cross-entropy baseline in `workdir`; returns the summary with test top-1/top-5."""
    mesh, train_source, test_source, total_steps, warmup_steps = common.load_training_data(config, mesh)
    model = models.SupervisedModel(
        encoder=models.create_encoder(config.model), classifier=models.LinearClassifier(train_source.num_classes)
    )
    tx, schedule = optim.create_optimizer(config.optimizer, total_steps, warmup_steps, config.batch_size)
    size = config.data.image_size
    init = common.init_state_fn(
        lambda rng: model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32), train=False),
        tx,
        config.seed,
        ema=config.ema_decay > 0,
    )
    target = common.abstract_state(init, mesh)  # model errors surface here, before the workdir is touched
    common.prepare_workdir(workdir, config)
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
    state = common.restore_or_init(init, target, checkpointer)
    common.write_parameter_overview(workdir, "supervised", state.params)
    shardings = common.state_shardings(state)
    train_step = common.jit_train_step(
        functools.partial(supervised_step, model=model, tx=tx, schedule=schedule, config=config), shardings, mesh
    )
    batches = common.training_batches(train_source, config, state, mesh)
    logger = common.MetricLogger(workdir, "supervised")
    start = time.perf_counter()
    try:
        state, last = common.run_steps(
            config=config,
            state=state,
            train_step=train_step,
            batches=batches,
            total_steps=total_steps,
            checkpointer=checkpointer,
            logger=logger,
        )
        variables = state.variables(config.eval_with_ema)
        accuracy = evaluate(variables, test_source, mesh, model=model, config=config)
        logger.write(total_steps, accuracy)
    finally:
        checkpointer.close()
        logger.close()
    summary = {
        "job": "supervised",
        "steps": total_steps,
        "final_loss": last.get("loss"),
        **accuracy,
        "test_examples": test_source.num_examples,
        "train_seconds": time.perf_counter() - start,
        "devices": mesh.size,
    }
    return common.finish_run(workdir, config, summary, logger.records(), [])
