"""`jax-supcon-sweep`: grids of runs over seeds, their aggregation (checked against the cells'
own summaries), resumption, failed cells, chained stages, bad input; and W&B logging, offline."""

import glob
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_CLI

from jax_supcon import sweep
from jax_supcon.config.files import load_config
from jax_supcon.report import sweep as report
from jax_supcon.train import pretrained
from jax_supcon.train import workdir as run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPCON = os.path.join(ROOT, "configs", "digits_supcon.py")
SIMCLR = f"{SUPCON}:simclr"
CE = os.path.join(ROOT, "configs", "digits_ce.py")
LINEAR = os.path.join(ROOT, "configs", "digits_linear.py")
TINY = [*TINY_CLI[1:], "--config.total_steps=2"]  # conftest's tiny digits run, without its config file
TINY_THEN = ["--config.batch_size=16", "--config.eval_batch_size=64", "--config.total_steps=2"]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def options(workdir, config=SUPCON, **changes):
    values = {
        "config": config,
        "workdir": str(workdir),
        "grid": [],
        "seeds": 1,
        "then": None,
        "metrics": [],
        "parallel": 1,
        "gpus_per_cell": 0,
        "name": "test",
        "baselines": False,
        "overrides": list(TINY),
        "then_overrides": list(TINY_THEN) if changes.get("then") else [],
        "command": "jax-supcon-sweep ...",
    }
    return sweep.Options(**(values | changes))


def test_grid_values_split_on_commas_or_read_as_json():
    assert sweep.parse_axis("loss.temperature=0.05,0.1") == sweep.Axis("loss.temperature", ("0.05", "0.1"))
    axis = sweep.parse_axis('data.train_classes=["0-4","5,6,7"]')
    assert axis == sweep.Axis("data.train_classes", ("0-4", "5,6,7"))
    assert sweep.parse_axis("batch_size=[64, 128]").values == ("64", "128")
    for bad, message in [
        ("loss.temperature", "expected KEY=V1,V2"),
        ("loss.temperature=", "empty value"),
        ("loss.temperature=0.1,,0.2", "empty value"),
        ("seed=[1,", "not valid JSON"),
        ("a=1,1", "appears twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            sweep.parse_axis(bad)


def test_cells_are_every_combination_and_the_second_stage_gets_only_the_shared_keys(tmp_path):
    axes = [sweep.Axis("config", (SUPCON, SIMCLR)), sweep.Axis("data.label_noise", ("0", "0.2"))]
    cells = sweep.make_cells(SUPCON, axes)
    assert [c.name for c in cells] == [
        "digits_supcon,data.label_noise=0",
        "digits_supcon,data.label_noise=0.2",
        "digits_supcon-simclr,data.label_noise=0",
        "digits_supcon-simclr,data.label_noise=0.2",
    ]
    assert cells[2].config == SIMCLR
    cell = sweep.make_cells(SUPCON, [sweep.Axis("optimizer.learning_rate", ("0.1",)), axes[1]])[0]
    first, second = sweep.stages(
        cell, 3, str(tmp_path), job="pretrain", overrides=TINY, then=LINEAR, then_overrides=["--config.x=1"], group="g"
    )
    assert "--config.optimizer.learning_rate=0.1" in first.overrides and "--config.seed=3" in first.overrides
    assert "--config.optimizer.learning_rate=0.1" not in second.overrides  # stage 1's optimisation only
    for shared in ("--config.data.label_noise=0", "--config.data.image_size=8", "--config.seed=3", "--config.x=1"):
        assert shared in second.overrides
    assert f"--config.pretrained_workdir={first.workdir}" in second.overrides
    assert "--config.model.name=resnet_tiny" not in second.overrides
    only = sweep.stages(
        cell, 0, str(tmp_path), job="supervised", overrides=[], then=LINEAR, then_overrides=[], group="g"
    )
    assert len(only) == 1  # a one-stage method (cross-entropy) is its own last stage
    assert (
        "--config.wandb.group=g" in first.overrides and "--config.wandb.name=" + cell.name + "/seed3" in first.overrides
    )
    untracked = sweep.stages(
        cell, 0, str(tmp_path), job="pretrain", overrides=[], then=None, then_overrides=[], group=None
    )
    assert not any("wandb" in o for o in untracked[0].overrides)  # a config without a wandb section


class FakeRunner(sweep.Runner):
    """Runs no training: writes the summary a run would, with a value that is a function of the
    cell and seed, and fails one (cell, seed) the first time."""

    def __init__(self, *args, fail=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = []
        self.fail = fail

    def run_stage(self, stage, slot):
        self.started.append(stage.workdir)
        if self.fail and self.fail in stage.workdir:
            with open(f"{stage.workdir}.log", "w") as log:
                log.write("step 1\njax-supcon: stopped: the training diverged at step 2 (loss nan)\n")
            return 1
        config = load_config(stage.config, stage.overrides)
        if config.get("pretrained_workdir"):  # recorded with stage 1's model, as linear_eval records it
            config = pretrained.inherit_pretrained(config, run_dir.load_config(config.pretrained_workdir))
        os.makedirs(stage.workdir, exist_ok=True)
        with open(os.path.join(stage.workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort())
        value = 0.5 + 0.1 * float(config.loss.temperature) + 0.01 * config.seed + (config.job == "linear_eval") * 0.2
        with open(os.path.join(stage.workdir, "summary.json"), "w") as f:
            json.dump({"test_top1": value, "train_seconds": 30.0, "job": config.job}, f)
        return 0


def test_a_2x2_sweep_aggregates_its_cells_resumes_and_survives_a_failed_run(tmp_path, monkeypatch):
    fake = {}

    def make_runner(parallel, gpus):
        fake["runner"] = FakeRunner(parallel, gpus, fail=fake.get("fail"))
        return fake["runner"]

    monkeypatch.setattr(sweep.runner, "Runner", make_runner)
    fake["fail"] = os.path.join("digits_supcon-simclr,loss.temperature=0.5", "seed1", "stage1")
    run = options(
        tmp_path,
        grid=[f"config={SUPCON},{SIMCLR}", "loss.temperature=0.1,0.5"],
        seeds=3,
        then=LINEAR,
    )
    record, paths = sweep.run_sweep(run)
    assert [os.path.basename(p) for p in paths] == ["sweep.json", "sweep.md", "sweep.png"]
    assert len(fake["runner"].started) == 4 * 3 * 2 - 1  # the failed run's second stage never starts
    on_disk = read_json(tmp_path / "sweep.json")
    assert on_disk["metrics"] == ["test_top1"]
    for cell in on_disk["cells"]:
        paths = [tmp_path / cell["name"] / f"seed{seed}" / "stage2" / "summary.json" for seed in range(3)]
        per_seed = [read_json(p)["test_top1"] if p.exists() else None for p in paths]
        assert cell["values"]["test_top1"] == per_seed
        summaries = [value for value in per_seed if value is not None]
        assert cell["mean"]["test_top1"] == pytest.approx(np.mean(summaries))
        assert cell["std"]["test_top1"] == pytest.approx(np.std(summaries, ddof=1))
    failed = [c for c in on_disk["cells"] if c["failures"]]
    assert len(failed) == 1 and failed[0]["failures"][0]["error"].endswith(
        "diverged at step 2 (loss nan) (exit code 1)"
    )
    table = (tmp_path / "sweep.md").read_text()
    best = max(on_disk["cells"], key=lambda c: c["mean"]["test_top1"])
    assert f"| {best['name']} | **{best['mean']['test_top1']:.4f} ± {best['std']['test_top1']:.4f}** | 3/3 |" in table
    assert "seed 1 stage1: jax-supcon: stopped: the training diverged" in table and "| 2/3 |" in table

    fake["fail"] = None  # the second call: only the failed run (both its stages) runs again
    record, _ = sweep.run_sweep(run)
    assert [os.path.relpath(p, tmp_path) for p in fake["runner"].started] == [
        os.path.join("digits_supcon-simclr,loss.temperature=0.5", "seed1", stage) for stage in ("stage1", "stage2")
    ]
    assert not any(c["failures"] for c in record["cells"])

    other = run._replace(workdir=str(tmp_path / "other"), grid=[], then=None, then_overrides=[], seeds=1)
    sweep.run_sweep(other)
    runner = fake["runner"]
    with pytest.raises(ValueError, match=r"ran with another config \(total_steps \(2 vs 5\)\)"):
        sweep.run_sweep(other._replace(overrides=[*TINY, "--config.total_steps=5"]))  # not reused, not run
    with pytest.raises(ValueError, match=r"ran with another config \(loss.name \(\"supcon\" vs \"simclr\"\)"):
        sweep.run_sweep(other._replace(config=SIMCLR))
    assert fake["runner"] is runner  # refused while planning: no runner was made, nothing ran


def test_a_config_file_edited_after_a_sweep_is_refused_naming_the_keys_never_reused(tmp_path, monkeypatch):
    """The reuse rule reads what the config resolves to, not the command's text: the same command
    after an edit of the file must not report the old runs as the new settings'."""
    monkeypatch.setattr(sweep.runner, "Runner", FakeRunner)
    mine = tmp_path / "my.py"

    def write_config(temperature):
        mine.write_text(
            "import importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('base', {SUPCON!r})\n"
            "base = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(base)\n\n\n"
            "def get_config():\n"
            "    config = base.get_config()\n"
            f"    config.loss.temperature = {temperature}\n"
            "    return config\n"
        )

    write_config(0.2)
    run = options(tmp_path / "sweep", config=str(mine), seeds=2, then=LINEAR)
    record, _ = sweep.run_sweep(run)
    assert not record["cells"][0]["failures"]
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    sweep.run_sweep(run)  # unchanged: every stage reused, both stages checked
    write_config(0.5)
    with pytest.raises(ValueError) as error:
        sweep.run_sweep(run)
    message = str(error.value)
    assert "\n" not in message and message.startswith("cell default seed 0 stage1: ")
    assert "ran with another config (loss.temperature (0.2 vs 0.5))" in message and "new --workdir" in message
    assert (tmp_path / "sweep" / "sweep.md").read_text() == table


class CollapsingRunner(FakeRunner):
    """Its runs finish with a stage 1 that collapsed under stop_on_collapse=False, seed 1 excepted."""

    def run_stage(self, stage, slot):
        code = super().run_stage(stage, slot)
        if stage.label == "stage1" and "seed1" not in stage.workdir:
            path = os.path.join(stage.workdir, "summary.json")
            summary = read_json(path) | {"collapsed_at_step": 7, "collapse_detected_at_step": 75}
            with open(path, "w") as f:
                json.dump(summary, f)
        return code


def test_a_run_whose_stage_1_collapsed_is_a_failure_never_a_value(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.runner, "Runner", CollapsingRunner)
    record, _ = sweep.run_sweep(options(tmp_path, seeds=2, then=LINEAR))
    (cell,) = record["cells"]
    assert cell["values"]["test_top1"][0] is None and cell["values"]["test_top1"][1] is not None
    (failure,) = cell["failures"]
    assert (failure["seed"], failure["stage"]) == (0, "stage1")
    assert failure["error"] == "the projections collapsed at step 7; not a result"
    assert not os.path.exists(tmp_path / cell["name"] / "seed0" / "stage2")  # no stage 2 on a collapsed encoder


class InProcessRunner(sweep.Runner):
    """Runs each stage's job in this process (on two of the fake devices) instead of a `jax-supcon` process."""

    def run_stage(self, stage, slot, extra=()):
        import jax

        from jax_supcon import jobs, parallel

        config = load_config(stage.config, [*stage.overrides, *extra])
        jobs.train_and_evaluate(config, stage.workdir, mesh=parallel.create_mesh(jax.devices()[:2]))
        return 0


def test_a_real_sweep_chains_linear_evaluation_and_reports_raw_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.runner, "Runner", InProcessRunner)
    run = options(tmp_path, grid=[f"config={SUPCON},{CE}"], then=LINEAR, baselines=True, seeds=1)
    record, _ = sweep.run_sweep(run)
    assert sweep.run_sweep(run)[0]["cells"] == record["cells"]  # what the jobs recorded reads as unchanged
    supcon, ce = record["cells"]
    pretrained = read_json(tmp_path / supcon["name"] / "seed0" / "stage2" / "config.json")
    assert pretrained["job"] == "linear_eval"
    assert pretrained["pretrained_workdir"] == str(tmp_path / supcon["name"] / "seed0" / "stage1")
    assert not (tmp_path / ce["name"] / "seed0" / "stage2").exists()  # cross-entropy: one stage
    for cell in (supcon, ce):
        summary = read_json(os.path.join(cell["workdirs"][0], "summary.json"))
        assert cell["values"]["test_top1"] == [summary["test_top1"]]
    (baseline,) = record["baselines"]
    assert baseline["name"] == "raw pixels" and 0.9 < baseline["mean"]["test_top1"] <= 1.0


def test_select_chooses_on_validation_and_only_the_chosen_cell_reads_the_test_split(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.runner, "Runner", InProcessRunner)
    overrides = [*TINY, "--config.data.validation_fraction=0.2"]
    run = options(
        tmp_path, config=CE, grid=["optimizer.learning_rate=0.01,0.3"], seeds=2, overrides=overrides, select="val_top1"
    )
    record, _ = sweep.run_sweep(run)
    assert record["metrics"] == ["val_top1", "test_top1"]
    by_name = {cell["name"]: cell for cell in record["cells"]}
    best = max(by_name.values(), key=lambda c: c["mean"]["val_top1"])["name"]
    assert record["selected"] == best
    for name, cell in by_name.items():
        summaries = [read_json(os.path.join(w, "summary.json")) for w in cell["workdirs"]]
        assert cell["values"]["val_top1"] == [s["val_top1"] for s in summaries]
        if name == best:  # started again with evaluate_test: trained no more, read the test split
            assert cell["values"]["test_top1"] == [s["test_top1"] for s in summaries]
            assert all(s["steps"] == 2 for s in summaries)
        else:
            assert all("test_top1" not in s for s in summaries) and cell["mean"]["test_top1"] is None
    table = (tmp_path / "sweep.md").read_text()
    assert f"Chosen on validation (val_top1, data.validation_fraction): **{best}**" in table
    assert sweep.run_sweep(run)[0]["cells"] == record["cells"]  # a second call reuses everything


@pytest.mark.parametrize(
    ("select", "overrides", "message"),
    [
        ("test_top1", ["--config.data.validation_fraction=0.2"], "--select='test_top1': choose on a validation metric"),
        ("val_top1", [], "cell default has data.validation_fraction=0 (validation would read the test split)"),
    ],
)
def test_select_refuses_a_test_metric_or_validation_on_the_test_split(select, overrides, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep.plan(options(tmp_path / "sweep", config=CE, overrides=[*TINY, *overrides], select=select))
    assert not (tmp_path / "sweep").exists()


def run_cli(*args, cwd):
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2")
    command = [sys.executable, "-m", "jax_supcon.sweep", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"grid": ["optimizer.lr=0.1,0.2"]}, "--grid=optimizer.lr=...: unknown config key 'optimizer.lr'"),
        ({"grid": ["loss.temperature="]}, "--grid='loss.temperature=': empty value"),
        ({"seeds": 0}, "--seeds=0 must be >= 1"),
        ({"grid": ["data.label_noise=0,1.0"]}, "data.label_noise=1.0 must be in [0, 1) (0: clean labels)"),
        ({"grid": ["data.train_fraction=0"]}, "data.train_fraction=0.0 must be in (0, 1] (1: every training image)"),
        (  # a value only the data can refuse, caught while planning as the job would at its start
            {"grid": ["data.label_fraction=1.0,0.001"]},
            "cell data.label_fraction=0.001 stage1 (",
        ),
        ({"grid": ["data.label_fraction=0.001"]}, "is larger than the training split (10 examples)"),
        ({"overrides": ["--config.loss.temprature=0.1"]}, "unknown config key 'loss.temprature'"),
        ({"then": LINEAR, "then_overrides": ["--config.optimizer.nme=sgd"]}, "unknown config key 'optimizer.nme'"),
        ({"overrides": ["--config.seed=3"]}, "the sweep sets config.seed itself"),
        ({"then_overrides": ["--config.total_steps=3"]}, "--then.total_steps=3 needs --then=FILE"),
        (
            {"then": LINEAR, "then_overrides": ["--config.data.image_size=12"]},
            "stage 2 would read data.image_size=12, stage 1 data.image_size=8",
        ),
        (
            {"then": LINEAR, "then_overrides": ["--config.data.validation_fraction=0.1"]},
            "stage 2 would read data.validation_fraction=0.1, stage 1 data.validation_fraction=0.0",
        ),
    ],
)
def test_bad_input_names_the_value_and_nothing_is_written(changes, message, tmp_path):
    workdir = tmp_path / "sweep"
    with pytest.raises(ValueError) as error:
        sweep.run_sweep(options(workdir, **changes))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not workdir.exists()


def test_every_cells_values_are_checked_before_any_data_set_is_loaded(tmp_path, monkeypatch):
    """A bad value in the last cell is named at once, not after the first cells' data sets loaded."""
    from jax_supcon.train import inputs

    def no_data(config):
        raise AssertionError("a data set was loaded before every cell's values were checked")

    monkeypatch.setattr(inputs, "training_splits", no_data)
    with pytest.raises(ValueError, match=r"cell data.label_noise=1.0 stage1 .*must be in \[0, 1\)"):
        sweep.run_sweep(options(tmp_path / "sweep", grid=["data.label_noise=0,1.0"], then=LINEAR))
    assert not (tmp_path / "sweep").exists()


def test_the_command_reports_bad_input_in_one_line_and_a_failed_cell_with_exit_code_1(tmp_path):
    workdir = tmp_path / "sweep"
    result = run_cli(f"--config={SUPCON}", f"--workdir={workdir}", "--grid=data.label_noise=0,1.0", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("jax-supcon-sweep: error: cell data.label_noise=1.0 stage1 (")
    assert lines[0].endswith("data.label_noise=1.0 must be in [0, 1) (0: clean labels)") and not workdir.exists()

    # One-stage cross-entropy cells: two `jax-supcon` processes under the real runner (the chaining
    # of a second stage is test_a_real_sweep_chains_linear_evaluation_and_reports_raw_pixels's).
    result = run_cli(
        f"--config={CE}",
        f"--workdir={workdir}",
        "--grid=optimizer.learning_rate=0.5,1e30",  # 1e30: the loss is NaN at step 2
        *TINY,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    good, bad = read_json(workdir / "sweep.json")["cells"]
    summary = read_json(workdir / good["name"] / "seed0" / "stage1" / "summary.json")
    assert good["values"] == {"test_top1": [summary["test_top1"]]}
    assert "jax-supcon: stopped: loss is nan at step 2; stopped." in bad["failures"][0]["error"]
    assert "| optimizer.learning_rate=0.5 |" in result.stdout and (workdir / "sweep.png").stat().st_size > 0


def _wandb_records(path):
    """The records of an offline W&B run file (LevelDB-style log blocks of W&B's protobufs)."""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    block, position, chunks, records = 32768, 7, [], []
    while position + 7 <= len(data):
        if block - position % block < 7:
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunks.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


def test_wandb_offline_run_files_hold_the_logged_scalars(tmp_path, pretrain_config):
    import jax

    from jax_supcon import parallel
    from jax_supcon.jobs import pretrain

    mesh = parallel.create_mesh(jax.devices()[:2])

    pretrain_config.wandb.update(project="jax-supcon-test", mode="offline", group="g", tags=("a", "b"))
    workdir = tmp_path / "run"
    pretrain.train_and_evaluate(pretrain_config, str(workdir), mesh=mesh)
    (run_file,) = glob.glob(str(workdir / "wandb" / "offline-run-*" / "run-*.wandb"))
    history, runs = {}, []
    for record in _wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            if "loss" in items:
                history[items["_step"]] = items["loss"]
        if record.WhichOneof("record_type") == "run":
            runs.append(record.run)
    assert runs and runs[0].run_group == "g" and list(runs[0].tags) == ["a", "b"]
    assert runs[0].project == "jax-supcon-test" and runs[0].display_name == "run"
    with open(workdir / "metrics.jsonl") as f:
        logged = {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}
    assert history == pytest.approx(logged) and len(logged) == 3


def test_a_wandb_project_without_the_client_is_a_one_line_error(monkeypatch):
    import importlib.util

    from jax_supcon.config import base_config
    from jax_supcon.report import tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    section = base_config().wandb
    section.project = "p"
    with pytest.raises(ValueError, match=r"wandb.project='p' needs the W&B client: pip install 'jax_supcon\[wandb\]'"):
        tracking.validate_wandb_config(section)
    section.project = ""
    tracking.validate_wandb_config(section)  # off: no client needed
    section.mode = "cloud"
    with pytest.raises(ValueError, match=r"wandb.mode='cloud'; allowed:"):
        tracking.validate_wandb_config(section)


def test_aggregation_means_stds_and_the_best_cell():
    rows = [
        {"name": "a", "summaries": [{"test_top1": 0.9}, {"test_top1": 0.8}, None]},
        {"name": "b", "summaries": [{"val/encoder/test_top1": 0.95}]},
    ]
    cells = report.aggregate(rows, ["test_top1"])
    assert cells[0]["mean"]["test_top1"] == pytest.approx(0.85) and cells[0]["values"]["test_top1"][2] is None
    assert cells[0]["std"]["test_top1"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert cells[1]["std"]["test_top1"] is None  # one seed: no spread
    assert report.best_cells(cells, ["test_top1"]) == {"test_top1": "b"}
    assert report.default_metrics([{"test_top1": 1}, {"test_top1": 0.5}]) == ("test_top1",)
    open_set = {f"val/encoder/{m}": 0.5 for m in report.OPEN_SET_METRICS}
    assert report.default_metrics([open_set, open_set | {"test_top1": 0.9}]) == report.OPEN_SET_METRICS
