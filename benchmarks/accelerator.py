"""The accelerator benchmark: one prepared, short run that measures what a GPU or TPU host does.

    benchmarks/accelerator.sh [--smoke] [--only=SECTION,...] OUT_DIR

Sections, in this order (`--only` keeps some):
  roofline  a large bf16 and fp32 matmul and a device-to-device copy (what the device can do)
  loss      SupCon value and gradient at 4k, 16k and 64k images x 2 views x 128, chunked where
            the whole [2N, 2N] would not fit, next to its three matmuls timed in the same process
  step      the SupCon pretraining step of ResNet-50 at 224 px bf16 (batch 256) and ResNet-18 at
            32 px (batch 512): images/s, TFLOP/s (XLA's cost analysis), MFU against the measured
            bf16 matmul rate, peak device memory, compile time
  torch     the same two steps in PyTorch (the SupContrast reference's networks and loss);
            reported as skipped when torch is not installed
  augment   each augmentation recipe alone, at 32 px (batch 512) and 224 px (batch 256)

Every case runs in its own process (a crash or an out-of-memory loses that case only; peak
memory is the case's own) and each figure is appended to OUT_DIR/results.jsonl the moment it is
measured, so a run cut short keeps what it measured. OUT_DIR/results.md (tables) is written
after every case from this run's lines; OUT_DIR/logs/ has each case's stderr.

It needs jax, flax, optax, orbax-checkpoint and numpy from a plain checkout (no install, no
TensorFlow); `step` and `augment` also need the pure-Python ml-collections and dm-pix, which an
accelerator image may lack: `make accelerator-wheels` downloads them into benchmarks/wheels/,
whose wheels accelerator.sh puts on PYTHONPATH. `torch` runs with $TORCH_PYTHON when set (torch
in another environment, as `make bench-cpu`'s .venv-torch), else with the same Python.
`--smoke` runs every section on the CPU at tiny sizes (the test suite does, with TensorFlow,
tfds, clu and scikit-learn unimportable).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

SECTIONS = ("roofline", "loss", "step", "torch", "augment")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = (sys.executable, "-m", "jax_supcon.bench")
# torch may live in another environment (`make bench-cpu` keeps it in .venv-torch): $TORCH_PYTHON.
TORCH_PYTHON = os.environ.get("TORCH_PYTHON")
TORCH_STEP = (TORCH_PYTHON or sys.executable, os.path.join(ROOT, "benchmarks", "torch_supcon_step.py"))
STEP_CONFIG = "--config=configs/bench_cifar_resnet18.py"
NEEDS_WHEELS = {"step": ("ml_collections", "dm_pix"), "augment": ("ml_collections", "dm_pix")}
WHEELS_HINT = (
    "needs the pure-Python wheels {missing}: run `make accelerator-wheels` on a machine with the "
    "package registry and bring benchmarks/wheels/ along (accelerator.sh puts its wheels on PYTHONPATH)"
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One measurement process: `argv` prints JSON lines; `peak_from` names the roofline case
    whose measured TFLOP/s is passed as `--peak_tflops` (for MFU)."""

    section: str
    name: str
    argv: tuple[str, ...]
    timeout_s: float
    peak_from: str | None = None


def _step(name: str, overrides: dict, steps: int, timeout_s: float, peak_from: str) -> Case:
    flags = tuple(f"--config.{key}={value}" for key, value in overrides.items())
    return Case("step", name, (*BENCH, "step", STEP_CONFIG, *flags, f"--steps={steps}"), timeout_s, peak_from)


def plan(smoke: bool) -> list[Case]:
    """Every case of every section, full size or (`smoke`) tiny."""
    if smoke:
        roofline = ("--matmul_size=128", "--copy_mib=4", "--repeats=2")
        losses = [(64, 0), (128, 32)]
        loss_flags = ("--dim=16", "--repeats=1", "--max_gib=1")
        tiny = {"model.name": "resnet_tiny", "model.width": 0.125, "batch_size": 8}
        steps = [
            ("resnet50_224px_bf16_b256", tiny | {"data.image_size": 16, "model.dtype": "bfloat16"}, "matmul_bf16"),
            ("resnet18_32px_bf16_b512", tiny | {"data.image_size": 8, "model.dtype": "bfloat16"}, "matmul_bf16"),
        ]
        step_count = 1
        torch_flags = [
            ("resnet50_224px_bf16_b256", ("--model=resnet50", "--batch=2")),
            ("resnet18_32px_bf16_b512", ("--model=resnet18", "--batch=4")),
        ]
        torch_common = ("--device=cpu", "--dtype=bfloat16", "--image_size=32", "--steps=1")
        # Two recipes, both crop paths: every recipe's program is compiled by the test suite elsewhere.
        augment = ("--recipes=simclr,randaugment", "--image_sizes=16,32", "--image_batches=4,2", "--host_crop_from=24")
        augment += ("--repeats=1",)
        timeout = 300.0
    else:
        roofline = ("--matmul_size=16384", "--copy_mib=4096", "--repeats=10")
        losses = [(4096, 0), (16384, 0), (65536, 8192)]
        loss_flags = ("--dim=128", "--repeats=5", "--max_gib=64")
        resnet50 = {"model.name": "resnet50", "model.stem": "imagenet", "data.image_size": 224, "batch_size": 256}
        resnet18 = {"model.name": "resnet18", "model.stem": "cifar", "data.image_size": 32, "batch_size": 512}
        bf16 = {"model.dtype": "bfloat16"}
        steps = [
            ("resnet50_224px_bf16_b256", resnet50 | bf16, "matmul_bf16"),
            ("resnet18_32px_bf16_b512", resnet18 | bf16, "matmul_bf16"),
        ]
        step_count = 10
        torch_flags = [
            ("resnet50_224px_bf16_b256", ("--model=resnet50", "--stem=imagenet", "--image_size=224", "--batch=256")),
            ("resnet18_32px_bf16_b512", ("--model=resnet18", "--image_size=32", "--batch=512")),
        ]
        torch_common = ("--device=cuda", "--dtype=bfloat16", "--channels_last", "--steps=10")
        augment = ("--image_sizes=32,224", "--image_batches=512,256", "--repeats=5")
        timeout = 240.0
    cases = [Case("roofline", "roofline", (*BENCH, "roofline", *roofline), timeout)]
    for images, chunk in losses:
        name = f"{images}x2" + (f" chunk {chunk}" if chunk else "")
        cases.append(Case("loss", name, (*BENCH, "loss", f"--case={images}:{chunk}", *loss_flags), timeout))
    cases += [_step(name, overrides, step_count, timeout, peak) for name, overrides, peak in steps]
    cases += [Case("torch", name, (*TORCH_STEP, *flags, *torch_common), timeout) for name, flags in torch_flags]
    cases.append(Case("augment", "augment", (*BENCH, "augment", *augment), timeout))
    return cases


def _missing(modules: tuple[str, ...]) -> list[str]:
    """The modules this Python cannot import (absent, or blocked with `sys.modules[name] = None`)."""
    return [
        name
        for name in modules
        if (sys.modules[name] is None if name in sys.modules else importlib.util.find_spec(name) is None)
    ]


def _skip_reason(case: Case) -> str | None:
    """Why this case cannot run on this host (a module it needs is absent), or None."""
    if case.section == "torch" and (not os.path.exists(TORCH_PYTHON) if TORCH_PYTHON else _missing(("torch",))):
        return "torch is not installed" + (f" (TORCH_PYTHON={TORCH_PYTHON} does not exist)" if TORCH_PYTHON else "")
    missing = _missing(NEEDS_WHEELS.get(case.section, ()))
    if missing:
        return WHEELS_HINT.format(missing=", ".join(name.replace("_", "-") for name in missing))
    return None


def _peak(records: list[dict], case_name: str) -> float | None:
    rates = [r["tflop_per_s"] for r in records if r.get("section") == "roofline" and r.get("case") == case_name]
    return rates[-1] if rates else None


def run_case(case: Case, records: list[dict], out_dir: str, env: dict, tag: dict) -> list[dict]:
    """Run one case's process; every JSON line it prints becomes a record (appended to
    results.jsonl at once); a failure, a timeout or a skip is a record too."""
    base = tag | {"section": case.section, "case": case.name}
    reason = _skip_reason(case)
    if reason:
        return [base | {"skipped": reason}]
    argv = list(case.argv)
    peak = _peak(records, case.peak_from) if case.peak_from else None
    if peak:
        argv.append(f"--peak_tflops={peak}")
    log_path = os.path.join(out_dir, "logs", f"{case.section}-{case.name.split()[0]}.log")
    start = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            stdout, _ = process.communicate(timeout=case.timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, _ = process.communicate()
            timed_out = True
    # A roofline line names its own case (matmul_bf16, ...); the others take the plan's name.
    found = [base | json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if timed_out:
        found.append(base | {"error": f"timed out after {case.timeout_s:.0f} s"})
    elif process.returncode != 0:
        with open(log_path) as log:
            lines = [line.strip() for line in log if line.strip()]
        found.append(base | {"error": (lines or [f"exit code {process.returncode}"])[-1][:300]})
    elif not found:
        found.append(base | {"error": "printed no figures"})
    for record in found:
        record["wall_s"] = round(time.perf_counter() - start, 1)
    return found


# ----------------------------------------------------------------------------- results.md

COLUMNS = {
    "roofline": ("case", "size", "mib", "time_s", "tflop_per_s", "gib_per_s"),
    "loss": (
        "case",
        "chunk_size",
        "time_s",
        "three_matmuls_s",
        "vs_three_matmuls",
        "matmul_tflop_per_s",
        "of_fp32_matmul",
        "xla_temp_gib",
        "peak_memory_gib",
        "compile_s",
    ),
    "step": (
        "case",
        "model",
        "batch",
        "step_time_s",
        "images_per_s",
        "achieved_tflop_per_s",
        "mfu",
        "peak_memory_gib",
        "compile_s",
    ),
    "torch": ("case", "framework", "model", "batch", "step_time_s", "images_per_s", "peak_memory_gib"),
    "augment": ("recipe", "image_size", "batch", "crop", "ms_per_batch", "views_per_s", "of_step", "compile_s"),
}


def _derived(records: list[dict]) -> list[dict]:
    """Figures that relate one section to another: the loss's matmul rate against the measured
    fp32 matmul, an augmentation's time against the step at the same image size."""
    fp32 = _peak(records, "matmul_fp32")
    step_ms = {
        r["image_size"]: 1000 * r["step_time_s"] for r in records if r.get("section") == "step" and "step_time_s" in r
    }
    out = []
    for record in records:
        record = dict(record)
        if record.get("section") == "loss" and "matmul_gflop_per_s" in record:
            record["matmul_tflop_per_s"] = round(record["matmul_gflop_per_s"] / 1000, 3)
            if fp32:
                record["of_fp32_matmul"] = round(record["matmul_tflop_per_s"] / fp32, 3)
        if record.get("section") == "augment" and record.get("image_size") in step_ms:
            record["of_step"] = round(record["ms_per_batch"] / step_ms[record["image_size"]], 3)
        out.append(record)
    return out


def _cell(value) -> str:
    return "" if value is None else str(value)


def render_markdown(records: list[dict], header: dict) -> str:
    """This run's records as one table per section, then what was not measured and why."""
    lines = [
        "# Accelerator benchmark",
        "",
        f"{header['started']} · device: {header['device']} · jax {header['jax']} · python {header['python']}",
        f"command: `{header['command']}`",
        "",
    ]
    records = _derived(records)
    for section in SECTIONS:
        rows = [r for r in records if r.get("section") == section and "error" not in r and "skipped" not in r]
        if not rows:
            continue
        columns = [c for c in COLUMNS[section] if any(c in r for r in rows)]
        lines += [f"## {section}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
        lines.append("")
    missing = [r for r in records if "error" in r or "skipped" in r]
    if missing:
        lines += ["## Not measured", ""]
        lines += [f"- {r['section']} {r['case']}: {r.get('error') or r.get('skipped')}" for r in missing]
        lines.append("")
    notes = {
        "step": "MFU: achieved TFLOP/s over the bf16 matmul rate measured in this run.",
        "loss": "of_fp32_matmul: the loss's three N^2 d matmuls' rate over the fp32 matmul measured in this run.",
        "augment": "of_step: the recipe's time per batch over the step time at the same image size.",
    }
    lines += [
        f"{section}: {text}" for section, text in notes.items() if any(r.get("section") == section for r in records)
    ]
    return "\n".join(lines) + "\n"


def _device_name(records: list[dict]) -> str:
    names = sorted({r["device"] for r in records if r.get("device")})
    return ", ".join(names) or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/accelerator.sh", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="results.jsonl (appended), results.md and logs/ go here")
    parser.add_argument("--smoke", action="store_true", help="every section on the CPU at tiny sizes")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown or not only:
        parser.error(
            f"--only={args.only!r}: unknown section {unknown[0] if unknown else '(none)'}; allowed: {SECTIONS}"
        )
    os.makedirs(os.path.join(args.out_dir, "logs"), exist_ok=True)
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    if args.smoke:
        env |= {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"}
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    tag = {"run": started}
    command = " ".join(["benchmarks/accelerator.sh", *(argv if argv is not None else sys.argv[1:])])
    header = {"started": started, "command": command, "python": platform.python_version(), "jax": "?"}
    if importlib.util.find_spec("jax") is not None:
        from importlib.metadata import version

        header["jax"] = version("jax")
    records: list[dict] = []
    jsonl = os.path.join(args.out_dir, "results.jsonl")
    for case in (c for c in plan(args.smoke) if c.section in only):
        print(f"[{time.strftime('%H:%M:%S')}] {case.section}: {case.name}", file=sys.stderr, flush=True)
        found = run_case(case, records, args.out_dir, env, tag)
        with open(jsonl, "a") as out:
            for record in found:
                out.write(json.dumps(record) + "\n")
                print(json.dumps(record), flush=True)
        records += found
        header["device"] = _device_name(records)
        with open(os.path.join(args.out_dir, "results.md"), "w") as out:
            out.write(render_markdown(records, header))
    failed = [r for r in records if "error" in r]
    print(f"wrote {jsonl} and results.md: {len(records) - len(failed)} records, {len(failed)} errors", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
