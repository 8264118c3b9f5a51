"""Stage 1 as the later stages and tools see it: the stage-1 model, optimizer and initial state
built from a config (what pretraining trains and what a restore fills), and a stage-1 run
restored from its workdir at a chosen checkpoint, with its encoder's variables.

A stage-2 run pins the stage-1 checkpoint it starts from (`PIN_FILE` in its workdir: the step and
a fingerprint of the checkpoint's files) and uses that same checkpoint on every resume and re-run,
whatever stage 1 did meanwhile, so a classifier is never trained or scored on two encoders.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jax_supcon import models, optim
from jax_supcon.checkpoint import Checkpointer, checkpoint_directory
from jax_supcon.config.validate import check_pretrained_workdir
from jax_supcon.models import weights
from jax_supcon.train import queue as feature_queue
from jax_supcon.train import state as train_state
from jax_supcon.train.lock import running_holder
from jax_supcon.train.workdir import SUMMARY_FILE, MetricLogger, load_config, write_json

PIN_FILE = "pretrained.json"


def probe_classes(config: ml_collections.ConfigDict) -> int:
    """Classes of the online probe when `online_probe` (else 0): the training classes the run
    recorded (`data.class_ids` when classes were held out, else `data.num_classes`)."""
    if not config.get("online_probe", False):
        return 0
    if config.data.get("class_ids"):
        return len(config.data.class_ids)
    if not config.data.num_classes:
        raise ValueError("online_probe=True needs data.num_classes (set from the training data by the run)")
    return int(config.data.num_classes)


def build(config: ml_collections.ConfigDict, total_steps: int, warmup_steps: int):
    """(model, tx, schedule, init) of a stage-1 run: encoder + projection head (+ online probe),
    its optimizer and schedule, and the initial-state function (`state.init_state_fn`)."""
    model = models.create_contrastive_model(config.model, probe_classes(config))
    tx, schedule = optim.create_optimizer(config.optimizer, total_steps, warmup_steps, config.batch_size)
    size = config.data.image_size
    queue_size = config.loss.get("queue_size", 0)
    init = train_state.init_state_fn(
        lambda rng: model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32), train=False),
        tx,
        config.seed,
        ema=config.get("ema_decay", 0.0) > 0,
        queue=functools.partial(feature_queue.init_queue, queue_size, config.model.proj_dim),
        momentum=config.model.get("momentum", 0.0) > 0,
    )
    return model, tx, schedule, init


def encoder_importer(model_config: ml_collections.ConfigDict, target: train_state.TrainState):
    """For `restore_or_init(initial_encoder=...)`: a function reading `model.init_from` (a
    torchvision/timm ResNet state dict) into the encoder variables of `target`'s shapes, or None
    when the run starts from random weights."""
    path = model_config.get("init_from", "")
    if not path:
        return None
    template = {"params": target.params["encoder"], "batch_stats": target.batch_stats.get("encoder", {})}
    return lambda: weights.encoder_from_state_dict(weights.read_state_dict(path), template, source=path)


def restore_pretrained(pretrained_workdir: str, mesh: Mesh, which: str = "latest"):
    """(stage-1 config, model, state, step) at checkpoint `which` (latest, best or a step)."""
    check_pretrained_workdir(pretrained_workdir)
    pre_config = load_config(pretrained_workdir)
    if pre_config.get("job") != "pretrain":
        raise ValueError(
            f"pretrained_workdir={pretrained_workdir!r} holds a {pre_config.get('job')!r} run, not a stage-1 "
            "(pretrain) run: point it at the workdir of jax-supcon --config=configs/..._supcon.py"
        )
    checkpointer = Checkpointer(pretrained_workdir, create=False)
    if checkpointer.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}: run stage 1 there first")
    records = MetricLogger.read_records(pretrained_workdir)
    model, _, _, init = build(pre_config, total_steps=1, warmup_steps=0)
    target = train_state.abstract_state(init, mesh)
    state, step = checkpointer.restore_selected(which, records, pre_config.get("best_metric"), lambda _: target)
    checkpointer.close()
    return pre_config, model, state, step


def unfinished_note(pretrained_workdir: str, step: int) -> str:
    """The line a stage 2 prints when its stage 1 has not finished (no summary yet): still
    training (`lock.running_holder`) or stopped before its last step."""
    holder = running_holder(pretrained_workdir)
    why = f"is still training ({holder})" if holder else "stopped before its last step"
    return f"the stage-1 run in {pretrained_workdir!r} {why}: using its checkpoint at step {step}, not a finished run's"


def checkpoint_fingerprint(pretrained_workdir: str, step: int) -> str:
    """A hash of checkpoint `step`'s file names, sizes and commit metadata: it changes when the
    checkpoint is rewritten (stage 1 trained again from scratch in the same workdir, say)."""
    root = checkpoint_directory(pretrained_workdir, step)
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(f"{os.path.relpath(path, root)}:{os.path.getsize(path)};".encode())
            if name == "_CHECKPOINT_METADATA":  # holds the commit time of the save
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:16]


def restore_pinned(workdir: str, pretrained_workdir: str, mesh: Mesh, which: str = "latest"):
    """`restore_pretrained` at the checkpoint the stage-2 run in `workdir` was first started from
    (`which` resolved then), plus the pin to record with `write_pin` (a new run's) or None. A pinned
    checkpoint that is gone or rewritten is a one-line error."""
    pin_path = os.path.join(workdir, PIN_FILE)
    if not os.path.exists(pin_path):
        finished = os.path.exists(os.path.join(pretrained_workdir, SUMMARY_FILE))  # before a checkpoint is read
        pre_config, model, state, step = restore_pretrained(pretrained_workdir, mesh, which)
        pin = {
            "step": step,
            "fingerprint": checkpoint_fingerprint(pretrained_workdir, step),
            "asked": which,
            "stage1_finished": finished,
        }
        if not finished and jax.process_index() == 0:
            print(f"jax-supcon: note: {unfinished_note(pretrained_workdir, step)}", file=sys.stderr, flush=True)
        return pre_config, model, state, step, pin
    with open(pin_path) as f:
        pin = json.load(f)
    step = int(pin["step"])
    where = f"the stage-1 checkpoint this run started from (step {step} of {pretrained_workdir!r})"
    if not os.path.isdir(checkpoint_directory(pretrained_workdir, step)):
        raise ValueError(f"{where} is gone; pick a new --workdir to evaluate another checkpoint")
    if checkpoint_fingerprint(pretrained_workdir, step) != pin["fingerprint"]:
        raise ValueError(f"{where} has been rewritten since; pick a new --workdir to evaluate it")
    return (*restore_pretrained(pretrained_workdir, mesh, str(step)), None)


def write_pin(workdir: str, pin: dict | None) -> None:
    """Record a new stage-2 run's stage-1 checkpoint (after its config is recorded); None: nothing to do."""
    if pin is not None:
        write_json(os.path.join(workdir, PIN_FILE), pin)


def inherit_pretrained(config: ml_collections.ConfigDict, pre_config: ml_collections.ConfigDict):
    """A copy of a stage-2 config with stage 1's model and input normalisation, so stage 2 sees
    the images the encoder was trained on. A different image size is an error, not a silent
    change, except for a ViT: its position embeddings are interpolated to the new patch grid."""
    size = config.data.image_size
    if models.is_vit(pre_config.model) and size != pre_config.data.image_size:
        models.validate_model_config(pre_config.model, size)
    elif size != pre_config.data.image_size:
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


def check_same_validation(config: ml_collections.ConfigDict, pre_config: ml_collections.ConfigDict) -> None:
    """A stage-2 training job validates on the images stage 1 kept out of training: a different
    `data.validation_fraction` would validate on images the encoder was trained on (or train on
    stage 1's validation images), so it is a one-line error."""
    own, theirs = config.data.validation_fraction, pre_config.data.get("validation_fraction", 0.0)
    if own != theirs:
        raise ValueError(
            f"data.validation_fraction={own} differs from the pretrained run's {theirs}: stage 2 must validate "
            f"on the images stage 1 kept out of training; set --config.data.validation_fraction={theirs}"
        )


def pretrained_variables(state: train_state.TrainState, pre_config, use_ema: bool = False) -> dict[str, Any]:
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
    return {"params": variables["params"]["encoder"], "batch_stats": variables["batch_stats"].get("encoder", {})}


def restore_encoder(
    pretrained_workdir: str, mesh: Mesh, which: str = "latest", *, use_ema: bool = False
) -> tuple[models.ResNet, dict[str, Any]]:
    """The stage-1 encoder module and its variables from checkpoint `which` of `pretrained_workdir`."""
    pre_config, _, state, _ = restore_pretrained(pretrained_workdir, mesh, which)
    return models.create_encoder(pre_config.model), encoder_variables(pretrained_variables(state, pre_config, use_ema))
