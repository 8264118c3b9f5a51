"""What a training job reads before it builds anything: the checked config, the mesh, both
splits and the run's length; and this process's share of the training stream as global arrays
on the devices, resumed at the state's step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import jax
import ml_collections
from jax.sharding import Mesh

from jax_supcon import models, parallel
from jax_supcon.config import resolve_steps, validate_config
from jax_supcon.data import classes, pipeline, sources, subsets
from jax_supcon.data.sources import Source
from jax_supcon.evaluate import validation
from jax_supcon.train.state import TrainState


class TrainingData(NamedTuple):
    """`train` holds the training classes only, relabelled 0..n-1 when classes are held out
    (`data.train_classes`); `test` is the evaluation split's examples of those classes, labelled
    alike (None when it has none, as in Stanford Online Products); `held_out` its examples of
    the other classes with their own ids (None when nothing is held out). `validation` and
    `validation_held_out` are the same two roles for validation: with `data.validation_fraction`
    the part of the training split kept out of training (`subsets.split_off_validation`), else
    `test` and `held_out` themselves (`validation_is_test`). The training split is cut to
    `data.train_fraction`, then `data.label_fraction`, and its labels carry `data.label_noise`;
    validation and evaluation splits are never changed. `config` is the run's config with what the
    data decided recorded (`data.num_classes`, `data.class_ids`, `best_metric`); `mesh` the devices
    it is sharded over (`load_training_data`), None from `training_splits`."""

    config: ml_collections.ConfigDict
    train: Source
    test: Source | None
    held_out: Source | None
    validation: Source | None
    validation_held_out: Source | None
    total_steps: int
    warmup_steps: int
    mesh: Mesh | None = None  # None: what the data decides, whatever the devices (`training_splits`)

    @property
    def validation_is_test(self) -> bool:
        return not self.config.data.validation_fraction


def load_training_data(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> TrainingData:
    """What every training job checks and loads before it builds a model or touches its workdir:
    the config, batch divisibility over the mesh, both splits (cut to the training classes), the
    run's length, class balance."""
    validate_config(config)
    mesh = mesh or parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    return training_splits(config)._replace(mesh=mesh)


def training_splits(config: ml_collections.ConfigDict) -> TrainingData:
    """The splits, the run's length and the class-balance check of a validated `config`, with no
    device touched: what `jax-supcon-sweep` checks of every cell before it runs any."""
    train = sources.load_source(config.data, "train")
    test = sources.load_source(config.data, "test")
    if config.data.samples_per_class:  # class-balanced batches index the split: tfds records held in memory
        train = sources.held_in_memory(train)
    train, carved = subsets.split_off_validation(train, config.data.validation_fraction)
    split = classes.class_split(config.data.train_classes, train.num_classes)
    held_out = validation = validation_held_out = None
    if split is None and config.eval.gallery_fraction is not None:
        raise ValueError(
            f"eval.gallery_fraction={config.eval.gallery_fraction} needs held-out classes, but "
            f"data.train_classes={config.data.train_classes!r} names all {train.num_classes} classes"
        )
    if split is not None:
        held_out = classes.restrict(test, split.held_out, relabel=False, missing_ok=False, role="held-out")
        if carved is not None:
            validation_held_out = _held_out_validation(carved, split, config.data)
            validation = classes.restrict(carved, split.seen, relabel=True, missing_ok=True, role="training")
        train = classes.restrict(train, split.seen, relabel=True, missing_ok=False, role="training")
        test = classes.restrict(test, split.seen, relabel=True, missing_ok=True, role="training")
    elif carved is not None:
        validation = carved
    if carved is None:
        validation, validation_held_out = test, held_out
    train = subsets.train_fraction_subset(train, config.data.train_fraction)
    train = subsets.label_fraction_subset(train, config.data.label_fraction)
    train = subsets.with_label_noise(train, config.data.label_noise, config.seed)
    total_steps, warmup_steps = resolve_steps(config, train.num_examples)
    if config.data.samples_per_class:
        pipeline.check_class_balanced(train, config.batch_size, config.data.samples_per_class)
    config = record_data(config, num_classes=train.num_classes if split is None else split.num_classes, split=split)
    return TrainingData(config, train, test, held_out, validation, validation_held_out, total_steps, warmup_steps)


def validation_summary(data: TrainingData) -> dict[str, str | int]:
    """What a run's summary says of its validation images: `validation_split` ("test" when
    validation reads the test split) and `validation_examples`."""
    shown = data.validation_held_out or data.validation
    carved = f"{data.config.data.train_split} (validation_fraction {data.config.data.validation_fraction})"
    name = "test" if data.validation_is_test else carved
    return {"validation_split": name, "validation_examples": 0 if shown is None else shown.num_examples}


def _held_out_validation(carved: Source, split: classes.ClassSplit, data: ml_collections.ConfigDict) -> Source:
    """The validation queries of an open-set run: the held-out classes' images in the training
    split's validation part, never the test split's."""
    held_out = classes.restrict(carved, split.held_out, relabel=False, missing_ok=True)
    if held_out is None:
        raise ValueError(
            f"data.validation_fraction={data.validation_fraction} with held-out classes "
            f"(data.train_classes={data.train_classes!r}) validates on their images in the training split "
            f"{data.train_split!r}, which has none; set data.validation_fraction=0 (validation then reads "
            "the test split)"
        )
    return held_out


def record_data(
    config: ml_collections.ConfigDict, *, num_classes: int, split: classes.ClassSplit | None
) -> ml_collections.ConfigDict:
    """A copy of `config` with what the data decided, for `config.json` and whoever restores the
    run: `data.num_classes` (the data set's, when unset), `data.class_ids` (the data set id of each
    training label, when classes are held out), `best_metric` ("auto" resolved) and, for a ViT,
    `model.pos_image_size` (the size its position embeddings are made for)."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        if config.data.num_classes is None:
            config.data.num_classes = num_classes
        if split is not None:
            config.data.class_ids = list(split.seen)
        config.best_metric = validation.resolve_best_metric(config.best_metric, open_set=split is not None)
        if models.is_vit(config.model) and not config.model.pos_image_size:
            config.model.pos_image_size = config.data.image_size
    return config


def training_batches(
    source: Source,
    config: ml_collections.ConfigDict,
    state: TrainState,
    mesh: Mesh,
    *,
    views: int = 1,
    random_crop: bool = True,
) -> Iterator[dict[str, jax.Array]]:
    """This process's share of the training stream, resumed at the state's step, as global arrays
    prefetched to the devices. Images of varying size get `views` random crops on the host
    (or the evaluation view with `random_crop=False`); see `pipeline.train_batches`."""
    host_views = pipeline.host_views_for(config.augment, views, random_crop)
    batches = pipeline.train_batches(
        source,
        global_batch=config.batch_size,
        seed=config.seed,
        start_step=int(jax.device_get(state.step)),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        shuffle_buffer=config.data.shuffle_buffer,
        samples_per_class=config.data.samples_per_class,
        host_views=host_views,
    )
    return parallel.prefetch_to_device(batches, mesh, config.data.prefetch_to_device)
