"""Training health: the ResNet's reference initialisation, the health figures against NumPy
references written from the papers' equations, the collapsed loss value, the collapse rule, and a
run made to collapse stopping (or, asked to, warning and saying so in its summary)."""

import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_CLI, read_metrics
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jax_supcon import models, parallel
from jax_supcon.config import base_config
from jax_supcon.config.files import load_config
from jax_supcon.jobs import pretrain
from jax_supcon.train import health

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- initialisation -------------------------------------------------------------------------


def _last_norm_scales(params) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the scale of each residual branch's last BatchNorm, every other BatchNorm scale)."""
    last, other = [], []
    for name, block in params.items():
        norms = sorted(k for k in block if k.startswith("BatchNorm_")) if "block" in name else []
        last += [np.asarray(block[norms[-1]]["scale"])] if norms else []
        other += [np.asarray(v["scale"]) for k, v in block.items() if "norm" in k.lower() and k not in norms[-1:]]
    return last, other


@pytest.mark.parametrize("name", ["resnet_tiny", "resnet50"])
def test_residual_branches_start_at_scale_one_as_supcontrast_unless_zero_init_residual(name):
    assert base_config().model.zero_init_residual is False
    for zero in (False, True):
        config = base_config().model
        config.update(name=name, width=0.125, zero_init_residual=zero)
        encoder = models.create_encoder(config)
        params = encoder.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)["params"]
        last, other = _last_norm_scales(params)
        assert len(last) == {"resnet_tiny": 2, "resnet50": 16}[name]
        assert all(np.all(scale == (0.0 if zero else 1.0)) for scale in last)
        assert other and all(np.all(scale == 1.0) for scale in other)  # stems, shortcuts, first norms


def test_a_run_recorded_before_the_key_resumes_only_as_the_zero_scale_it_was_built_with(tmp_path):
    from jax_supcon.train import workdir

    old = base_config()
    old.total_steps = 10
    recorded = json.loads(old.to_json_best_effort())
    del recorded["model"]["zero_init_residual"]
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"different model\.zero_init_residual \(true vs false\)"):
        workdir.check_resumable(str(tmp_path), old)
    old.model.zero_init_residual = True
    workdir.check_resumable(str(tmp_path), old)


# --- the figures ----------------------------------------------------------------------------


def reference_figures(z: np.ndarray, features: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """The figures from their definitions, in float64, every projection of the batch used."""
    z, features = z.astype(np.float64), features.astype(np.float64)
    batch, views, dim = z.shape
    rows = z.reshape(batch * views, dim)
    pairs = [(v, w) for v in range(views) for w in range(v + 1, views)]
    alignment = np.mean([np.sum((z[:, v] - z[:, w]) ** 2, axis=-1) for v, w in pairs])  # Wang & Isola eq. 4, alpha 2
    squared = np.sum((rows[:, None] - rows[None]) ** 2, axis=-1)
    off_diagonal = ~np.eye(len(rows), dtype=bool)
    uniformity = np.log(np.mean(np.exp(-2.0 * squared[off_diagonal])))  # eq. 5, t = 2

    def rankme(x):  # Garrido et al. eq. 1
        singular = np.linalg.svd(x, compute_uv=False)
        p = singular / singular.sum() + 1e-7
        return np.exp(-np.sum(p * np.log(p)))

    cosine = rows @ rows.T
    row_ids = np.repeat(ids, views)
    same = row_ids[:, None] == row_ids[None]
    return {
        health.ALIGNMENT: alignment,
        health.UNIFORMITY: uniformity,
        health.RANK_PROJECTION: rankme(rows),
        health.RANK_ENCODER: rankme(features),
        health.POSITIVE_COSINE: cosine[same & off_diagonal].mean(),
        health.NEGATIVE_COSINE: cosine[~same].mean(),
    }


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("devices", [1, 8])
def test_health_figures_equal_the_papers_definitions_on_1_and_8_devices(views, devices):
    rng = np.random.default_rng(views)
    batch, dim, width = 16, 8, 24
    z = _unit(rng.normal(size=(batch, views, dim)) + 0.5).astype(np.float32)
    features = np.maximum(rng.normal(size=(batch * views, width)), 0).astype(np.float32)  # after a ReLU
    labels = rng.integers(0, 4, size=batch).astype(np.int32)
    mesh = parallel.create_mesh(jax.devices()[:devices])
    shard = NamedSharding(mesh, P("data"))
    args = [jax.device_put(a, shard) for a in (z, features, labels)]
    measure = jax.jit(lambda *a, ranks: health.health_figures(*a, with_ranks=ranks))
    figures = measure(*args, jnp.float32(3.0), jnp.float32(4.5), ranks=jnp.asarray(True))  # a lax.cond, as in the step
    expected = reference_figures(z, features, labels) | {health.LOSS_BELOW_COLLAPSE: 1.5}
    assert set(figures) == set(expected)
    for key, value in expected.items():
        assert float(figures[key]) == pytest.approx(value, rel=2e-4, abs=2e-5), key
    skipped = measure(*args, jnp.float32(3.0), jnp.float32(4.5), ranks=jnp.asarray(False))  # a step that is not logged
    assert np.isnan(float(skipped[health.RANK_PROJECTION])) and np.isnan(float(skipped[health.RANK_ENCODER]))
    assert float(skipped[health.NEGATIVE_COSINE]) == pytest.approx(expected[health.NEGATIVE_COSINE], rel=2e-4)


def _collectives_in_conditional_branches(hlo: str) -> list[str]:
    """The collective ops reachable from any `conditional`'s branch computations in HLO text."""
    bodies, name = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            name = header.group(1)
            bodies[name] = []
        elif name:
            bodies[name].append(line)
    todo = [b.strip().lstrip("%") for m in re.findall(r"branch_computations=\{([^}]*)\}", hlo) for b in m.split(",")]
    seen, found = set(), []
    while todo:
        computation = todo.pop()
        if computation in seen:
            continue
        seen.add(computation)
        body = "\n".join(bodies.get(computation, []))
        found += re.findall(r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)\b", body)
        todo += [called for called in re.findall(r"%([\w.\-]+)", body) if called in bodies]
    return found


@pytest.mark.parametrize("batch, width", [(16, 24), (4, 64)])  # more rows than columns, and fewer
def test_the_logged_steps_branch_holds_no_collective(batch, width):
    """A collective inside a `lax.cond` can run in a different order on each device: XLA:CPU's
    in-process collectives then wait for each other until they abort (a smoke recipe on 2 fake
    devices did, 3 runs of 4). The effective ranks' branch gets replicated Gram matrices."""
    rng = np.random.default_rng(0)
    z = _unit(rng.normal(size=(batch, 2, 8))).astype(np.float32)
    features = rng.normal(size=(batch * 2, width)).astype(np.float32)
    labels = rng.integers(0, 4, size=batch).astype(np.int32)
    shard = NamedSharding(parallel.create_mesh(jax.devices()[:2]), P("data"))
    args = [jax.device_put(a, shard) for a in (z, features, labels)]
    measure = jax.jit(lambda *a, ranks: health.health_figures(*a, with_ranks=ranks))
    hlo = measure.lower(*args, jnp.float32(3.0), jnp.float32(4.5), ranks=jnp.asarray(True)).compile().as_text()
    assert "conditional(" in hlo and "all-reduce" in hlo  # the cond, and the batch reduced outside it
    assert _collectives_in_conditional_branches(hlo) == []


def test_simclr_positives_are_the_views_of_one_image_and_a_one_class_batch_has_no_negatives():
    rng = np.random.default_rng(0)
    z = _unit(rng.normal(size=(8, 2, 4))).astype(np.float32)
    features = rng.normal(size=(16, 6)).astype(np.float32)
    ids = np.arange(8)
    figures = health.health_figures(z, features, jnp.asarray(ids), 0.0, 0.0)
    assert float(figures[health.POSITIVE_COSINE]) == pytest.approx(np.mean(np.sum(z[:, 0] * z[:, 1], -1)), rel=1e-5)
    one_class = health.health_figures(z, features, jnp.zeros(8, jnp.int32), 0.0, 0.0)
    assert np.isnan(float(one_class[health.NEGATIVE_COSINE]))
    assert not health.step_collapsed({health.NEGATIVE_COSINE: float(one_class[health.NEGATIVE_COSINE])})


def test_collapsed_projections_read_as_collapsed():
    z = np.asarray(health.collapsed_like(jnp.zeros((32, 2, 16))))
    figures = jax.jit(health.health_figures)(z, np.ones((64, 8), np.float32), jnp.arange(32) % 4, 6.0, 6.0)
    assert float(figures[health.RANK_PROJECTION]) == pytest.approx(1.0, abs=1e-4)
    assert float(figures[health.RANK_ENCODER]) == pytest.approx(1.0, abs=1e-4)
    assert float(figures[health.NEGATIVE_COSINE]) == pytest.approx(1.0, abs=1e-6)
    assert float(figures[health.ALIGNMENT]) == pytest.approx(0.0, abs=1e-6)
    assert float(figures[health.UNIFORMITY]) == pytest.approx(0.0, abs=1e-5)
    assert float(figures[health.LOSS_BELOW_COLLAPSE]) == 0.0


@pytest.mark.parametrize(
    ("loss", "queue_filled", "expected"),
    [
        (dict(name="supcon"), 0, math.log(2 * 8 - 1)),  # log(2B - 1): every logit equal
        (dict(name="simclr", temperature=0.5), 0, math.log(2 * 8 - 1)),
        (dict(name="supcon", base_temperature=0.07), 0, 0.1 / 0.07 * math.log(2 * 8 - 1)),
        (dict(name="supcon", queue_size=32), 20, math.log(2 * 8 - 1 + 20)),  # the filled queue entries join
        (dict(name="triplet", margin=0.3), 0, 0.3),  # d(a, p) = d(a, n) = 0: the margin
    ],
)
def test_the_collapsed_loss_value_is_the_loss_on_one_repeated_vector(loss, queue_filled, expected):
    """Through the job's own loss, compiled on two devices with this platform's XLA:CPU flags (which
    once computed 1e29 from a broadcast constant)."""
    config = base_config().loss
    config.update(loss)
    mesh = parallel.create_mesh(jax.devices()[:2])
    rng = np.random.default_rng(0)
    z = _unit(rng.normal(size=(8, 2, 16))).astype(np.float32)
    labels = (np.arange(8) % 3).astype(np.int32)
    contrast = {}
    if queue_filled:
        contrast = {
            "contrast_features": _unit(rng.normal(size=(32, 16))).astype(np.float32),
            "contrast_labels": (np.arange(32) % 3).astype(np.int32),
            "contrast_mask": np.arange(32) < queue_filled,
        }

    def below(z, labels, contrast):
        features = jnp.ones((16, 4))
        return pretrain.step_health(z, features, labels, 0.0, config, mesh, contrast)[health.LOSS_BELOW_COLLAPSE]

    assert float(jax.jit(below)(z, labels, contrast)) == pytest.approx(expected, rel=1e-5)


# --- the rule -------------------------------------------------------------------------------


def _steps(cosines, start=1):
    return [(start + i, {health.NEGATIVE_COSINE: c, health.RANK_PROJECTION: 1.2}) for i, c in enumerate(cosines)]


def test_the_rule_needs_patience_consecutive_collapsed_steps_after_the_warmup():
    watch = health.CollapseWatch(warmup_steps=20, patience=50)
    assert watch.update(_steps([0.8] * 6 + [0.999] * 49)) is None  # collapsed from step 7: 49 steps
    found = watch.update(_steps([0.9995], start=56))  # the 50th
    assert found is not None and (found.since, found.step) == (7, 56)
    assert "collapsed to one vector at step 7 and stayed so to step 56" in found.describe()

    early = health.CollapseWatch(warmup_steps=100, patience=10)
    assert early.update(_steps([1.0] * 60)) is None  # still warming up
    assert early.update(_steps([1.0] * 41, start=61)).since == 1

    healthy = health.CollapseWatch(warmup_steps=0, patience=10)
    hovering = [0.999] * 9 + [0.98] + [0.999] * 9  # never ten in a row
    assert healthy.update(_steps(hovering)) is None
    assert healthy.update(_steps([float("nan")] * 20, start=20)) is None


# --- runs -----------------------------------------------------------------------------------

# A tiny digits run that collapses at once (the 8-channel ResNet at T 0.1 and lr 0.5 ends every
# projection on one vector within a few steps) and is long enough for the rule.
COLLAPSING = (*TINY_CLI, "--config.total_steps=60", "--config.log_every_steps=20", "--config.checkpoint_every_steps=20")


def run_cli(*args):
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2")
    command = [sys.executable, "-m", "jax_supcon.main", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_collapsed_run_stops_with_one_line_exit_1_and_its_checkpoints_kept(tmp_path):
    result = run_cli(*COLLAPSING, f"--workdir={tmp_path}", "--config.loss.temperature=0.1")
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("jax-supcon: stopped: the projections collapsed to one vector at step "), last
    assert "and stayed so to step 60 (mean negative cosine " in last
    assert "The latest checkpoint is step 40, saved after the collapse began (try a higher loss.temperature" in last
    assert "--config.stop_on_collapse=False only warns)" in last
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["20", "40"]  # nothing saved at the stop
    assert not (tmp_path / "summary.json").exists()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [20, 40, 60]
    for key in (health.ALIGNMENT, health.UNIFORMITY, health.RANK_PROJECTION, health.RANK_ENCODER):
        assert all(np.isfinite(r[key]) for r in records)  # the ranks: measured on the logged step
    assert records[-1][health.NEGATIVE_COSINE] >= health.COLLAPSE_COSINE


def test_stop_on_collapse_false_warns_once_and_the_summary_says_the_run_collapsed(tmp_path, capsys):
    """The same command's config run in this process on the CLI's two devices (the run above tests
    the CLI's stop; a job that returns is the CLI's exit code 0)."""
    overrides = [*COLLAPSING[1:], "--config.total_steps=100", "--config.stop_on_collapse=False"]
    config = load_config(os.path.join(ROOT, COLLAPSING[0].removeprefix("--config=")), overrides)
    pretrain.train_and_evaluate(config, str(tmp_path), mesh=parallel.create_mesh(jax.devices()[:2]))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[pretrain] warning:")]
    assert len(warnings) == 1 and "training goes on (stop_on_collapse=False)" in warnings[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["collapsed_at_step"] >= 1 and summary["collapse_detected_at_step"] == 60
    assert summary[health.NEGATIVE_COSINE] >= health.COLLAPSE_COSINE
    assert "collapsed" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_the_demo_recipe_at_zero_residual_scale_and_t_0_1_collapses_on_seed_2_and_stops(tmp_path):
    """The known case (README, Training health): about 75 s on two cores; the tiny run above
    covers the same behaviour in `make test`."""
    result = run_cli(
        "--config=configs/digits_supcon.py",
        f"--workdir={tmp_path}",
        "--config.seed=2",
        "--config.model.zero_init_residual=True",
        "--config.total_steps=100",
        "--config.eval_every_steps=0",
        "--config.plots=False",
    )
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    stopped = r"jax-supcon: stopped: the projections collapsed to one vector at step \d+ and stayed so to step 75 "
    assert re.match(stopped, last), last
    assert "try model.zero_init_residual=False, a higher loss.temperature (now 0.1)" in last
