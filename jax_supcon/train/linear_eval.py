"""Stage 2: restore the stage-1 encoder, freeze it, train a linear classifier on its features."""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jax_supcon import losses, models, optim, parallel
from jax_supcon.checkpoint import Checkpointer
from jax_supcon.data import augment, pipeline
from jax_supcon.evaluate import embed
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


def pretrained_variables(state: common.TrainState, pre_config, use_ema: bool = False) -> dict[str, Any]:
    """A stage-1 state's `params` and `batch_stats` (or their EMA, with a clear error when the run
    kept none)."""
    if use_ema and not state.ema:
        raise ValueError(
            "pretrained_ema=True, but the stage-1 run kept no EMA weights "
            f"(its ema_decay={pre_config.get('ema_decay', 0.0)}); set pretrained_ema=False"
        )
    return state.variables(use_ema)


def encoder_variables(variables: dict[str, Any]) -> dict[str, Any]:
    """The encoder's part of stage-1 variables, head and probe dropped."""
    return {"params": variables["params"]["encoder"], "batch_stats": variables["batch_stats"]["encoder"]}


def restore_encoder(
    pretrained_workdir: str, mesh: Mesh, which: str = "latest", *, use_ema: bool = False
) -> tuple[models.ResNet, dict[str, Any]]:
    """The stage-1 encoder module and its variables from checkpoint `which` of `pretrained_workdir`."""
    pre_config, _, state, _ = restore_pretrained(pretrained_workdir, mesh, which)
    return models.create_encoder(pre_config.model), encoder_variables(pretrained_variables(state, pre_config, use_ema))


def _features(encoder, variables, images: jax.Array) -> jax.Array:
    """Frozen encoder features (BatchNorm in inference mode, no gradient)."""
    return jax.lax.stop_gradient(encoder.apply(variables, images, train=False))


def classifier_step(state, features, labels, *, classifier, tx, schedule, config):
    """One cross-entropy step of the linear classifier on frozen features."""

    def loss_fn(params):
        logits = classifier.apply({"params": params}, features)
        loss = losses.cross_entropy_loss(logits, labels, label_smoothing=config.label_smoothing)
        return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = common.apply_gradients(state, grads, tx, ema_decay=config.ema_decay)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return new_state, {"loss": loss, "train_top1": accuracy, "learning_rate": schedule(state.step)}


def linear_step(state, batch, frozen, *, encoder, classifier, tx, schedule, config):
    """One classifier step on the frozen features of (optionally augmented) images."""
    if config.linear_augment:
        rng = jax.random.fold_in(state.rng, state.step)
        images = augment.augment_views(rng, batch["image"], config.augment, 1)[:, 0]
    else:
        images = augment.preprocess_eval(batch["image"], config.augment)
    features = _features(encoder, frozen, images)
    return classifier_step(
        state, features, batch["label"], classifier=classifier, tx=tx, schedule=schedule, config=config
    )


def feature_step(state, batch, *, classifier, tx, schedule, config):
    """One classifier step on a batch of precomputed features (`precompute_features`)."""
    return classifier_step(
        state, batch["features"], batch["label"], classifier=classifier, tx=tx, schedule=schedule, config=config
    )


def split_features(encoder, frozen, source, mesh, config) -> dict[str, np.ndarray]:
    """`features` [N, F] float32 and `labels` [N] of a whole split (evaluation view), in split
    order, on every process: computed once so the classifier trains without the encoder."""
    forward = jax.jit(
        lambda variables, images: (_features(encoder, variables, augment.preprocess_eval(images, config.augment)),)
    )
    arrays = embed.compute_embeddings(
        forward, frozen, source, mesh, batch_size=config.eval_batch_size, names=("features",)
    )
    return {"features": arrays["features"].astype(np.float32), "label": arrays["labels"].astype(np.int32)}


def feature_batches(
    features: dict[str, np.ndarray], config: ml_collections.ConfigDict, start_step: int, mesh: Mesh
) -> Iterator[dict[str, jax.Array]]:
    """This process's share of shuffled global batches of precomputed features from `start_step`,
    a pure function of (seed, step) like the image pipeline, prefetched to the devices."""
    local = pipeline.local_batch_size(config.batch_size, jax.process_count())
    lo = jax.process_index() * local
    num_examples = features["label"].shape[0]

    def host_batches():
        for step in itertools.count(start_step):
            indices = pipeline.shuffled_indices(num_examples, config.batch_size, config.seed, step)[lo : lo + local]
            yield {key: value[indices] for key, value in features.items()}

    return parallel.prefetch_to_device(host_batches(), mesh, config.data.prefetch_to_device)


def top_k_counts(params, batch, frozen, *, encoder, classifier, config) -> jax.Array:
    """[top-1 hits, top-5 hits] among the unpadded examples of an evaluation batch."""
    features = _features(encoder, frozen, augment.preprocess_eval(batch["image"], config.augment))
    return common.top_k_hits(classifier.apply({"params": params}, features), batch["label"], batch["mask"])


def evaluate(params, frozen, source, mesh, *, encoder, classifier, config) -> dict[str, float]:
    """Top-1 and top-5 accuracy over the whole `source` (padding excluded)."""
    count = jax.jit(functools.partial(top_k_counts, encoder=encoder, classifier=classifier, config=config))
    top1, top5 = common.sum_over_split(lambda batch: count(params, batch, frozen), source, mesh, config.eval_batch_size)
    return {"test_top1": int(top1) / source.num_examples, "test_top5": int(top5) / source.num_examples}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None) -> dict:
    """Run (or resume) linear evaluation in `workdir`; returns the summary with test top-1 and top-5."""
    mesh, train_source, test_source, total_steps, warmup_steps = common.load_training_data(config, mesh)
    if not os.path.isdir(config.pretrained_workdir):
        raise FileNotFoundError(f"pretrained_workdir={config.pretrained_workdir!r} does not exist")
    pre_config, _, pretrained, pretrained_step = restore_pretrained(
        config.pretrained_workdir, mesh, str(config.checkpoint)
    )
    config = inherit_pretrained(config, pre_config)
    encoder = models.create_encoder(pre_config.model)
    frozen = encoder_variables(pretrained_variables(pretrained, pre_config, config.pretrained_ema))
    common.prepare_workdir(workdir, config)

    classifier = models.LinearClassifier(train_source.num_classes)
    tx, schedule = optim.create_optimizer(config.optimizer, total_steps, warmup_steps, config.batch_size)
    feature_dim = encoder.feature_dim
    init = common.init_state_fn(
        lambda rng: classifier.init(rng, jnp.zeros((1, feature_dim), jnp.float32)),
        tx,
        config.seed,
        ema=config.ema_decay > 0,
    )
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
    state = common.restore_or_init(init, common.abstract_state(init, mesh), checkpointer)
    common.write_parameter_overview(workdir, "linear_eval", state.params)
    shardings = common.state_shardings(state)
    step_options = dict(classifier=classifier, tx=tx, schedule=schedule, config=config)
    if config.precompute_features:
        features = split_features(encoder, frozen, train_source, mesh, config)
        train_step = common.jit_train_step(functools.partial(feature_step, **step_options), shardings, mesh)
        batches = feature_batches(features, config, int(jax.device_get(state.step)), mesh)
    else:
        step = common.jit_train_step(
            functools.partial(linear_step, encoder=encoder, **step_options), shardings, mesh, replicated_args=1
        )
        train_step = lambda s, b: step(s, b, frozen)  # noqa: E731
        batches = common.training_batches(train_source, config, state, mesh, random_crop=config.linear_augment)
    logger = common.MetricLogger(workdir, "linear_eval")
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
        classifier_params = state.variables(config.eval_with_ema)["params"]
        accuracy = evaluate(
            classifier_params, frozen, test_source, mesh, encoder=encoder, classifier=classifier, config=config
        )
        logger.write(total_steps, accuracy)
    finally:
        checkpointer.close()
        logger.close()
    summary = {
        "job": "linear_eval",
        "steps": total_steps,
        "final_loss": last.get("loss"),
        **accuracy,
        "test_examples": test_source.num_examples,
        "train_seconds": time.perf_counter() - start,
        "devices": mesh.size,
        "pretrained_workdir": os.path.abspath(config.pretrained_workdir),
        "pretrained_checkpoint": str(config.checkpoint),
        "pretrained_step": pretrained_step,
        "pretrained_weights": "ema" if config.pretrained_ema else "trained",
    }
    return common.finish_run(workdir, config, summary, logger.records(), [])
