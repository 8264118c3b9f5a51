"""End-to-end jobs on tiny models: pretrain -> linear_eval, resume, refusals, the CLI."""

import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import TINY_CLI, read_metrics, tiny

from jax_supcon import parallel
from jax_supcon.jobs import linear_eval, pretrain
from jax_supcon.train import pretrained as stage_one
from jax_supcon.train.state import jit_train_step as stage_jit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def mesh():
    return parallel.create_mesh(jax.devices()[:2])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One finished tiny stage-1 run (`pretrain_config`'s settings) for the tests that only read it
    or start it again unchanged; built once per module (and test worker)."""
    from configs import digits_supcon

    workdir = str(tmp_path_factory.mktemp("pretrain"))
    pretrain.train_and_evaluate(tiny(digits_supcon.get_config()), workdir, mesh=parallel.create_mesh(jax.devices()[:2]))
    return workdir


def test_pretrain_writes_every_output(pretrained):
    assert sorted(os.listdir(os.path.join(pretrained, "checkpoints"))) == ["2", "3"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(pretrained))
    metrics = read_metrics(pretrained)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(np.isfinite(m["loss"]) and m["loss"] > 0 for m in metrics)
    with open(os.path.join(pretrained, "summary.json")) as f:
        summary = json.load(f)
    assert summary["steps"] == 3 and summary["final_loss"] == metrics[-1]["loss"]
    with open(os.path.join(pretrained, "config.json")) as f:
        assert json.load(f)["job"] == "pretrain"


def test_linear_eval_restores_the_frozen_encoder_and_reports_test_top1(pretrained, linear_config, tmp_path, mesh):
    linear_config.pretrained_workdir = pretrained
    linear_config.total_steps = 5
    summary = linear_eval.train_and_evaluate(linear_config, str(tmp_path), mesh=mesh)
    assert summary["test_examples"] == 360 and 0.0 <= summary["test_top1"] <= 1.0
    encoder, frozen = stage_one.restore_encoder(pretrained, mesh)
    # The encoder is the pretrained one: its weights differ from a fresh initialisation.
    _, _, _, init = stage_one.build(pretrain_config_from(pretrained), 1, 0)
    fresh = init()
    assert not np.allclose(jax.tree.leaves(frozen["params"])[0], jax.tree.leaves(fresh.params["encoder"])[0])
    assert read_metrics(tmp_path)[-1]["test_top1"] == summary["test_top1"]


def pretrain_config_from(workdir):
    from jax_supcon.train.workdir import load_config

    return load_config(workdir)


def test_restart_resumes_from_the_latest_checkpoint_and_runs_are_deterministic(pretrain_config, tmp_path, mesh):
    pretrain_config.optimizer.schedule = "constant"  # the same trajectory whatever total_steps is
    pretrain_config.augment.recipe = "simclr"  # random crops, jitter, blur: every random draw is exercised
    pretrain_config.total_steps = 4
    pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "straight"), mesh=mesh)
    pretrain_config.total_steps = 2
    pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "restarted"), mesh=mesh)
    pretrain_config.total_steps = 4
    pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "restarted"), mesh=mesh)
    straight = read_metrics(tmp_path / "straight")
    restarted = read_metrics(tmp_path / "restarted")
    assert [m["step"] for m in restarted] == [1, 2, 3, 4]
    # Two fresh runs with the same seed and devices: bit-equal losses (then the resumed steps).
    assert [(m["loss"], m["probe_loss"]) for m in restarted[:2]] == [(m["loss"], m["probe_loss"]) for m in straight[:2]]
    np.testing.assert_allclose([m["loss"] for m in restarted], [m["loss"] for m in straight], rtol=1e-5)


def test_finished_run_started_again_does_not_train_more(pretrained, pretrain_config, mesh):
    before = read_metrics(pretrained)
    summary = pretrain.train_and_evaluate(pretrain_config, pretrained, mesh=mesh)
    assert read_metrics(pretrained) == before and summary["final_loss"] == before[-1]["loss"]


def test_a_workdir_of_another_job_or_model_is_refused(pretrained, pretrain_config, linear_config, mesh):
    pretrain_config.model.name = "resnet10"
    with pytest.raises(ValueError, match="holds a run with a different model"):
        pretrain.train_and_evaluate(pretrain_config, pretrained, mesh=mesh)
    linear_config.pretrained_workdir = pretrained
    with pytest.raises(ValueError, match="holds a run with a different job"):
        linear_eval.train_and_evaluate(linear_config, pretrained, mesh=mesh)


def test_linear_eval_without_a_checkpoint_is_a_clear_error(linear_config, tmp_path, mesh):
    linear_config.pretrained_workdir = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        linear_eval.train_and_evaluate(linear_config, str(tmp_path / "linear"), mesh=mesh)
    (tmp_path / "empty").mkdir()
    linear_config.pretrained_workdir = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        linear_eval.train_and_evaluate(linear_config, str(tmp_path / "linear"), mesh=mesh)
    assert not (tmp_path / "linear").exists()


def test_indivisible_batch_fails_before_anything_is_written(pretrain_config, tmp_path):
    pretrain_config.batch_size = 12
    with pytest.raises(ValueError, match=r"batch_size=12 must be a positive multiple of the device count \(8\)"):
        pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def run_cli(*args):
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2")
    return subprocess.run(
        [sys.executable, "-m", "jax_supcon.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_runs_a_config_with_overrides_and_resumes_it(tmp_path):
    args = [
        "--config=configs/digits_supcon.py:simclr",
        f"--workdir={tmp_path}",
        "--config.total_steps=2",
        "--config.model.name=resnet_tiny",
        "--config.model.width=0.125",
        "--config.data.image_size=8",
        "--config.batch_size=16",
        "--config.optimizer.warmup_steps=0",
        "--config.eval_every_steps=0",
        "--config.plots=False",
    ]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    logged = read_metrics(tmp_path)
    assert [m["step"] for m in logged] == [2]
    again = run_cli(*args)  # the same command in the same workdir resumes the finished run
    assert again.returncode == 0, again.stderr[-2000:]
    assert "[pretrain] step" not in again.stdout and read_metrics(tmp_path) == logged
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["steps"] == 2 and summary["devices"] == 2
    assert "[pretrain] step 2/2 (" in result.stdout and "steps/s, ETA 0s): loss=" in result.stdout
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    assert saved["loss"]["name"] == "simclr" and saved["model"]["name"] == "resnet_tiny"


SUPCON = "--config=configs/digits_supcon.py"
LINEAR = "--config=configs/digits_linear.py"
VIT = "--config=configs/digits_vit.py"
BAD_INPUTS = [  # (config file, override, the one line on stderr after "jax-supcon: error: ")
    (SUPCON, "--config.batch_size=0", "batch_size=0 must be > 0"),
    (SUPCON, "--config.batch_size=255", "batch_size=255 must be a positive multiple of the device count (2)"),
    (SUPCON, "--config.batch_size=abc", "flag --config.batch_size=abc: invalid literal for int() with base 10"),
    (SUPCON, "--config.loss.temperature=0", "loss.temperature=0.0 must be > 0"),
    (SUPCON, "--config.optimizer.learning_rate=-0.1", "optimizer.learning_rate=-0.1 must be >= 0"),
    (SUPCON, "--config.model.name=resnet19", "model.name='resnet19'; allowed: ("),
    (SUPCON, "--config.model.dtype=float16", "model.dtype='float16'; allowed: ('float32', 'bfloat16')"),
    (SUPCON, "--config.model.remat=yes", "flag --config.model.remat=yes: ('Non-boolean argument to boolean flag',"),
    (SUPCON, "--config.loss.name=supcn", "loss.name='supcn'; allowed: ('supcon', 'simclr', 'pair', 'triplet', 'multi"),
    (SUPCON, "--config.optimizer.name=adam", "optimizer.name='adam'; allowed: ('sgd', 'lars', 'adamw')"),
    (SUPCON, "--config.optimizer.schedule=poly", "optimizer.schedule='poly'; allowed: ('cosine', 'step', 'constant')"),
    (
        SUPCON,
        "--config.data.name=cifar_10",
        "data.name='cifar_10'; allowed: 'digits', 'mnist5k', 'synthetic', 'folder:PATH' or",
    ),
    (SUPCON, "--config.data.name=folder:/no/such", "data.name='folder:/no/such': '/no/such' does not exist; expected"),
    (SUPCON, "--config.augment.recipe=bol", "augment.recipe='bol'; allowed: ('supcon_cifar', 'simclr', 'byol',"),
    (SUPCON, "--config.lossx.name=foo", 'unknown config key \'lossx\'; Did you mean "loss" instead of "lossx"?'),
    (SUPCON, "--config.ema_decay=1.0", "ema_decay=1.0 must be in [0, 1) (0: no EMA)"),
    (SUPCON, "--config.loss.queue_size=-64", "loss.queue_size=-64 must be >= 0 (0: no queue)"),
    (
        SUPCON,
        "--config.loss.queue_size=1000",
        "loss.queue_size=1000 must be a multiple of the 512 features a step enqueues (batch_size=256 x 2 view(s), "
        "loss.queue_views='all'), e.g. 1024",
    ),
    (SUPCON, "--config.loss.queue_views=two", "loss.queue_views='two'; allowed: ('all', 'one')"),
    (SUPCON, "--config.model.momentum=1.0", "model.momentum=1.0 must be in [0, 1) (0: no momentum encoder)"),
    (SUPCON, "--config.eval_with_ema=True", "eval_with_ema=True needs ema_decay > 0"),
    (SUPCON, "--config.total_steps=0", "the run must have > 0 steps, got 0"),
    (
        VIT,
        "--config.data.image_size=18",
        "data.image_size=18 is not divisible by model.patch_size=4; use a multiple of 4",
    ),
    (VIT, "--config.model.num_heads=5", "model.name='vit_tiny' (width 192): 5 heads do not divide the width 192"),
    (VIT, "--config.model.pool=max", "model.pool='max'; allowed: ('cls', 'gap')"),
    (VIT, "--config.model.drop_path=1.0", "model.drop_path=1.0 must be in [0, 1)"),
    (SUPCON, "--config.optimizer.layer_decay=0.7", "optimizer.layer_decay=0.7 applies to end-to-end training"),
    (SUPCON, "--config.data.label_noise=1.0", "data.label_noise=1.0 must be in [0, 1) (0: clean labels)"),
    (SUPCON, "--config.data.train_fraction=0.0", "data.train_fraction=0.0 must be in (0, 1] (1: every training image)"),
    ("--config=configs/nope.py", "--config.seed=1", "cannot load --config: [Errno 2] No such file or directory"),
    (LINEAR, "--config.seed=1", "linear_eval needs --config.pretrained_workdir=DIR (a stage-1 workdir)"),
    (LINEAR, "--config.pretrained_workdir=/no/such", "pretrained_workdir='/no/such' does not exist"),
    (LINEAR, "--config.pretrained_workdir=EMPTY", "EMPTY/config.json not found: is 'EMPTY' the workdir of a"),
    (LINEAR, "--config.checkpoint=bestest", "checkpoint='bestest'; allowed: 'latest', 'best' or a step number"),
    (
        LINEAR,
        "--config.linear_augment=True",  # the recipe precomputes its features
        "precompute_features=True needs linear_augment=False (augmented views change every step)",
    ),
]


def test_every_bad_input_is_one_line_exit_code_2_and_the_run_in_the_workdir_is_untouched(tmp_path):
    """Each case through the CLI's own flag parsing and `main`, in one process (see cli_errors_worker.py)."""
    workdir, empty = tmp_path / "run", tmp_path / "empty"
    workdir.mkdir()
    empty.mkdir()
    existing = {"config.json": '{"job": "pretrain"}\n', "metrics.jsonl": '{"step": 1, "loss": 3.0}\n'}
    for name, text in existing.items():
        (workdir / name).write_text(text)
    cases = [
        [config, f"--workdir={workdir}", override.replace("EMPTY", str(empty))] for config, override, _ in BAD_INPUTS
    ]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "cli_errors_worker.py")],
        input=json.dumps(cases),
        env=dict(os.environ, JAX_NUM_CPU_DEVICES="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    for (_, override, message), outcome in zip(BAD_INPUTS, outcomes, strict=True):
        lines = outcome["stderr"].splitlines()
        expected = "jax-supcon: error: " + message.replace("EMPTY", str(empty))
        assert outcome["code"] == 2 and len(lines) == 1 and lines[0].startswith(expected), (override, outcome)
    assert sorted(os.listdir(workdir)) == sorted(existing)
    assert all((workdir / name).read_text() == text for name, text in existing.items())
    assert not os.listdir(empty)


def test_batch_larger_than_the_data_fails_before_anything_is_written(pretrain_config, tmp_path, mesh):
    pretrain_config.batch_size = 2048
    with pytest.raises(ValueError, match=r"batch_size=2048 is larger than the training split \(1437 examples\)"):
        pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "run"), mesh=mesh)
    assert not (tmp_path / "run").exists()


def test_a_run_killed_between_log_and_checkpoint_logs_each_step_once(pretrain_config, tmp_path, mesh):
    pretrain_config.optimizer.schedule = "constant"
    workdir = tmp_path / "run"
    pretrain.train_and_evaluate(pretrain_config, str(workdir), mesh=mesh)  # checkpoints at 2 and 3
    straight = read_metrics(workdir)
    shutil.rmtree(workdir / "checkpoints" / "3")  # as if killed after logging step 3, before saving it
    pretrain.train_and_evaluate(pretrain_config, str(workdir), mesh=mesh)
    resumed = read_metrics(workdir)
    assert [m["step"] for m in resumed] == [1, 2, 3]
    np.testing.assert_allclose([m["loss"] for m in resumed], [m["loss"] for m in straight], rtol=1e-5)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.head", "mlpp", "model.head='mlpp'; allowed: ('mlp', 'linear')"),
        ("model.name", "resnet19", "model.name='resnet19'; allowed: ("),
        ("optimizer.name", "adam", "optimizer.name='adam'; allowed: ('sgd', 'lars', 'adamw')"),
        ("best_metric", "val/encoder/knn", "best_metric='val/encoder/knn'; allowed: '', 'auto' or one of ("),
        ("eval_every_steps", -1, "eval_every_steps=-1 must be >= 0"),
    ],
)
def test_a_typo_fails_before_the_workdir_is_touched(pretrain_config, tmp_path, mesh, key, value, message):
    section, _, name = key.rpartition(".")
    target = pretrain_config[section] if section else pretrain_config
    target[name] = value
    if key == "best_metric":
        pretrain_config.eval_every_steps = 2
    with pytest.raises(ValueError, match=re.escape(message)):
        pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "run"), mesh=mesh)
    assert not (tmp_path / "run").exists()


def test_resuming_with_other_settings_is_refused_but_longer_training_is_allowed(pretrain_config, tmp_path, mesh):
    workdir = str(tmp_path / "run")
    pretrain.train_and_evaluate(pretrain_config, workdir, mesh=mesh)
    with open(os.path.join(workdir, "config.json")) as f:
        before = f.read()
    recorded = pretrain_config.loss.temperature
    pretrain_config.loss.temperature = 2 * recorded
    with pytest.raises(ValueError, match="holds a run with a different loss"):
        pretrain.train_and_evaluate(pretrain_config, workdir, mesh=mesh)
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == before  # the refused start changed nothing
    pretrain_config.loss.temperature = recorded
    pretrain_config.total_steps = 4
    assert pretrain.train_and_evaluate(pretrain_config, workdir, mesh=mesh)["steps"] == 4


def test_stage_two_takes_the_pretrained_model_and_refuses_another_image_size(pretrained, linear_config, tmp_path, mesh):
    linear_config.pretrained_workdir = pretrained
    linear_config.model.width = 1.0  # the recipe's own model block must not matter
    summary = linear_eval.train_and_evaluate(linear_config, str(tmp_path / "linear"), mesh=mesh)
    assert summary["pretrained_step"] == 3
    with open(tmp_path / "linear" / "config.json") as f:
        assert json.load(f)["model"]["width"] == 0.125
    with open(tmp_path / "linear" / "report.md") as f:
        assert "resnet_tiny (width 0.125" in f.read()
    linear_config.data.image_size = 16
    with pytest.raises(ValueError, match=r"data.image_size=16 differs from the pretrained run's 8"):
        linear_eval.train_and_evaluate(linear_config, str(tmp_path / "other"), mesh=mesh)
    assert not (tmp_path / "other").exists()


def test_mock_cifar10_and_imagenet_train_end_to_end(pretrain_config, linear_config, tmp_path, mesh):
    """tfds data sets under mock data, into real training steps: CIFAR-10 (fixed 32x32, resized on
    the host, cropped on device) and ImageNet (JPEGs of varying size, two views cropped on the
    host), then stage 2 on ImageNet with host-cropped single views."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=32):
        cifar = pretrain_config.copy_and_resolve_references()
        cifar.data.name = "cifar10"
        cifar.total_steps = 2
        summary = pretrain.train_and_evaluate(cifar, str(tmp_path / "cifar"), mesh=mesh)
        assert np.isfinite(summary["final_loss"])
        imagenet = pretrain_config.copy_and_resolve_references()
        imagenet.data.name = "imagenet2012"
        imagenet.data.eval_split = "validation"
        imagenet.total_steps = 2
        summary = pretrain.train_and_evaluate(imagenet, str(tmp_path / "imagenet"), mesh=mesh)
        assert np.isfinite(summary["final_loss"])
        linear_config.data = imagenet.data
        linear_config.pretrained_workdir = str(tmp_path / "imagenet")
        linear_config.total_steps = 2
        summary = linear_eval.train_and_evaluate(linear_config, str(tmp_path / "linear"), mesh=mesh)
        assert summary["test_examples"] == 32 and 0 <= summary["test_top1"] <= 1


def test_supervised_baseline_trains_end_to_end_and_resumes(tmp_path, mesh):
    from conftest import tiny

    from configs import digits_ce
    from jax_supcon.jobs import supervised

    config = tiny(digits_ce.get_config())
    config.total_steps = 2
    config.update(dict(ema_decay=0.9, eval_with_ema=True))  # the test accuracy of the EMA weights
    supervised.train_and_evaluate(config, str(tmp_path), mesh=mesh)
    config.total_steps = 4  # train longer in the same workdir: resumes from step 2
    summary = supervised.train_and_evaluate(config, str(tmp_path), mesh=mesh)
    assert summary["job"] == "supervised" and summary["test_examples"] == 360
    assert 0 <= summary["test_top1"] <= summary["test_top5"] <= 1
    logged = read_metrics(tmp_path)
    assert [m["step"] for m in logged if "loss" in m] == [1, 2, 3, 4]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_class_balance_and_seed_errors_come_before_the_workdir(pretrain_config, tmp_path, mesh):
    pretrain_config.batch_size = 64
    pretrain_config.data.samples_per_class = 2
    with pytest.raises(ValueError, match="needs 32 classes per batch; 'digits' has 10"):
        pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "run"), mesh=mesh)
    assert not (tmp_path / "run").exists()
    pretrain_config.data.samples_per_class = 0
    pretrain_config.seed = -1
    with pytest.raises(ValueError, match=r"seed=-1 must be in \[0, 2\*\*31\)"):
        pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "run"), mesh=mesh)


def test_resume_ignores_recipe_values_set_explicitly_and_operational_data_keys(pretrain_config, tmp_path, mesh):
    pretrain_config.total_steps = 2
    pretrain.train_and_evaluate(pretrain_config, str(tmp_path), mesh=mesh)
    pretrain_config.total_steps = 3
    pretrain_config.augment.hue = 0.1  # what the recipe gives anyway
    pretrain_config.data.prefetch_to_device = 3
    pretrain.train_and_evaluate(pretrain_config, str(tmp_path), mesh=mesh)
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3]
    pretrain_config.augment.view2.blur_prob = 0.5
    with pytest.raises(ValueError, match=r"different augment\[view 2\].blur_prob \(0.0 vs 0.5\)"):
        pretrain.train_and_evaluate(pretrain_config, str(tmp_path), mesh=mesh)


def test_a_diverged_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    args = [
        *TINY_CLI,
        f"--workdir={tmp_path}",
        "--config.total_steps=6",
        "--config.log_every_steps=3",
        "--config.checkpoint_every_steps=1",
        "--config.optimizer.learning_rate=1e38",  # the first update overflows the weights (at T 0.1)
        "--config.loss.temperature=0.1",
    ]
    result = run_cli(*args)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    # The update of step 1 overflows the weights: step 1 is the first bad step and is not saved.
    assert re.fullmatch(
        r"jax-supcon: stopped: the parameters are not finite \(loss \S+\) at step 1; stopped\. "
        r"No checkpoint was saved before it .*",
        last,
    ), last
    assert not os.listdir(tmp_path / "checkpoints")


def test_a_step_whose_update_is_not_finite_is_never_saved(pretrain_config, tmp_path, mesh):
    """At lr 1e12 the loss of step 2 is still finite, but its update turns the parameters to NaN:
    the run stops there, and every checkpoint it leaves holds finite arrays only."""
    from jax_supcon.checkpoint import Checkpointer, abstract_target
    from jax_supcon.train.loop import TrainingDiverged

    pretrain_config.optimizer.learning_rate = 1e12
    pretrain_config.total_steps = 12
    pretrain_config.checkpoint_every_steps = 1
    pretrain_config.log_every_steps = 3
    message = (
        r"the parameters are not finite \(loss [0-9.]+\) at step 2; stopped\. "
        r"The last good checkpoint is step 1 \(check the data, or lower the learning rate in a new --workdir\)"
    )
    with pytest.raises(TrainingDiverged, match=message):
        pretrain.train_and_evaluate(pretrain_config, str(tmp_path), mesh=mesh)
    checkpointer = Checkpointer(str(tmp_path), create=False)
    assert checkpointer.all_steps() == [1]
    state = checkpointer.restore(abstract_target(checkpointer.metadata(1), parallel.replicated(mesh)), 1)
    checkpointer.close()
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state) if np.issubdtype(leaf.dtype, np.floating))
    assert not (tmp_path / "metrics.jsonl").exists()  # the divergence came before the first log step


def _damage(step_dir, how: str) -> None:
    """Break one checkpoint as a full disk, a bad copy or a careless clean-up would."""
    default = step_dir / "default"
    if how == "truncated":
        chunks = [p for p in default.rglob("*") if p.is_file() and p.parent.name == "d"]  # d/, ocdbt.process_0/d/
        data = max(chunks, key=lambda p: p.stat().st_size)
        data.write_bytes(data.read_bytes()[:10])
    elif how == "data_deleted":
        shutil.rmtree(default / "d")
    else:
        (default / "_METADATA").unlink()


def test_damaged_checkpoints_are_set_aside_and_the_run_resumes_from_the_newest_readable_one(
    pretrain_config, tmp_path, mesh, capfd, monkeypatch
):
    """Checkpoints 4, 3 and 2 broken three ways: the run names each, sets it aside and resumes from
    step 1 with the losses of an uninterrupted run; a shorter run, and a run with no readable
    checkpoint left, are refused without touching anything."""
    pretrain_config.checkpoint_every_steps = 1
    pretrain_config.keep_checkpoints = 10
    pretrain_config.optimizer.schedule = "constant"  # the same rates whatever total_steps says
    pretrain_config.total_steps = 5
    pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "whole"), mesh=mesh)
    run = tmp_path / "run"
    pretrain_config.total_steps = 4
    pretrain.train_and_evaluate(pretrain_config, str(run), mesh=mesh)
    recorded = (run / "config.json").read_text()
    pretrain_config.total_steps = 3
    with pytest.raises(ValueError, match=r"total_steps=3 is below the step of the run's latest checkpoint \(4\)"):
        pretrain.train_and_evaluate(pretrain_config, str(run), mesh=mesh)
    assert (run / "config.json").read_text() == recorded
    damage = {4: "truncated", 3: "data_deleted", 2: "metadata_deleted"}
    for step, how in damage.items():
        _damage(run / "checkpoints" / str(step), how)
    capfd.readouterr()
    pretrain_config.total_steps = 5
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's own: print to stderr
    pretrain.train_and_evaluate(pretrain_config, str(run), mesh=mesh)
    gc.collect()  # orbax's abandoned reads, if still reported, print when collected
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 3, lines
    for line, step in zip(lines, damage, strict=True):
        assert re.fullmatch(
            rf"jax-supcon: checkpoint {step} is unreadable \(\w+: .+\); moved to .*checkpoints/{step}\.damaged, "
            r"resuming from step 1",
            line,
        ), line
    assert sorted(os.listdir(run / "checkpoints")) == ["1", "2", "2.damaged", "3", "3.damaged", "4", "4.damaged", "5"]
    whole, resumed = read_metrics(tmp_path / "whole"), read_metrics(run)
    assert [m["step"] for m in resumed] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([m["loss"] for m in resumed], [m["loss"] for m in whole], rtol=1e-6)
    for step in range(1, 6):
        _damage(run / "checkpoints" / str(step), "metadata_deleted")
    recorded = (run / "config.json").read_text()
    pretrain_config.total_steps = 6
    with pytest.raises(ValueError, match=r"no readable checkpoint in .*: step 5 \(.+\) and 4 older; nothing was"):
        pretrain.train_and_evaluate(pretrain_config, str(run), mesh=mesh)
    assert "5.damaged" not in os.listdir(run / "checkpoints") and "1.damaged" not in os.listdir(run / "checkpoints")
    assert (run / "config.json").read_text() == recorded


def test_one_run_per_workdir_a_stale_lock_is_taken_over_and_unusable_workdirs_are_one_line(
    pretrain_config, tmp_path, mesh, monkeypatch
):
    from jax_supcon.train import lock

    with monkeypatch.context() as patch:  # another run creates the workdir between our check and makedirs
        made = os.makedirs

        def raced(path, *args, **kwargs):
            made(path)
            raise FileExistsError(17, "File exists", path)

        patch.setattr(lock.os, "makedirs", raced)
        assert lock.make_workdir(str(tmp_path / "raced")) is False  # ours to share, the lock decides

    pretrain_config.total_steps = 1
    with lock.exclusive(str(tmp_path / "run")):
        holder = f"host {socket.gethostname()} pid {os.getpid()}"
        with pytest.raises(ValueError, match=rf"workdir '.*run' is in use by {holder} \(since .*\); wait for"):
            pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "run"), mesh=mesh)
        assert os.listdir(tmp_path / "run") == [".lock"]  # the holder's run is untouched
    assert not (tmp_path / "run").exists()  # created for nothing, so removed again
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text("host elsewhere pid 1 (a run that was killed)")  # not flocked: stale
    pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "run"), mesh=mesh)
    assert not (tmp_path / "run" / ".lock").exists() and (tmp_path / "run" / "summary.json").exists()
    (tmp_path / "file").write_text("")
    for workdir, why in ((tmp_path / "file", "File exists"), (tmp_path / "file" / "run", "Not a directory")):
        with pytest.raises(ValueError, match=rf"--workdir='{workdir}' cannot be created: {why}$"):
            pretrain.train_and_evaluate(pretrain_config, str(workdir), mesh=mesh)


def test_a_full_disk_is_one_line_at_the_start_and_mid_run_and_the_run_resumes(
    pretrain_config, tmp_path, mesh, monkeypatch
):
    from jax_supcon import checkpoint

    pretrain_config.update(dict(total_steps=3, checkpoint_every_steps=1))
    pretrain_config.augment.recipe = "none"
    run = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "free_bytes", lambda path: 1000)
    with pytest.raises(ValueError, match=r"no space for a checkpoint in .*: 0.0 MiB free, a checkpoint of this run"):
        pretrain.train_and_evaluate(pretrain_config, str(run), mesh=mesh)
    assert not run.exists()  # refused before anything was compiled or written
    saves = []  # room for one checkpoint only

    def room_for_one(path):
        saves.append(path)
        return 10**12 if len(saves) <= 2 else 1000  # the start's check and the first save

    monkeypatch.setattr(checkpoint, "free_bytes", room_for_one)
    with pytest.raises(ValueError, match=r"no space for checkpoint 2 in .*; the newest checkpoint is step 1\. Free"):
        pretrain.train_and_evaluate(pretrain_config, str(run), mesh=mesh)
    assert os.listdir(run / "checkpoints") == ["1"]
    monkeypatch.setattr(checkpoint, "free_bytes", lambda path: 10**12)
    assert pretrain.train_and_evaluate(pretrain_config, str(run), mesh=mesh)["steps"] == 3
    assert [m["step"] for m in read_metrics(run) if "loss" in m] == [1, 2, 3]

    class FullDisk:  # the disk filled up under orbax's writer threads
        def wait_until_finished(self):
            raise ValueError('RESOURCE_EXHAUSTED: Error writing "params": No space left on device [28]\n...')

        def latest_step(self):
            return 3

    saver = checkpoint.Checkpointer(str(run))
    real, saver._manager = saver._manager, FullDisk()
    with pytest.raises(ValueError, match=r"^no space left on device writing a checkpoint in .*; the newest checkpoint"):
        saver.wait()
    real.close()


def test_two_runs_started_together_in_one_workdir_leave_one_run(tmp_path):
    args = [*TINY_CLI, f"--workdir={tmp_path / 'run'}", "--config.total_steps=4", "--config.log_every_steps=1"]
    procs = [start_cli(args, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(proc.wait(timeout=300), proc.stderr.read()) for proc in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert re.search(r"jax-supcon: error: workdir '.*run' is in use by host \S+ pid \d+", refused), refused
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]
    assert os.listdir(tmp_path / "run" / "checkpoints") == ["4"]


def test_stage_two_keeps_the_stage_one_checkpoint_it_started_from(pretrain_config, linear_config, tmp_path, mesh):
    stage_one, linear = str(tmp_path / "one"), str(tmp_path / "linear")
    pretrain_config.checkpoint_every_steps = 1
    pretrain_config.keep_checkpoints = 10
    pretrain_config.total_steps = 2
    pretrain.train_and_evaluate(pretrain_config, stage_one, mesh=mesh)
    linear_config.pretrained_workdir = stage_one
    linear_config.total_steps = 1
    linear_eval.train_and_evaluate(linear_config, linear, mesh=mesh)  # pins "latest": step 2
    pretrain_config.total_steps = 4
    pretrain.train_and_evaluate(pretrain_config, stage_one, mesh=mesh)  # stage 1 moves on to step 4
    linear_config.total_steps = 2
    resumed = linear_eval.train_and_evaluate(linear_config, linear, mesh=mesh)
    assert resumed["pretrained_step"] == 2
    again = linear_eval.train_and_evaluate(linear_config, linear, mesh=mesh)  # finished: reported, not re-scored
    assert again == resumed
    assert sum("test_top1" in record for record in read_metrics(linear)) == 2  # one per finished length (1, 2)
    shutil.rmtree(tmp_path / "one" / "checkpoints" / "2")
    linear_config.total_steps = 3
    with pytest.raises(ValueError, match=r"the stage-1 checkpoint this run started from \(step 2 of .*\) is gone"):
        linear_eval.train_and_evaluate(linear_config, linear, mesh=mesh)
    linear_config.pretrained_workdir = linear
    with pytest.raises(ValueError, match=r"holds a 'linear_eval' run, not a stage-1 \(pretrain\) run"):
        linear_eval.train_and_evaluate(linear_config, str(tmp_path / "other"), mesh=mesh)


def start_cli(args: list[str], stderr) -> subprocess.Popen:
    """The CLI on 2 CPU devices as a child process whose console lines the test reads as they come."""
    return subprocess.Popen(
        [sys.executable, "-m", "jax_supcon.main", *args],
        cwd=ROOT,
        env=dict(os.environ, JAX_NUM_CPU_DEVICES="2"),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def test_sigterm_in_the_step_loop_saves_a_checkpoint_and_the_cli_exits_zero(tmp_path):
    args = [
        *TINY_CLI,
        f"--workdir={tmp_path}",
        "--config.total_steps=500",
        "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=1000",
    ]
    proc = start_cli(args, stderr=subprocess.PIPE)
    for line in proc.stdout:
        if line.startswith("[pretrain] step 3/"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    saved = re.search(r"SIGTERM: saved a checkpoint at step (\d+) of 500", err)
    assert saved, err[-2000:]
    step = int(saved.group(1))
    assert os.listdir(tmp_path / "checkpoints") == [str(step)]  # resuming from it: the test below


def _sigterm_first(fn, *, on_call: int = 1):
    """`fn` that sends this process SIGTERM at its `on_call`-th call, then does its work."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == on_call:
            os.kill(os.getpid(), signal.SIGTERM)
        return fn(*args, **kwargs)

    return wrapped


def test_sigterm_outside_the_step_loop_stops_cleanly_and_never_loses_the_summary(
    pretrain_config, tmp_path, mesh, monkeypatch
):
    """SIGTERM at start-up, during the first step's compilation, in the last step and during the
    final embedding: `Preempted` (exit 0 in the CLI) with what could be saved, or the finished run."""
    from jax_supcon.evaluate import embeddings
    from jax_supcon.train import inputs, loop

    pretrain_config.plots = True
    pretrain_config.augment.recipe = "none"
    workdir = tmp_path / "run"
    with monkeypatch.context() as patch:  # start-up (data loading): nothing to save
        patch.setattr(inputs, "load_training_data", _sigterm_first(inputs.load_training_data))
        with pytest.raises(loop.Preempted, match="before the first step of this start; the run is at step 0 of 3"):
            pretrain.train_and_evaluate(pretrain_config, str(workdir), mesh=mesh)
    assert not list(workdir.glob("checkpoints/*"))
    with monkeypatch.context() as patch:  # the first call compiles the step: step 1 is saved
        patch.setattr(pretrain, "jit_train_step", lambda *a, **k: _sigterm_first(stage_jit(*a, **k)))
        with pytest.raises(loop.Preempted, match="saved a checkpoint at step 1 of 3"):
            pretrain.train_and_evaluate(pretrain_config, str(workdir), mesh=mesh)
    assert os.listdir(workdir / "checkpoints") == ["1"]
    with monkeypatch.context() as patch:  # the last step: saved, and the final phase is left to the next start
        patch.setattr(pretrain, "jit_train_step", lambda *a, **k: _sigterm_first(stage_jit(*a, **k), on_call=2))
        with pytest.raises(loop.Preempted, match="training finished and saved at step 3; the final evaluation"):
            pretrain.train_and_evaluate(pretrain_config, str(workdir), mesh=mesh)
    assert "3" in os.listdir(workdir / "checkpoints") and not (workdir / "summary.json").exists()
    with monkeypatch.context() as patch:  # during the final embedding: the run finishes its summary
        patch.setattr(embeddings, "compute_embeddings", _sigterm_first(embeddings.compute_embeddings))
        summary = pretrain.train_and_evaluate(pretrain_config, str(workdir), mesh=mesh)
    assert summary["steps"] == 3 and (workdir / "summary.json").exists() and (workdir / "report.md").exists()
    assert (workdir / "plots" / "test_encoder_pca.png").exists()
    assert [m["step"] for m in read_metrics(workdir) if "loss" in m] == [1, 2, 3]


@pytest.mark.parametrize("queue", [[], ["--config.loss.queue_size=64"]], ids=["plain", "with_a_feature_queue"])
def test_sigkill_and_the_same_command_again_log_the_losses_of_an_uninterrupted_run(tmp_path, queue):
    args = [
        *TINY_CLI,
        *queue,  # 2 steps fill it: checkpoint 4 holds a full queue that step 5 must see again
        "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=2",
        "--config.optimizer.schedule=constant",
    ]
    killed = [*args, f"--workdir={tmp_path / 'killed'}", "--config.total_steps=8"]
    proc = start_cli(killed, stderr=subprocess.DEVNULL)
    for line in proc.stdout:
        if line.startswith("[pretrain] step 5/"):
            proc.kill()  # SIGKILL: no handler runs, a save may be half-written
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = read_metrics(tmp_path / "killed")  # steps 1-5 of the uninterrupted trajectory; checkpoint 4
    assert [m["step"] for m in before] == [1, 2, 3, 4, 5]
    again = run_cli(*killed)  # the same command
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = read_metrics(tmp_path / "killed")
    assert [m["step"] for m in resumed] == list(range(1, 9))  # each step logged once
    # Step 5 again from checkpoint 4: the loss the killed run logged (more resumed steps: the test above)
    np.testing.assert_allclose([m["loss"] for m in resumed[:5]], [m["loss"] for m in before], rtol=1e-6)


def test_online_probe_and_ema_in_pretraining_then_linear_eval_of_the_ema_encoder(
    pretrain_config, linear_config, tmp_path, mesh
):
    pretrain_config.update(dict(ema_decay=0.9, eval_with_ema=True, eval_every_steps=3, best_metric="val/probe_top1"))
    workdir = str(tmp_path / "pre")
    summary = pretrain.train_and_evaluate(pretrain_config, workdir, mesh=mesh)
    logged = read_metrics(workdir)
    assert all({"probe_loss", "probe_top1"} <= set(r) for r in logged if "loss" in r)
    assert 0 <= summary["val/probe_top1"] <= 1 and "val/encoder/knn_top1" in summary
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["data"]["num_classes"] == 10  # recorded: the probe's size, for restoring
    with open(os.path.join(workdir, "parameters.txt")) as f:
        table = f.read()
    assert "probe/linear/kernel" in table and "encoder/" in table

    _, _, state, _ = stage_one.restore_pretrained(workdir, mesh, "best")
    trained, averaged = state.params["encoder"], state.ema["params"]["encoder"]
    assert state.params["probe"]["linear"]["kernel"].shape == (16, 10)
    assert not np.allclose(jax.tree.leaves(trained)[0], jax.tree.leaves(averaged)[0])
    _, frozen = stage_one.restore_encoder(workdir, mesh, use_ema=True)
    np.testing.assert_array_equal(jax.tree.leaves(frozen["params"])[0], jax.tree.leaves(averaged)[0])

    # Precomputed features train the same classifier as features computed every step.
    linear_config.update(dict(pretrained_workdir=workdir, pretrained_ema=True, linear_augment=False, total_steps=4))
    on_the_fly = linear_eval.train_and_evaluate(linear_config, str(tmp_path / "lin"), mesh=mesh)
    linear_config.precompute_features = True
    precomputed = linear_eval.train_and_evaluate(linear_config, str(tmp_path / "lin_pre"), mesh=mesh)
    np.testing.assert_allclose(
        [r["loss"] for r in read_metrics(tmp_path / "lin_pre") if "loss" in r],
        [r["loss"] for r in read_metrics(tmp_path / "lin") if "loss" in r],
        rtol=1e-4,
    )
    assert precomputed["test_top1"] == on_the_fly["test_top1"] and precomputed["pretrained_weights"] == "ema"
    assert 0 <= on_the_fly["test_top1"] <= on_the_fly["test_top5"] <= 1

    without_ema = state.replace(ema={})
    with pytest.raises(ValueError, match=r"pretrained_ema=True, but the stage-1 run kept no EMA weights"):
        stage_one.pretrained_variables(without_ema, pretrain_config_from(workdir), use_ema=True)


def test_a_bfloat16_step_is_finite_and_close_to_float32(pretrain_config, mesh):
    import functools

    from jax_supcon.train import state as common

    pretrain_config.augment.recipe = "none"
    pretrain_config.data.num_classes = 10
    rng = np.random.default_rng(0)
    batch = parallel.to_global(
        {
            "image": rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8),
            "label": rng.integers(0, 4, 16).astype(np.int32),
        },
        mesh,
    )
    results = {}
    for dtype in ("float32", "bfloat16"):
        pretrain_config.model.dtype = dtype
        model, tx, schedule, init = stage_one.build(pretrain_config, 10, 0)
        state = common.init_state(init, common.abstract_state(init, mesh))
        step = common.jit_train_step(
            functools.partial(
                pretrain.pretrain_step, model=model, tx=tx, schedule=schedule, config=pretrain_config, mesh=mesh
            ),
            common.state_shardings(state),
            mesh,
        )
        before = jax.device_get(state.params)  # the same float32 initialisation for both dtypes
        new_state, metrics = step(state, batch)
        after = jax.device_get(new_state.params)
        assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(after))  # parameters stay float32
        update = np.concatenate(
            [np.ravel(a - b) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before), strict=True)]
        )
        results[dtype] = (jax.device_get(metrics), update)
    (m32, u32), (m16, u16) = results["float32"], results["bfloat16"]
    assert np.isfinite(m16["loss"]) and np.isfinite(m16["grad_norm"]) and np.all(np.isfinite(u16))
    np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=2e-2)
    np.testing.assert_allclose(m16["grad_norm"], m32["grad_norm"], rtol=0.1)
    cosine = u16 @ u32 / (np.linalg.norm(u16) * np.linalg.norm(u32))
    assert cosine > 0.98, cosine  # the bfloat16 step moves the weights the way the float32 step does


@pytest.mark.parametrize(
    "loss",
    [
        dict(name="multi_similarity"),
        # triplet's options reach the step as multi_similarity's do; semi-hard itself is tested in test_losses
        pytest.param(dict(name="triplet", mining="semi_hard"), marks=pytest.mark.slow),
    ],
    ids=["ms", "semi_hard"],
)
def test_metric_learning_losses_pretrain(pretrain_config, tmp_path, mesh, loss):
    pretrain_config.loss.update(loss)
    summary = pretrain.train_and_evaluate(pretrain_config, str(tmp_path), mesh=mesh)
    records = read_metrics(tmp_path)
    assert summary["steps"] == 3 and all(np.isfinite(m["loss"]) and m["grad_norm"] > 0 for m in records)
