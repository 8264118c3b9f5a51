"""The benchmark command runs and prints well-formed figures (tiny sizes; no timing asserted)."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
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
    usage = "usage: jax-supcon-bench {loss|input|step|roofline|augment} [--flags]; got 'lose'"
    assert result.returncode == 2 and usage in result.stderr


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
    # the pipelined run also rematerialises the blocks and keeps a feature queue of 64 x 128 floats
    extras = ([], ["--pipeline", "--config.model.remat=True", "--config.loss.queue_size=64"])
    records = [run_script("step", *tiny, *extra, cwd=tmp_path, devices=2)[-1] for extra in extras]
    assert [record["remat"] for record in records] == [False, True]
    assert [record["queue_mib"] for record in records] == [0.0, round(64 * (128 * 4 + 4) / 2**20, 3)]
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


# What a GPU host often lacks; the accelerator script must run without them.
HOST_ONLY = ("tensorflow", "tensorflow_datasets", "clu", "sklearn", "matplotlib")


def test_accelerator_script_smoke_runs_every_section_without_tensorflow(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(f"import sys\nfor name in {HOST_ONLY!r}:\n    sys.modules[name] = None\n")
    env = {k: v for k, v in os.environ.items() if k != "TORCH_PYTHON"} | {
        "PYTHON": sys.executable,
        "PYTHONPATH": str(blocker),
    }
    blocked = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, timeout=60)
    assert blocked.returncode != 0  # the blocker is in force in every Python the script starts
    out = tmp_path / "out"
    script = os.path.join(ROOT, "benchmarks", "accelerator.sh")
    result = subprocess.run(
        [script, "--smoke", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    sections = collections.defaultdict(list)
    for record in records:
        assert "error" not in record, record
        sections[record["section"]].append(record)
    assert {r["case"] for r in sections["roofline"]} == {
        "matmul_bf16",
        "matmul_fp32",
        "matmul_fp32_highest",
        "copy_fp32",
    }
    assert all(r.get("tflop_per_s", 0) > 0 or r.get("gib_per_s", 0) > 0 for r in sections["roofline"])
    assert [r["case"] for r in sections["loss"]] == ["64x2", "128x2 chunk 32"]
    assert all(r["time_s"] > 0 and r["vs_three_matmuls"] > 0 for r in sections["loss"])
    assert len(sections["step"]) == 2
    assert all(r["step_time_s"] > 0 and r["mfu"] > 0 and np.isfinite(r["loss_value"]) for r in sections["step"])
    assert len(sections["torch"]) == 2  # measured where this Python has torch, else skipped with the reason
    assert all("step_time_s" in r or r["skipped"] == "torch is not installed" for r in sections["torch"])
    augment = {(r["recipe"], r["image_size"], r["crop"]) for r in sections["augment"]}
    assert augment == {
        (r, size, crop) for r in ("simclr", "randaugment") for size, crop in ((16, "device"), (32, "host"))
    }
    markdown = (out / "results.md").read_text()
    for heading in ("## roofline", "## loss", "## step", "## augment", "benchmarks/accelerator.sh --smoke"):
        assert heading in markdown
    assert sorted(os.listdir(out / "logs"))[0] == "augment-augment.log"


def test_accelerator_script_refuses_an_unknown_section(tmp_path):
    script = os.path.join(ROOT, "benchmarks", "accelerator.sh")
    env = os.environ | {"PYTHON": sys.executable}
    result = subprocess.run(
        [script, "--only=loss,gpu", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "unknown section gpu; allowed: ('roofline'," in result.stderr
    assert not os.listdir(tmp_path)  # nothing written


def test_accelerator_case_keeps_what_it_measured_when_it_fails_or_times_out(tmp_path):
    from benchmarks import accelerator

    (tmp_path / "logs").mkdir()
    printing = "import sys, time; print('{\"time_s\": 1.5}', flush=True); "
    failing = accelerator.Case("loss", "fails", (sys.executable, "-c", printing + "sys.exit('out of memory')"), 60)
    records = accelerator.run_case(failing, [], str(tmp_path), dict(os.environ), {"run": "t"})
    assert [r.get("time_s") for r in records] == [1.5, None] and records[1]["error"] == "out of memory"
    hanging = accelerator.Case("loss", "hangs", (sys.executable, "-c", printing + "time.sleep(60)"), 5)
    records = accelerator.run_case(hanging, [], str(tmp_path), dict(os.environ), {"run": "t"})
    assert records[0]["time_s"] == 1.5 and records[1]["error"] == "timed out after 5 s"
