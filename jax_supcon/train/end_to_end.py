"""Encoder + linear classifier trained end to end with cross-entropy: what the cross-entropy
baseline (`supervised`, random or imported initial weights) and fine-tuning (`finetune`, a
stage-1 or imported encoder) both run; they differ only in where the encoder starts and how fast
it moves."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jax_supcon import losses, models, optim
from jax_supcon.checkpoint import Checkpointer
from jax_supcon.data import augment
from jax_supcon.evaluate import classification, embeddings, validation
from jax_supcon.train import inputs, loop
from jax_supcon.train import workdir as run_dir
from jax_supcon.train.state import (
    abstract_state,
    apply_gradients,
    dropout_rngs,
    init_state_fn,
    jit_train_step,
    restore_or_init,
    state_shardings,
)


def supervised_step(state, batch, *, model, tx, schedule, config):
    """One cross-entropy step of encoder + classifier on an augmented view of each image."""
    rng = jax.random.fold_in(state.rng, state.step)
    images = augment.augment_views(rng, batch["image"], config.augment, 1)[:, 0]

    def loss_fn(params):
        logits, updated = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs=dropout_rngs(state),
        )
        loss = losses.cross_entropy_loss(logits, batch["label"], label_smoothing=config.label_smoothing)
        return loss, (logits, updated.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = apply_gradients(state, grads, tx, batch_stats=batch_stats, ema_decay=config.ema_decay)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    metrics = {"loss": loss, "train_top1": accuracy, "learning_rate": schedule(state.step)}
    return new_state, metrics


def train_end_to_end(
    config: ml_collections.ConfigDict,
    workdir: str,
    data: inputs.TrainingData,
    *,
    job: str,
    initial_encoder: Callable[[Any], Callable[[], dict] | None],
    encoder_lr_multiplier: float = 1.0,
    before_start: Callable[[], None] = lambda: None,
) -> dict:
    """Run (or resume) encoder + linear classifier trained end to end with cross-entropy in
    `workdir` on `data` (loaded by `inputs.load_training_data`); returns the summary with
    validation and test top-1/top-5 (`val_top1`, `test_top1`: the training classes' images), and
    with held-out classes the retrieval metrics of the encoder's features on theirs
    (`val/encoder/...` on the validation side, `test/encoder/...` on the test split's).
    `initial_encoder(target)` gives the starting encoder's loader (None: random init), the
    encoder's updates are scaled by `encoder_lr_multiplier`, and `before_start()` runs once the
    config is recorded (a stage-2 run writes its pin there)."""
    mesh, train_source, total_steps = data.mesh, data.train, data.total_steps
    if config.optimizer.layer_decay != 1.0 and not models.is_vit(config.model):
        raise ValueError(
            f"optimizer.layer_decay={config.optimizer.layer_decay} needs a ViT encoder "
            f"(model.name vit_*), not {config.model.name!r}; leave it at 1.0"
        )
    model = models.SupervisedModel(
        encoder=models.create_encoder(config.model), classifier=models.LinearClassifier(train_source.num_classes)
    )
    tx, schedule = optim.create_optimizer(config.optimizer, total_steps, data.warmup_steps, config.batch_size)
    if encoder_lr_multiplier != 1.0:
        tx = optax.chain(tx, optim.scale_subtree("encoder", encoder_lr_multiplier))
    if config.optimizer.layer_decay != 1.0:
        tx = optax.chain(tx, optim.scale_by_layer_decay(config.optimizer.layer_decay))
    size = config.data.image_size
    init = init_state_fn(
        lambda rng: model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32), train=False),
        tx,
        config.seed,
        ema=config.ema_decay > 0,
    )
    target = abstract_state(init, mesh)  # model errors surface here, before the workdir is touched
    run_dir.check_resumable(workdir, config)
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
    state = restore_or_init(
        init,
        target,
        checkpointer,
        total_steps=total_steps,
        initial_encoder=initial_encoder(target),
    )
    run_dir.record_config(workdir, config)
    before_start()
    run_dir.write_parameter_overview(workdir, job, state.params)
    train_step = jit_train_step(
        functools.partial(supervised_step, model=model, tx=tx, schedule=schedule, config=config),
        state_shardings(state),
        mesh,
    )
    batches = inputs.training_batches(train_source, config, state, mesh)

    def logits(variables, images):
        return model.apply(variables, augment.preprocess_eval(images, config.augment), train=False)

    started = time.perf_counter()
    with loop.training_run(workdir, job, config, checkpointer) as run:
        state, last = run.run_steps(state, train_step, batches, total_steps)
        variables = state.variables(config.eval_with_ema)
        results = {}
        if data.test is not None:
            results = classification.validation_and_test_accuracy(
                logits,
                variables,
                data.validation,
                data.test if config.evaluate_test else None,
                mesh,
                batch_size=config.eval_batch_size,
            )
        if data.held_out is not None:
            validated = _held_out_retrieval(model, variables, data.validation_held_out, mesh, config)
            results |= validated
            if config.evaluate_test:
                same = data.validation_held_out is data.held_out
                tested = validated if same else _held_out_retrieval(model, variables, data.held_out, mesh, config)
                results |= validation.as_test_metrics(tested)
        run.logger.write(total_steps, {k: v for k, v in results.items() if k != "test_examples"})
    summary = loop.run_summary(job, total_steps, last, started, mesh) | results | inputs.validation_summary(data)
    return run_dir.finish_run(workdir, config, summary, run.logger.records(), [])


def _held_out_retrieval(model, variables, held_out, mesh, config) -> dict[str, float]:
    """Open-set retrieval metrics of the encoder's features on the held-out classes (a collective)."""
    forward = jax.jit(
        lambda v, images: model.apply(v, augment.preprocess_eval(images, config.augment), method=model.features)
    )
    arrays = embeddings.compute_embeddings(
        forward, variables, held_out, mesh, batch_size=config.eval_batch_size, names=("encoder",)
    )
    return validation.open_set_metrics(
        arrays,
        recall_at=tuple(config.eval.recall_at),
        gallery_fraction=config.eval.gallery_fraction,
        seed=config.seed,
        spaces={"encoder": "encoder"},
    )
