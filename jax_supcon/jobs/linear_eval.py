"""Stage 2: restore the stage-1 encoder, freeze it, train a linear classifier on its features."""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jax_supcon import losses, models, optim, parallel
from jax_supcon.checkpoint import Checkpointer
from jax_supcon.data import augment, pipeline
from jax_supcon.evaluate import classification, embeddings
from jax_supcon.train import inputs, lock, loop, preemption, pretrained
from jax_supcon.train import workdir as run_dir
from jax_supcon.train.state import (
    abstract_state,
    apply_gradients,
    init_state_fn,
    jit_train_step,
    restore_or_init,
    state_shardings,
)


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
    new_state = apply_gradients(state, grads, tx, ema_decay=config.ema_decay)
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
    arrays = embeddings.compute_embeddings(
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


@preemption.stops_on_sigterm
@lock.holds_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None) -> dict:
    """Run (or resume) linear evaluation in `workdir`; returns the summary with test top-1 and top-5."""
    data = inputs.load_training_data(config, mesh)
    config, mesh, train_source, test_source = data.config, data.mesh, data.train, data.test
    total_steps, warmup_steps = data.total_steps, data.warmup_steps
    if test_source is None:
        raise ValueError(
            f"data.eval_split={config.data.eval_split!r} has no image of the training classes "
            f"(data.train_classes={config.data.train_classes!r}): a classifier of them cannot be scored"
        )
    pre_config, _, pretrained_state, pretrained_step, pin = pretrained.restore_pinned(
        workdir, config.pretrained_workdir, mesh, str(config.checkpoint)
    )
    config = pretrained.inherit_pretrained(config, pre_config)
    pretrained.check_same_validation(config, pre_config)
    encoder = models.create_encoder(pre_config.model)
    frozen = pretrained.encoder_variables(
        pretrained.pretrained_variables(pretrained_state, pre_config, config.pretrained_ema)
    )
    run_dir.check_resumable(workdir, config)

    classifier = models.LinearClassifier(train_source.num_classes)
    tx, schedule = optim.create_optimizer(config.optimizer, total_steps, warmup_steps, config.batch_size)
    feature_dim = encoder.feature_dim
    init = init_state_fn(
        lambda rng: classifier.init(rng, jnp.zeros((1, feature_dim), jnp.float32)),
        tx,
        config.seed,
        ema=config.ema_decay > 0,
    )
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
    state = restore_or_init(init, abstract_state(init, mesh), checkpointer, total_steps=total_steps)
    run_dir.record_config(workdir, config)
    pretrained.write_pin(workdir, pin)
    recorded = os.path.join(workdir, run_dir.SUMMARY_FILE)
    if int(jax.device_get(state.step)) == total_steps and os.path.exists(recorded):
        with open(recorded) as f:
            result = json.load(f)
        if "test_top1" in result or not config.evaluate_test:
            checkpointer.close()
            return result  # finished: the recorded result, not a second scoring
        # finished without reading the test split (evaluate_test was False): only that is left to do
    run_dir.write_parameter_overview(workdir, "linear_eval", state.params)
    shardings = state_shardings(state)
    step_options = dict(classifier=classifier, tx=tx, schedule=schedule, config=config)
    if config.precompute_features:
        features = split_features(encoder, frozen, train_source, mesh, config)
        train_step = jit_train_step(functools.partial(feature_step, **step_options), shardings, mesh)
        batches = feature_batches(features, config, int(jax.device_get(state.step)), mesh)
    else:
        step = jit_train_step(
            functools.partial(linear_step, encoder=encoder, **step_options), shardings, mesh, replicated_args=1
        )
        train_step = lambda s, b: step(s, b, frozen)  # noqa: E731
        batches = inputs.training_batches(train_source, config, state, mesh, random_crop=config.linear_augment)

    def logits(variables, images):
        features = _features(encoder, variables["encoder"], augment.preprocess_eval(images, config.augment))
        return classifier.apply({"params": variables["classifier"]}, features)

    started = time.perf_counter()
    with loop.training_run(workdir, "linear_eval", config, checkpointer) as run:
        state, last = run.run_steps(state, train_step, batches, total_steps)
        variables = {"classifier": state.variables(config.eval_with_ema)["params"], "encoder": frozen}
        accuracy = classification.validation_and_test_accuracy(
            logits,
            variables,
            data.validation,
            test_source if config.evaluate_test else None,
            mesh,
            batch_size=config.eval_batch_size,
        )
        run.logger.write(total_steps, {k: v for k, v in accuracy.items() if k != "test_examples"})
    summary = loop.run_summary("linear_eval", total_steps, last, started, mesh) | {
        **accuracy,
        **inputs.validation_summary(data),
        "pretrained_workdir": os.path.abspath(config.pretrained_workdir),
        "pretrained_checkpoint": str(config.checkpoint),
        "pretrained_step": pretrained_step,
        "pretrained_weights": "ema" if config.pretrained_ema else "trained",
    }
    return run_dir.finish_run(workdir, config, summary, run.logger.records(), [])
