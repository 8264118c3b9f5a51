"""`jax_supcon.average`: the mean of the last / best K checkpoints as a new workdir stage 2 reads."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import read_metrics, tiny

from jax_supcon import parallel
from jax_supcon.cli import average
from jax_supcon.jobs import linear_eval, pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC = "val/encoder/knn_top1"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 3-step pretraining run on 2 devices, checkpointed at every step (all 3 kept), validated at 2 and 3."""
    from configs import digits_supcon

    config = tiny(digits_supcon.get_config())
    config.checkpoint_every_steps = 1
    config.keep_checkpoints = 3
    config.keep_best = 2
    config.eval_every_steps = 2
    config.best_metric = METRIC
    config.ema_decay = 0.5  # so the state's `ema` subtree is averaged too
    workdir = str(tmp_path_factory.mktemp("source"))
    pretrain.train_and_evaluate(config, workdir, mesh=parallel.create_mesh(jax.devices()[:2]))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2", "3"]
    return workdir


@pytest.fixture(scope="module")
def averaged_last(source, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("averaged") / "last2")
    return out, average.average_checkpoints(source, out, last=2)


def restore_raw(workdir, step):
    """A checkpoint as saved, read by orbax alone (no target): independent of `average`."""
    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "default"))


def top_key(path):
    return path[0].key


def test_last_k_averages_params_batch_stats_and_ema_and_keeps_the_newest_rest(source, averaged_last):
    out, summary = averaged_last
    assert summary["steps"] == [2, 3] and summary["step"] == 3 and summary["mode"] == "last"
    assert sorted(os.listdir(out)) == ["average.json", "checkpoints", "config.json"]
    assert os.listdir(os.path.join(out, "checkpoints")) == ["3"]
    with open(os.path.join(out, "average.json")) as f:
        assert json.load(f) == {
            "source_workdir": os.path.abspath(source),
            "mode": "last",
            "k": 2,
            "steps": [2, 3],
            "metric": None,
        }
    with open(os.path.join(out, "config.json")) as f, open(os.path.join(source, "config.json")) as g:
        assert json.load(f) == json.load(g)

    older, newer, result = restore_raw(source, 2), restore_raw(source, 3), restore_raw(out, 3)
    assert jax.tree.structure(result) == jax.tree.structure(newer)
    averaged = set()

    def check(path, mine, old, new):
        mine, old, new = np.asarray(mine), np.asarray(old), np.asarray(new)
        assert mine.dtype == new.dtype and mine.shape == new.shape, jax.tree_util.keystr(path)
        if top_key(path) in average.AVERAGED_KEYS:
            averaged.add(top_key(path))
            np.testing.assert_allclose(mine, (old + new) / 2, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))
        else:
            np.testing.assert_array_equal(mine, new, err_msg=jax.tree_util.keystr(path))

    jax.tree.map_with_path(check, result, older, newer)
    assert {"params", "batch_stats"} <= averaged and {"opt_state", "step", "rng"} <= set(result)
    assert int(result["step"]) == 3
    kernel = lambda state: state["params"]["encoder"]["stem_conv"]["kernel"]  # noqa: E731
    assert not np.allclose(kernel(older), kernel(newer))  # the mean is not trivially either one
    if jax.tree.leaves(result.get("ema", {})):
        assert "ema" in averaged


def test_stage_two_reads_the_averaged_workdir(averaged_last, linear_config, tmp_path):
    out, _ = averaged_last
    linear_config.pretrained_workdir = out
    linear_config.total_steps = 2
    summary = linear_eval.train_and_evaluate(linear_config, str(tmp_path), mesh=parallel.create_mesh(jax.devices()[:2]))
    assert 0.0 <= summary["test_top1"] <= 1.0
    assert read_metrics(tmp_path)[-1]["test_top1"] == summary["test_top1"]


def test_best_k_takes_the_highest_logged_metric_on_disk(source, tmp_path):
    scores = {r["step"]: r[METRIC] for r in read_metrics(source) if METRIC in r}
    expected = sorted(sorted(scores, key=lambda s: (scores[s], s), reverse=True)[:2])
    summary = average.average_checkpoints(source, str(tmp_path / "best2"), best=2)
    assert summary["steps"] == expected and summary["metric"] == METRIC and summary["mode"] == "best"
    assert os.listdir(tmp_path / "best2" / "checkpoints") == [str(expected[-1])]
    with open(tmp_path / "best2" / "average.json") as f:
        assert json.load(f)["steps"] == expected


def test_choose_best_ranks_by_metric_and_skips_steps_not_on_disk():
    records = [{"step": 1, "m": 0.9}, {"step": 2, "m": 0.5}, {"step": 3, "loss": 1.0}, {"step": 3, "m": 0.7}]
    assert average.choose_best([2, 3, 4], records, "m", 2) == [2, 3]
    assert average.choose_best([1, 2, 3], records, "m", 2) == [1, 3]
    with pytest.raises(ValueError, match=r"only 2 checkpoint\(s\) on disk with 'm' logged \(steps \[2, 3\]"):
        average.choose_best([2, 3, 4], records, "m", 3)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"last": 4}, r"--last=4: only 3 checkpoint\(s\) on disk \(steps \[1, 2, 3\]\); keep_checkpoints >= 4"),
        (
            {"best": 3},
            r"--best=3: only 2 checkpoint\(s\) on disk with '.+' logged \(steps \[2, 3\]; on disk \[1, 2, 3\]\)",
        ),
        ({"last": 1, "best": 1}, "give one of them, not both"),
        ({}, "give --last=K or --best=K"),
        ({"last": -1}, "--last=-1 must be >= 1"),
    ],
)
def test_bad_options_write_nothing(source, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        average.average_checkpoints(source, str(tmp_path / "out"), **options)
    assert not (tmp_path / "out").exists()


def test_bad_paths_are_refused_and_nothing_is_touched(source, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        average.average_checkpoints(source, str(tmp_path / "full"), last=1)
    assert os.listdir(tmp_path / "full") == ["keep.txt"] and (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="is the source workdir"):
        average.average_checkpoints(source, source + "/", last=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        average.average_checkpoints(str(tmp_path / "missing"), str(tmp_path / "out"), last=1)
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        average.average_checkpoints(str(tmp_path / "bare"), str(tmp_path / "out"), last=1)
    shutil.copy(os.path.join(source, "config.json"), tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        average.average_checkpoints(str(tmp_path / "bare"), str(tmp_path / "out"), last=1)
    assert not (tmp_path / "out").exists()


def run_cli(*args, cwd):
    """The installed `jax-supcon-average` script, as a user runs it (here from another directory)."""
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1")
    script = os.path.join(os.path.dirname(sys.executable), "jax-supcon-average")
    return subprocess.run([script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_averages_on_one_device_and_reports_errors_in_one_line(source, tmp_path):
    result = run_cli(f"--workdir={source}", f"--out={tmp_path / 'avg'}", "--last=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == [2, 3] and summary["step"] == 3
    assert os.listdir(tmp_path / "avg" / "checkpoints") == ["3"]
    result = run_cli(f"--workdir={source}", f"--out={tmp_path / 'avg'}", "--last=0", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["jax-supcon-average: error: --last=0 must be >= 1"]
