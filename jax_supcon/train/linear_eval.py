"""Stage 2: restore the stage-1 encoder, freeze it, train a linear classifier on its features."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from jax_supcon import losses, models, optim
from jax_supcon.checkpoint import Checkpointer
from jax_supcon.data import augment
from jax_supcon.train import common, pretrain


def restore_pretrained(pretrained_workdir: str, mesh: Mesh, which: str = "latest"):
    """The stage-1 config, model and state at checkpoint `which` (latest, best or a step)."""
    pre_config = common.load_config(pretrained_workdir)
    checkpointer = Checkpointer(pretrained_workdir, create=False)
    if checkpointer.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}: run stage 1 there first")
    records = common.MetricLogger.read_records(pretrained_workdir)
    step = checkpointer.select_step(which, records, pre_config.get("best_metric"))
    model, _, _, init = pretrain.build(pre_config, total_steps=1, warmup_steps=0)
    state = checkpointer.restore(common.abstract_state(init, mesh), step=step)
    checkpointer.close()
    return pre_config, model, state, step


def inherit_pretrained(config: ml_collections.ConfigDict, pre_config: ml_collections.ConfigDict):
    """A copy of a stage-2 config with stage 1's model and input normalisation, so stage 2 sees
    the images the encoder was trained on; a different image size is an error, not a silent change."""
    if config.data.image_size != pre_config.data.image_size:
        raise ValueError(
            f"data.image_size={config.data.image_size} differs from the pretrained run's "
            f"{pre_config.data.image_size}; set --config.data.image_size={pre_config.data.image_size}"
        )
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model = ml_collections.ConfigDict(pre_config.model.to_dict())
        config.augment.mean = tuple(pre_config.augment.mean)
        config.augment.std = tuple(pre_config.augment.std)
    return config


def encoder_variables(state: common.TrainState) -> dict[str, Any]:
    """The encoder's part of a stage-1 state (`params`, `batch_stats`), head and optimizer dropped."""
    return {"params": state.params["encoder"], "batch_stats": state.batch_stats["encoder"]}


def restore_encoder(pretrained_workdir: str, mesh: Mesh, which: str = "latest") -> tuple[models.ResNet, dict[str, Any]]:
    """The stage-1 encoder module and its variables from checkpoint `which` of `pretrained_workdir`."""
    pre_config, _, state, _ = restore_pretrained(pretrained_workdir, mesh, which)
    return models.create_encoder(pre_config.model), encoder_variables(state)


def _features(encoder, variables, images: jax.Array) -> jax.Array:
    """Frozen encoder features (BatchNorm in inference mode, no gradient)."""
    return jax.lax.stop_gradient(encoder.apply(variables, images, train=False))


def linear_step(state, batch, frozen, *, encoder, classifier, tx, schedule, config):
    """One cross-entropy step of the linear classifier on (optionally augmented) frozen features."""
    if config.linear_augment:
        rng = jax.random.fold_in(state.rng, state.step)
        images = augment.augment_views(rng, batch["image"], config.augment, 1)[:, 0]
    else:
        images = augment.preprocess_eval(batch["image"], config.augment)
    features = _features(encoder, frozen, images)

    def loss_fn(params):
        logits = classifier.apply({"params": params}, features)
        loss = losses.cross_entropy_loss(logits, batch["label"], label_smoothing=config.label_smoothing)
        return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
    )
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return new_state, {"loss": loss, "train_top1": accuracy, "learning_rate": schedule(state.step)}


def correct_count(params, batch, frozen, *, encoder, classifier, config) -> jax.Array:
    """Number of correctly classified, unpadded examples in an evaluation batch."""
    features = _features(encoder, frozen, augment.preprocess_eval(batch["image"], config.augment))
    predictions = jnp.argmax(classifier.apply({"params": params}, features), -1)
    return jnp.sum((predictions == batch["label"]) * batch["mask"])


def evaluate(params, frozen, source, mesh, *, encoder, classifier, config) -> float:
    """Top-1 accuracy over the whole `source` (padding excluded)."""
    count = jax.jit(functools.partial(correct_count, encoder=encoder, classifier=classifier, config=config))
    correct = common.sum_over_split(lambda batch: count(params, batch, frozen), source, mesh, config.eval_batch_size)
    return int(correct) / source.num_examples


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None) -> dict:
    """Run (or resume) linear evaluation in `workdir`; returns the summary with `test_top1`."""
    mesh, train_source, test_source, total_steps, warmup_steps = common.load_training_data(config, mesh)
    if not os.path.isdir(config.pretrained_workdir):
        raise FileNotFoundError(f"pretrained_workdir={config.pretrained_workdir!r} does not exist")
    pre_config, _, pretrained, pretrained_step = restore_pretrained(
        config.pretrained_workdir, mesh, str(config.checkpoint)
    )
    config = inherit_pretrained(config, pre_config)
    encoder = models.create_encoder(pre_config.model)
    frozen = encoder_variables(pretrained)
    common.prepare_workdir(workdir, config)

    classifier = models.LinearClassifier(train_source.num_classes)
    tx, schedule = optim.create_optimizer(config.optimizer, total_steps, warmup_steps, config.batch_size)
    feature_dim = encoder.feature_dim
    init = common.init_state_fn(
        lambda rng: classifier.init(rng, jnp.zeros((1, feature_dim), jnp.float32)), tx, config.seed
    )
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
    state = common.restore_or_init(init, common.abstract_state(init, mesh), checkpointer)
    shardings = common.state_shardings(state)
    step_fn = functools.partial(
        linear_step, encoder=encoder, classifier=classifier, tx=tx, schedule=schedule, config=config
    )
    train_step = common.jit_train_step(step_fn, shardings, mesh, replicated_args=1)
    batches = common.training_batches(train_source, config, state, mesh, random_crop=config.linear_augment)
    logger = common.MetricLogger(workdir, "linear_eval")
    start = time.perf_counter()
    try:
        state, last = common.run_steps(
            config=config,
            state=state,
            train_step=lambda s, b: train_step(s, b, frozen),
            batches=batches,
            total_steps=total_steps,
            checkpointer=checkpointer,
            logger=logger,
        )
        test_top1 = evaluate(
            state.params, frozen, test_source, mesh, encoder=encoder, classifier=classifier, config=config
        )
        logger.write(total_steps, {"test_top1": test_top1})
    finally:
        checkpointer.close()
        logger.close()
    summary = {
        "job": "linear_eval",
        "steps": total_steps,
        "final_loss": last.get("loss"),
        "test_top1": test_top1,
        "test_examples": test_source.num_examples,
        "train_seconds": time.perf_counter() - start,
        "devices": mesh.size,
        "pretrained_workdir": os.path.abspath(config.pretrained_workdir),
        "pretrained_checkpoint": str(config.checkpoint),
        "pretrained_step": pretrained_step,
    }
    return common.finish_run(workdir, config, summary, logger.records(), [])
