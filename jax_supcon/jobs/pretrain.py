"""Stage 1: encoder + projection head trained with SupCon (or SimCLR) on augmented views."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from jax_supcon import losses, models, parallel
from jax_supcon.checkpoint import Checkpointer
from jax_supcon.data import augment, pipeline
from jax_supcon.evaluate import embeddings, evaluators, retrieval, validation
from jax_supcon.train import health, inputs, lock, loop, preemption, pretrained
from jax_supcon.train import queue as feature_queue
from jax_supcon.train import workdir as run_dir
from jax_supcon.train.state import (
    TrainState,
    abstract_state,
    apply_gradients,
    dropout_rngs,
    jit_train_step,
    restore_or_init,
    state_shardings,
)


def contrastive_loss(
    z: jax.Array,
    labels: jax.Array,
    loss_config: ml_collections.ConfigDict,
    mesh: Mesh,
    contrast: dict[str, jax.Array] | None = None,
) -> jax.Array:
    """The configured loss on `[batch, views, dim]` projections sharded over the mesh: each
    device computes its anchor rows against the gathered batch (see `losses.from_config`), and the
    `contrast_*` samples of the feature queue when there is one."""
    return losses.from_config(loss_config, mesh)(z, labels, contrast)


def momentum_step(state: TrainState, model: models.ContrastiveModel, inputs: jax.Array, rate: float) -> dict:
    """The momentum encoder's step (MoCo, He et al. 2020): its parameters move to `rate * own +
    (1 - rate) * current` (no warm-up), then it embeds `inputs` in training mode (batch
    statistics of the batch, its running averages its own). Returns the normalised keys (no
    gradient) and its new variables."""
    params = optax.incremental_update(state.params, state.momentum["params"], 1.0 - rate)
    keys, updated = model.apply(
        {"params": params, "batch_stats": state.momentum["batch_stats"]},
        inputs,
        train=True,
        mutable=["batch_stats"],
        rngs=dropout_rngs(state, stream=1),
    )
    batch_stats = updated.get("batch_stats", {})
    return {"keys": jax.lax.stop_gradient(keys), "variables": {"params": params, "batch_stats": batch_stats}}


def pretrain_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: models.ContrastiveModel,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    total_steps: int | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Augment the views on device, forward all of them as one batch, SupCon loss (plus the online
    probe's cross-entropy on stop-gradient features, which cannot reach the encoder), optax update.
    With a feature queue the loss also contrasts the queue's entries of earlier steps, and the
    step's features are written into it afterwards; with a momentum encoder, its keys are the
    batch's contrast samples and what the queue receives (see `train/queue.py`, `momentum_step`).
    The metrics carry the step's health figures (`train/health.py`), the effective ranks on the
    steps the loop logs (every `log_every_steps`, and the last when `total_steps` is given) only."""
    num_views = config.loss.num_views
    per_step = losses.entries_per_step(config.loss, batch["label"].shape[0])
    contrast = feature_queue.contrast_arguments(
        state.queue, state.step, per_step, with_labels=config.loss.name != "simclr"
    )
    rng = jax.random.fold_in(state.rng, state.step)
    views = augment.augment_views(rng, batch["image"], config.augment, num_views)
    batch_size = views.shape[0]
    # Example-major flattening keeps every example's views on the device that holds the example.
    inputs = views.reshape((batch_size * num_views,) + views.shape[2:])
    momentum = {}
    if state.momentum:  # MoCo: move the key encoder towards the current one, then compute the keys
        momentum = momentum_step(state, model, inputs, config.model.momentum)
        contrast["key_features"] = momentum["keys"].reshape(batch_size, num_views, -1)

    def loss_fn(params):
        (z, probe_logits, features), updated = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            inputs,
            train=True,
            mutable=["batch_stats"],
            method=model.with_probe,
            rngs=dropout_rngs(state),
        )
        z = z.reshape(batch_size, num_views, -1)
        loss = contrastive_loss(z, batch["label"], config.loss, mesh, contrast)
        probe = {}
        if probe_logits is not None:
            labels = jnp.repeat(batch["label"], num_views)  # example-major, as `inputs`
            probe = {
                "probe_loss": losses.cross_entropy_loss(probe_logits, labels),
                "probe_top1": jnp.mean(jnp.argmax(probe_logits, -1) == labels),
            }
        return loss + probe.get("probe_loss", 0.0), (loss, probe, updated.get("batch_stats", {}), z, features)

    (_, (loss, probe, batch_stats, z, features)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = apply_gradients(state, grads, tx, batch_stats=batch_stats, ema_decay=config.ema_decay)
    entries = contrast.get("key_features", z)  # with a momentum encoder, its keys fill the queue
    queue = feature_queue.enqueue(state.queue, state.step, entries, batch["label"], config.loss.queue_views)
    new_state = new_state.replace(queue=queue)
    if momentum:
        new_state = new_state.replace(momentum=momentum["variables"])
    metrics = {"loss": loss, **probe, "learning_rate": schedule(state.step), "grad_norm": optax.global_norm(grads)}
    logged = (state.step + 1) % config.log_every_steps == 0
    if total_steps is not None:
        logged |= state.step + 1 == total_steps
    metrics |= step_health(z, features, batch["label"], loss, config.loss, mesh, contrast, with_ranks=logged)
    return new_state, metrics


def step_health(
    z: jax.Array,
    features: jax.Array,
    labels: jax.Array,
    loss: jax.Array,
    loss_config: ml_collections.ConfigDict,
    mesh: Mesh,
    contrast: dict[str, jax.Array],
    *,
    with_ranks: bool | jax.Array = True,
) -> dict[str, jax.Array]:
    """The step's health figures (`train/health.py`) from its own projections and features: the
    loss's collapsed value is the configured loss on collapsed projections (and queue entries)."""
    collapsed = contrastive_loss(
        health.collapsed_like(z), labels, loss_config, mesh, health.collapsed_contrast(contrast)
    )
    positive_ids = jnp.arange(z.shape[0]) if loss_config.name == "simclr" else labels
    return health.health_figures(z, features, positive_ids, loss, collapsed, with_ranks=with_ranks)


class PretrainingProgram(NamedTuple):
    """What `compiled_pretraining` builds: the model, optimizer and schedule of a config, the
    initial-state function, the abstract sharded state it trains, and the jitted, donated step."""

    model: models.ContrastiveModel
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    init: Callable[[], TrainState]
    target: TrainState
    step: Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]


def compiled_pretraining(
    config: ml_collections.ConfigDict, mesh: Mesh, *, total_steps: int, warmup_steps: int
) -> PretrainingProgram:
    """The one pretraining program that the job, `jax-supcon-bench step` and the tests run: the
    state's shapes and shardings are traced without allocating (model errors surface here, before
    any workdir is touched), and the step is `pretrain_step` jitted with the state donated and
    sharded as `target`."""
    model, tx, schedule, init = pretrained.build(config, total_steps, warmup_steps)
    target = abstract_state(init, mesh)
    step = jit_train_step(
        functools.partial(
            pretrain_step, model=model, tx=tx, schedule=schedule, config=config, mesh=mesh, total_steps=total_steps
        ),
        state_shardings(target),
        mesh,
    )
    return PretrainingProgram(model, tx, schedule, init, target, step)


@preemption.stops_on_sigterm
@lock.holds_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None) -> dict:
    """Run (or resume) stage-1 pretraining in `workdir`; returns the summary it writes."""
    data = inputs.load_training_data(config, mesh)
    config, mesh, train_source, total_steps = data.config, data.mesh, data.train, data.total_steps
    program = compiled_pretraining(config, mesh, total_steps=total_steps, warmup_steps=data.warmup_steps)
    model, init, target = program.model, program.init, program.target
    run_dir.check_resumable(workdir, config)

    validating = config.eval_every_steps > 0
    checkpointer = Checkpointer(
        workdir,
        keep=config.keep_checkpoints,
        best_metric=config.best_metric if validating else None,
        keep_best=config.keep_best,
    )
    state = restore_or_init(
        init,
        target,
        checkpointer,
        total_steps=total_steps,
        initial_encoder=pretrained.encoder_importer(config.model, target),
    )
    run_dir.record_config(workdir, config)
    run_dir.write_parameter_overview(workdir, "pretrain", state.params)
    train_step = program.step

    forward = embeddings.embedding_forward(model, config.augment)

    def embed(state, source):
        variables = state.variables(config.eval_with_ema)
        return embeddings.compute_embeddings(forward, variables, source, mesh, batch_size=config.eval_batch_size)

    open_set = data.held_out is not None
    final_gallery = {}  # the training split's embeddings at the last step, shared by validation and test

    def gallery(state):
        step = int(jax.device_get(state.step))
        if step in final_gallery:
            return final_gallery[step]
        embedded = embed(state, train_source)
        if step == total_steps:
            final_gallery[step] = embedded
        return embedded

    def metrics_of(state, shown, seen):
        """The configured evaluators' metrics (`evaluate/evaluators.py`) of embedded queries
        `shown` (the held-out classes' when open set, else `seen`'s): kNN retrieves from the
        training split, the probe scores `seen` (the training classes' images)."""

        def probe():
            if not model.probe_classes:
                return None
            return jax.device_get(state.variables(config.eval_with_ema)["params"]["probe"]["linear"])

        def seen_embedded():  # closed set: the queries are the training classes' images already
            if not open_set:
                return shown
            return None if seen is None else embed(state, seen)

        embedded = evaluators.Embedded(
            queries=shown,
            gallery=lambda: gallery(state),
            seen=seen_embedded,
            probe=probe,
            num_classes=train_source.num_classes,
        )
        return evaluators.evaluate(config, embedded, open_set=open_set)

    # Validation reads `data.validation*` (the test split itself without data.validation_fraction);
    # the test split is read once, after the last step (with `evaluate_test`). The final maps show
    # the test side (else the validation side); the last validation's embeddings, by step, are
    # reused when they are of the same images.
    validated_source = data.validation_held_out or data.validation
    final_source = (data.held_out or data.test) if config.evaluate_test else validated_source
    testing = validating and config.evaluate_test
    latest_shown = {}

    def evaluate(state):
        latest_shown.clear()
        latest_shown[int(jax.device_get(state.step))] = shown = embed(state, validated_source)
        return metrics_of(state, shown, data.validation)

    batches = inputs.training_batches(train_source, config, state, mesh, views=config.loss.num_views)
    started = time.perf_counter()
    plots = []
    watch = health.CollapseWatch(data.warmup_steps)
    logged = evaluators.metric_names(config, open_set=open_set)
    with loop.training_run(workdir, "pretrain", config, checkpointer) as run:
        state, last = run.run_steps(
            state, train_step, batches, total_steps, evaluate if validating else None, collapse_watch=watch
        )
        validated = [r for r in run.logger.records() if any(key in r for key in logged)]
        final_validation = {k: v for k, v in (validated[-1] if validated else {}).items() if k != "step"}
        reused = data.validation_is_test or not config.evaluate_test
        shown = latest_shown.get(total_steps) if reused else None
        if shown is None and (config.plots or (testing and not data.validation_is_test)):
            shown = embed(state, final_source)  # a collective: every process takes part
        tested = {}
        if testing:
            measured = final_validation if data.validation_is_test else metrics_of(state, shown, data.test)
            tested = validation.as_test_metrics(measured)
            run.logger.write(total_steps, tested)
        if config.plots and parallel.is_main_process():
            plots = _final_plots(workdir, config, shown, final_source, open_set=open_set)
    records = run.logger.records()
    summary = loop.run_summary("pretrain", total_steps, last, started, mesh) | final_validation | tested
    summary |= inputs.validation_summary(data)
    # The last logged health figures, and the collapse when the run went on after one
    # (stop_on_collapse=False): a collapsed run's figures are never read as a good run's.
    summary |= {k: v for k, v in last.items() if k.startswith(health.PREFIX)}
    summary |= {"collapsed_at_step": None} if watch.detected is None else watch.detected.summary()
    return run_dir.finish_run(workdir, config, summary, records, plots)


def _final_plots(workdir: str, config, shown: dict, source, *, open_set: bool) -> list[str]:
    """The embedding maps of the final evaluation images (the test split's, or the validation
    images' without `evaluate_test`; the held-out classes in an open-set run, named so) and,
    open-set, the retrieval grid of some of their queries."""
    from jax_supcon.report import plots as report_plots

    folder = os.path.join(workdir, report_plots.PLOTS_DIR)
    side = "" if config.evaluate_test else "validation_"
    name = f"{side}held_out_encoder" if open_set else f"{side or 'test_'}encoder"
    plots = report_plots.embedding_maps(shown["encoder"], shown["labels"], folder, name=name, seed=config.seed)
    if open_set and len(shown["labels"]) > 1:
        queries, matches = retrieval.retrieval_examples(
            shown["encoder"], shown["labels"], gallery_fraction=config.eval.gallery_fraction
        )
        images = pipeline.evaluation_images(source, np.concatenate([queries, matches.ravel()]))
        plots.append(
            report_plots.retrieval_grid(
                images[: len(queries)],
                shown["labels"][queries],
                images[len(queries) :].reshape(matches.shape + images.shape[1:]),
                shown["labels"][matches],
                os.path.join(folder, f"{side}held_out_retrieval.png"),
                title="Held-out classes: nearest gallery images by encoder features (green: same class)",
            )
        )
    return plots
