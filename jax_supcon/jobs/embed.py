"""The `embed` job: embeddings of a split from a stage-1 checkpoint, to `.npz`, with maps and a report."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
from jax.sharding import Mesh

from jax_supcon import parallel
from jax_supcon.config import validate_config
from jax_supcon.data import sources
from jax_supcon.evaluate import embeddings, validation
from jax_supcon.evaluate.retrieval import retrieval_metrics
from jax_supcon.train import lock, preemption, pretrained
from jax_supcon.train import workdir as run_dir


@preemption.stops_on_sigterm
@lock.holds_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None) -> dict:
    """Write `embeddings_{split}.npz` (`encoder`, `projection`, `labels`, `ids`: position in the
    split) into `workdir`, from checkpoint `config.checkpoint` of `config.pretrained_workdir`.
    Its summary scores retrieval with the encoder's features: of the whole split, or when the
    stage-1 run held classes out, of those classes only (open set, `config.eval`)."""
    validate_config(config)
    mesh = mesh or parallel.create_mesh()
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    source = sources.load_source(config.data, config.embed_split)
    pre_config, model, state, step, pin = pretrained.restore_pinned(
        workdir, config.pretrained_workdir, mesh, str(config.checkpoint)
    )
    config = pretrained.inherit_pretrained(config, pre_config)
    if config.eval.gallery_fraction is not None and not pre_config.data.get("class_ids"):
        raise ValueError(
            f"eval.gallery_fraction={config.eval.gallery_fraction} needs a stage-1 run that held classes out; "
            f"{config.pretrained_workdir!r} trained on every class (its data.train_classes is empty)"
        )
    variables = pretrained.pretrained_variables(
        state, pre_config, config.pretrained_ema
    )  # before the workdir is touched
    preemption.stop_if_requested("stopped before computing the embeddings; nothing written")
    run_dir.prepare_workdir(workdir, config)
    pretrained.write_pin(workdir, pin)
    forward = embeddings.embedding_forward(model, config.augment)
    arrays = embeddings.compute_embeddings(forward, variables, source, mesh, batch_size=config.eval_batch_size)
    path = os.path.join(workdir, f"embeddings_{config.embed_split}.npz")
    plots = []
    if parallel.is_main_process():
        np.savez(f"{path}.tmp.npz", **arrays)
        os.replace(f"{path}.tmp.npz", path)
        preemption.stop_if_requested(f"{path} written; the same command makes it again with the maps and summary")
        if config.plots:
            from jax_supcon.report import plots as report_plots

            plots = report_plots.embedding_maps(
                arrays["encoder"],
                arrays["labels"],
                os.path.join(workdir, report_plots.PLOTS_DIR),
                name=f"{config.embed_split}_encoder",
                seed=config.seed,
            )
    summary = {
        "job": "embed",
        "embeddings": path,
        "split": config.embed_split,
        "examples": int(arrays["labels"].shape[0]),
        "encoder_dim": int(arrays["encoder"].shape[1]),
        "projection_dim": int(arrays["projection"].shape[1]),
        "pretrained_workdir": os.path.abspath(config.pretrained_workdir),
        "pretrained_step": step,
        "devices": mesh.size,
        **_retrieval_summary(arrays, config, pre_config),
    }
    return run_dir.finish_run(workdir, config, summary, [], plots)


def _retrieval_summary(arrays: dict, config: ml_collections.ConfigDict, pre_config) -> dict:
    """`encoder/<metric>` of the split, or of its held-out classes when stage 1 had some."""
    recall_at = tuple(config.eval.recall_at)
    seen = pre_config.data.get("class_ids")
    if not seen:
        retrieval = retrieval_metrics(arrays["encoder"], arrays["labels"], seed=config.seed, recall_at=recall_at)
        return {f"encoder/{name}": value for name, value in retrieval.items()}
    rows = ~np.isin(arrays["labels"], np.asarray(seen))
    if not rows.any():
        return {"held_out_classes": 0}
    metrics = validation.open_set_metrics(
        {"encoder": arrays["encoder"][rows], "labels": arrays["labels"][rows]},
        recall_at=recall_at,
        gallery_fraction=config.eval.gallery_fraction,
        seed=config.seed,
        spaces={"encoder": "encoder"},
    )
    return {
        "held_out_classes": int(len(np.unique(arrays["labels"][rows]))),
        "held_out_examples": int(rows.sum()),
        **{name.removeprefix("val/"): value for name, value in metrics.items()},
    }
