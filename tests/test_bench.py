"""The benchmark command runs and prints well-formed figures (tiny sizes; no timing asserted)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(*argv, devices=1):
    """`python -m jax_supcon.bench ARGV` on `devices` CPU devices; asserts success, returns its JSON records."""
    result = subprocess.run(
        [sys.executable, "-m", "jax_supcon.bench", *argv],
        cwd=ROOT,
        env=dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_loss_benchmark_prints_one_json_line_per_case():
    records = run_bench("loss", "--sizes=64", "--chunk_size=32", "--repeats=1", "--dim=16")
    assert [(r["images"], r["chunk_size"]) for r in records] == [(64, None), (64, 32)]
    for record in records:
        assert "error" not in record, record
        assert record["time_s"] > 0 and record["peak_rss_gib"] > 0 and record["xla_temp_gib"] >= 0
        assert record["three_matmuls_s"] > 0 and record["vs_three_matmuls"] > 0  # the floor, same process


def test_unknown_benchmark_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "jax_supcon.bench", "lose"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "usage: python -m jax_supcon.bench {loss|input|step}" in result.stderr


def test_input_benchmark_prints_every_case():
    argv = ["input", "--batch=8", "--steps=1", "--jpeg_images=16", "--png_images=16", "--recipe=byol"]
    records = {record["case"]: record for record in run_bench(*argv)}
    assert sorted(records) == [
        "224px_jpeg_files_2_views",
        "32px_in_memory",
        "32px_png_files",
        "device_augment_224px",
        "device_augment_32px",
    ]
    assert records["224px_jpeg_files_2_views"]["host_views_per_s"] > 0
    assert records["32px_in_memory"]["images_per_s"] > 0 and records["device_augment_32px"]["ms_per_batch"] > 0


def run_script(*argv, cwd, devices):
    """The installed `jax-supcon-bench` script, run from `cwd`; asserts success, returns its JSON records."""
    script = os.path.join(os.path.dirname(sys.executable), "jax-supcon-bench")
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices))
    result = subprocess.run([script, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_step_benchmark_times_a_compiled_step_on_resident_and_pipelined_input(tmp_path):
    """Through the installed script from another directory, as a user on a GPU host runs it."""
    tiny = [
        f"--config={ROOT}/configs/bench_cifar_resnet18.py",
        "--config.model.name=resnet_tiny",
        "--config.model.width=0.125",
        "--config.data.image_size=8",
        "--config.batch_size=8",
        "--steps=1",
        "--peak_tflops=1.0",
    ]
    # the pipelined run also rematerialises the blocks (the training step with model.remat)
    extras = ([], ["--pipeline", "--config.model.remat=True"])
    records = [run_script("step", *tiny, *extra, cwd=tmp_path, devices=2)[-1] for extra in extras]
    assert [record["remat"] for record in records] == [False, True]
    for record in records:
        assert record["bench"] == "step" and record["devices"] == 2 and record["batch"] == 8
        assert record["step_time_s"] > 0 and record["compile_s"] > 0 and record["tflop_per_step"] > 0
        assert record["views_per_s"] == pytest.approx(2 * record["images_per_s"], rel=1e-3)
        assert 0 < record["mfu"] < 1 and record["peak_memory_gib"] > 0 and record["xla_temp_gib"] >= 0
    assert records[0]["input"] == "one device-resident random batch" and records[1]["input"] == "synthetic"


def test_bad_counts_and_configs_are_one_line_and_exit_code_2():
    for args, message in (
        (["step", "--config=configs/bench_cifar_resnet18.py", "--steps=0"], "--steps=0 must be >= 1"),
        (["step", "--config=configs/bench_cifar_resnet18.py", "--config.batch_size=0"], "batch_size=0 must be > 0"),
        (["loss", "--repeats=0"], "--repeats=0 must be >= 1"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "jax_supcon.bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"jax-supcon-bench: error: {message}"]
