"""What a training job reads before it builds anything: the checked config, the mesh, both
splits and the run's length; and this process's share of the training stream as global arrays
on the devices, resumed at the state's step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import jax
import ml_collections
from jax.sharding import Mesh

from jax_supcon import parallel
from jax_supcon.config import resolve_steps, validate_config
from jax_supcon.data import pipeline, sources
from jax_supcon.data.sources import Source
from jax_supcon.train.state import TrainState


class TrainingData(NamedTuple):
    mesh: Mesh
    train: Source
    test: Source
    total_steps: int
    warmup_steps: int


def load_training_data(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> TrainingData:
    """What every training job checks and loads before it builds a model or touches its workdir:
    the config, batch divisibility over the mesh, both splits, the run's length, class balance."""
    validate_config(config)
    mesh = mesh or parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    train = sources.load_source(config.data, "train")
    test = sources.load_source(config.data, "test")
    total_steps, warmup_steps = resolve_steps(config, train.num_examples)
    if config.data.samples_per_class:
        pipeline.check_class_balanced(train, config.batch_size, config.data.samples_per_class)
    return TrainingData(mesh, train, test, total_steps, warmup_steps)


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
