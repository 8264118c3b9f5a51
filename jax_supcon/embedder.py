"""`Embedder`: a trained run's encoder (and projection head) as a function from images to
embeddings, for notebooks, services and the search command.

    from jax_supcon import Embedder

    embedder = Embedder.from_workdir("runs/demo/pretrain")
    out = embedder.embed(images)             # uint8 [N, H, W, 3], or a list of image file paths
    out["encoder"], out["projection"]        # NumPy [N, F] and L2-normalised [N, P]

It restores any pretrain, finetune or supervised workdir from its checkpoint's own metadata (no
optimizer is rebuilt), with the run's model, image size and normalisation, and computes what the
embed job computes: evaluation preprocessing, BatchNorm in inference mode, batches sharded over
this process's devices.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jax_supcon import models, parallel
from jax_supcon.checkpoint import Checkpointer, abstract_target
from jax_supcon.data import augment
from jax_supcon.train.lock import running_holder
from jax_supcon.train.workdir import MetricLogger, load_config

EMBEDDABLE_JOBS = ("pretrain", "finetune", "supervised")


def _default_checkpoint(config: ml_collections.ConfigDict, records: list[dict]) -> str:
    """`best` where the run kept one (validated with a best_metric), else `latest`."""
    metric = config.get("best_metric") or ""
    return "best" if metric and any(metric in record for record in records) else "latest"


def note_if_training(workdir: str, step: int) -> None:
    """One line on stderr when the run in `workdir` is still training: its checkpoint at `step` is
    not the finished run's (the step read was held through the run's checkpoint rotation)."""
    holder = running_holder(workdir)
    if holder is not None and jax.process_index() == 0:
        print(
            f"jax-supcon: note: the run in {workdir!r} is still training ({holder}); "
            f"using its checkpoint at step {step}",
            file=sys.stderr,
            flush=True,
        )


class Embedder:
    """Images -> `{"encoder": [N, F]}` (and `"projection": [N, P]`, L2-normalised, where the run
    has a head) with the variables of one checkpoint of a run."""

    def __init__(self, config: ml_collections.ConfigDict, variables: dict[str, Any], *, step: int, mesh=None):
        self.config = config
        self.step = step
        self.mesh = mesh or parallel.create_mesh(jax.local_devices())
        self.has_head = config.job == "pretrain"
        if self.has_head:
            model = models.create_contrastive_model(config.model)
            method = model.embed
        else:
            model = models.SupervisedModel(
                encoder=models.create_encoder(config.model), classifier=models.LinearClassifier(1)
            )
            method = model.features
        self.names = ("encoder", "projection") if self.has_head else ("encoder",)
        self._variables = jax.device_put(variables, parallel.replicated(self.mesh))
        self._forward = jax.jit(
            lambda v, images: model.apply(v, augment.preprocess_eval(images, config.augment), method=method)
        )

    def serving_function(self):
        """uint8 images [batch, S, S, 3] at the run's size -> dict of embeddings, with this
        checkpoint's variables inside: what `jax-supcon-export` serialises."""
        variables = jax.device_get(self._variables)
        forward = self._forward

        def serve(images):
            return dict(zip(self.names, forward(variables, images), strict=True))

        return serve

    @property
    def image_size(self) -> int:
        return int(self.config.data.image_size)

    @classmethod
    def from_workdir(cls, workdir: str, checkpoint: str | int | None = None, use_ema: bool = False) -> Embedder:
        """The run in `workdir` at `checkpoint` (`None`: `best` where the run kept one, else
        `latest`; or `best`, `latest`, a step), with its EMA weights when `use_ema`."""
        config = load_config(workdir)
        if config.get("job") not in EMBEDDABLE_JOBS:
            raise ValueError(
                f"workdir {workdir!r} holds a {config.get('job')!r} run; an Embedder restores one of {EMBEDDABLE_JOBS}"
            )
        checkpointer = Checkpointer(workdir, create=False)
        records = MetricLogger.read_records(workdir)
        which = _default_checkpoint(config, records) if checkpoint is None else str(checkpoint)
        mesh = parallel.create_mesh(jax.local_devices())
        state, step = checkpointer.restore_selected(
            which,
            records,
            config.get("best_metric"),
            lambda step: abstract_target(checkpointer.metadata(step), parallel.replicated(mesh)),
        )
        checkpointer.close()
        note_if_training(workdir, step)
        if use_ema and not state.get("ema"):
            raise ValueError(f"use_ema=True, but the run in {workdir!r} kept no EMA weights (its ema_decay is 0)")
        chosen = state["ema"] if use_ema else state
        variables = {"params": chosen["params"], "batch_stats": chosen.get("batch_stats", {})}
        return cls(config, variables, step=step, mesh=mesh)

    def embed(
        self, images: np.ndarray | Sequence[str] | str | os.PathLike, batch_size: int = 256
    ) -> dict[str, np.ndarray]:
        """Embeddings of uint8 images [N, H, W, 3] (resized to the run's size, as evaluation does
        for fixed-size data) or of image files, a list of paths or one (decoded; shorter side to
        size / eval_crop_fraction, centre crop, as evaluation does for folders), in order. No
        images give arrays of zero rows, as wide as the embeddings."""
        pixels = self.prepare(images)
        devices = self.mesh.size
        if not len(pixels):  # no images: empty arrays as wide as the embeddings
            shapes = jax.eval_shape(self._forward, self._variables, np.zeros((devices, *pixels.shape[1:]), np.uint8))
            return {
                name: np.zeros((0, shape.shape[-1]), shape.dtype)
                for name, shape in zip(self.names, shapes, strict=True)
            }
        # One batch shape per call, so one compilation: at most `batch_size` rows (a multiple of the
        # device count), fewer when all the images need fewer; the last batch is padded to it.
        rows = min(max(devices, batch_size - batch_size % devices), -(-len(pixels) // devices) * devices)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        for start in range(0, len(pixels), rows):
            chunk = pixels[start : start + rows]
            padded = np.concatenate([chunk, np.zeros((rows - len(chunk), *chunk.shape[1:]), np.uint8)])
            batch = parallel.to_global({"image": padded}, self.mesh)["image"]
            for name, value in zip(self.names, self._forward(self._variables, batch), strict=True):
                parts[name].append(np.asarray(value)[: len(chunk)])
        return {name: np.concatenate(value) for name, value in parts.items()}

    def prepare(self, images: np.ndarray | Sequence[str] | str | os.PathLike) -> np.ndarray:
        """uint8 [N, S, S, 3] at the run's size from an image array, a list of file paths or one path."""
        from jax_supcon.data import pipeline
        from jax_supcon.data.folders import decode_file
        from jax_supcon.data.sources import tf_module

        tf = tf_module()
        size = self.image_size
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(
                    f"images must be uint8 [N, H, W, 3] or a list of file paths, got {images.dtype} {images.shape}"
                )
            if images.shape[1:3] == (size, size):
                return images
            if not len(images):
                return np.zeros((0, size, size, 3), np.uint8)
            return np.stack([np.asarray(pipeline.resize(tf.convert_to_tensor(image), size)) for image in images])
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        crop = self.config.data.get("eval_crop_fraction", 0.875)
        out = []
        for path in map(os.fspath, images):
            if os.path.isdir(path):
                raise ValueError(f"image {path!r} is a directory; pass its image files (a list of paths)")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image {path!r} does not exist")
            try:
                image = decode_file(tf.io.read_file(path))
            except (tf.errors.OpError, ValueError):
                raise ValueError(f"cannot decode image {path!r} (allowed: JPEG, PNG, GIF, BMP, WEBP)") from None
            out.append(np.asarray(pipeline.center_view(image, size, crop)))
        return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)
