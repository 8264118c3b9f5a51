"""launch/local.sh: a 2-process x 2-device job trains like 1 process x 4 devices, and a process
that dies stops the whole job promptly instead of leaving the others hanging in a collective."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
from conftest import TINY_CLI

from jax_supcon import parallel
from jax_supcon.config.files import load_config
from jax_supcon.jobs import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch", "local.sh")
TINY = [*TINY_CLI, "--config.total_steps=4", "--config.log_every_steps=1", "--config.checkpoint_every_steps=2"]


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if '"loss"' in line]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    return env | {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]} | extra


def test_two_processes_train_as_one_job_with_the_losses_of_one_process(tmp_path):
    """Also the collective paths of a multi-process run: per-process input shares, validation, the
    final embeddings every process must join (process 0 alone used to wait forever), orbax saves."""
    command = [sys.executable, "-m", "jax_supcon.main", *TINY]
    two = subprocess.run(
        [LAUNCH, "2", *command, f"--workdir={tmp_path / 'two'}", "--config.eval_every_steps=2", "--config.plots=True"],
        cwd=ROOT,
        env=clean_env(DEVICES_PER_PROCESS="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:] + two.stdout[-3000:]
    lines = two.stdout.splitlines()
    assert any(line.startswith("[0] [pretrain] step 4/") for line in lines)
    assert not any(line.startswith("[1] [pretrain]") for line in lines)  # only process 0 logs
    # The reference, one process over 4 devices, runs in this process: the process boundary is
    # what the two-process run tests, and here it would only add a start-up (TensorFlow: ~10 s).
    config = load_config(os.path.join(ROOT, TINY[0].removeprefix("--config=")), TINY[1:])
    pretrain.train_and_evaluate(config, str(tmp_path / "one"), mesh=parallel.create_mesh(jax.devices()[:4]))
    assert len(losses(tmp_path / "two")) == 4
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-4)
    with open(tmp_path / "two" / "summary.json") as f:
        summary = json.load(f)
    assert summary["devices"] == 4 and 0.0 <= summary["val/encoder/knn_top1"] <= 1.0
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["2", "4"]
    assert {"curves.png", "test_encoder_pca.png", "test_encoder_tsne.png"} <= set(
        os.listdir(tmp_path / "two" / "plots")
    )


def test_a_process_that_dies_stops_the_job_promptly(tmp_path):
    # Process 1 fails at once; process 0 starts the real job and would wait for it forever.
    script = (
        f'if [ "$JAX_PROCESS_ID" = 1 ]; then echo failing; exit 3; fi; exec "{sys.executable}" -m jax_supcon.main "$@"'
    )
    start = time.monotonic()
    result = subprocess.run(
        [LAUNCH, "2", "bash", "-c", script, "_", *TINY, f"--workdir={tmp_path / 'run'}"],
        cwd=ROOT,
        env=clean_env(KILL_AFTER="5"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 3, result.stderr[-2000:]
    assert "launch/local.sh: process 1 exited with status 3; stopping the others" in result.stderr
    assert "[1] failing" in result.stdout
    assert elapsed < 30


def test_launcher_usage_errors():
    result = subprocess.run([LAUNCH, "zero", "true"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "usage: launch/local.sh N COMMAND" in result.stderr


def test_cluster_scripts_are_valid_bash_and_print_usage():
    for script in ("local.sh", "slurm.sbatch", "tpu_vm.sh"):
        path = os.path.join(ROOT, "launch", script)
        assert subprocess.run(["bash", "-n", path], capture_output=True, timeout=30).returncode == 0, script
    result = subprocess.run([os.path.join(ROOT, "launch", "tpu_vm.sh")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "usage: launch/tpu_vm.sh setup|run TPU_NAME ZONE" in result.stderr
