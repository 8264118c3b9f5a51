"""Average the last or best K checkpoints of a run into a new workdir (SWA over saved checkpoints).

    jax-supcon-average --workdir=SRC --out=DST (--last=K | --best=K)   (or python -m jax_supcon.average)

`--last=K` takes the K newest checkpoints on disk, `--best=K` the K on disk with the highest
`best_metric` logged in SRC/metrics.jsonl. Every floating leaf under `params`, `batch_stats` and
`ema` is the arithmetic mean over them (accumulated in at least float32, cast back to the leaf's
dtype); every other leaf (step, rng, opt_state) is the newest chosen checkpoint's. DST gets
`config.json` (SRC's), `checkpoints/<newest step>` and `average.json`, so stage 2
(`--config.pretrained_workdir=DST`) reads it like any stage-1 workdir.

Averaged BatchNorm statistics are an approximation: SWA proper re-estimates them with a pass over
the training data under the averaged weights.

The state is restored from each checkpoint's own metadata (replicated over the local devices), so
this works for any job and whatever device count the run used.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from jax_supcon import cli

AVERAGED_KEYS = ("params", "batch_stats", "ema")
AVERAGE_FILE = "average.json"


def define_flags(values: flags.FlagValues = flags.FLAGS, sys_argv: list[str] | None = None) -> None:
    """Flags of the command only, defined into `values` (`sys_argv`: unused; every command takes it):
    importing this module defines none (no clash with `jax_supcon.main`)."""
    flags.DEFINE_string("workdir", None, "Workdir of the run whose checkpoints are averaged.", flag_values=values)
    flags.DEFINE_string("out", None, "New workdir for the averaged checkpoint (absent or empty).", flag_values=values)
    flags.DEFINE_integer("last", 0, "Average the K newest checkpoints on disk.", flag_values=values)
    flags.DEFINE_integer(
        "best", 0, "Average the K checkpoints on disk with the highest best_metric.", flag_values=values
    )
    flags.mark_flags_as_required(["workdir", "out"], flag_values=values)


def parse_mode(last: int, best: int) -> tuple[str, int]:
    """(`last` | `best`, K) from the two options, exactly one of which is set (>= 1)."""
    if last and best:
        raise ValueError(f"--last={last} and --best={best}: give one of them, not both")
    if not last and not best:
        raise ValueError("give --last=K or --best=K (K >= 1): which checkpoints to average")
    mode, k = ("last", last) if last else ("best", best)
    if k < 1:
        raise ValueError(f"--{mode}={k} must be >= 1")
    return mode, k


def choose_last(steps: Sequence[int], k: int) -> list[int]:
    """The `k` newest of the `steps` on disk, ascending."""
    steps = sorted(steps)
    if len(steps) < k:
        raise ValueError(
            f"--last={k}: only {len(steps)} checkpoint(s) on disk (steps {steps}); "
            f"keep_checkpoints >= {k} in the run keeps more"
        )
    return steps[-k:]


def choose_best(steps: Sequence[int], records: Sequence[dict], metric: str, k: int) -> list[int]:
    """The `k` steps on disk with the highest `metric` in the logged `records` (ties: the newer), ascending."""
    if not metric:
        raise ValueError(f"--best={k}: the run has no best_metric set; use --last=K")
    on_disk = set(steps)
    scores = {r["step"]: r[metric] for r in records if metric in r and r["step"] in on_disk}  # last record wins
    if len(scores) < k:
        raise ValueError(
            f"--best={k}: only {len(scores)} checkpoint(s) on disk with {metric!r} logged "
            f"(steps {sorted(scores)}; on disk {sorted(steps)}); keep_best >= {k} in the run keeps more"
        )
    ranked = sorted(scores, key=lambda step: (scores[step], step), reverse=True)
    return sorted(ranked[:k])


def _is_averaged(path: tuple, leaf: Any) -> bool:
    """Floating leaves under a top-level key in `AVERAGED_KEYS` (dict or attribute)."""
    import jax.numpy as jnp

    top = getattr(path[0], "key", getattr(path[0], "name", None)) if path else None
    return top in AVERAGED_KEYS and jnp.issubdtype(leaf.dtype, jnp.floating)


def _accumulator_dtype(dtype: Any) -> Any:
    import jax.numpy as jnp

    return jnp.promote_types(dtype, jnp.float32)


def accumulate(total: Any, state: Any) -> Any:
    """Add `state` to the running `total` (None for the first): a sum for averaged leaves, the
    latest value for the others. Call with states oldest first."""
    import jax

    def add(path, leaf, previous=None):
        if not _is_averaged(path, leaf):
            return leaf
        leaf = leaf.astype(_accumulator_dtype(leaf.dtype))
        return leaf if previous is None else previous + leaf

    return jax.tree.map_with_path(add, state) if total is None else jax.tree.map_with_path(add, state, total)


def finish_mean(total: Any, count: int, like: Any) -> Any:
    """Divide the sums of `accumulate` by `count`, cast back to the dtypes of `like` (the newest state)."""
    import jax

    def mean(path, summed, leaf):
        return (summed / count).astype(leaf.dtype) if _is_averaged(path, leaf) else summed

    return jax.tree.map_with_path(mean, total, like)


def _signature(tree: Any) -> tuple:
    """Structure, shapes and dtypes of an abstract tree: what two averaged checkpoints must share."""
    import jax

    return jax.tree.structure(tree), [(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(tree)]


def _check_paths(workdir: str, out: str) -> None:
    """Refuse a missing source, and an output that is the source or holds anything."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"--workdir={workdir!r} does not exist")
    if os.path.realpath(out) == os.path.realpath(workdir):
        raise ValueError(f"--out={out!r} is the source workdir; pick a new directory")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out={out!r} exists and is not empty; pick a new directory")


def average_checkpoints(workdir: str, out: str, *, last: int = 0, best: int = 0) -> dict:
    """Average the `last` newest or `best` best checkpoints of `workdir` into the new workdir `out`;
    returns what `out/average.json` records plus `out` and the saved `step`. Nothing is written
    when an argument or the source is wrong."""
    import jax

    from jax_supcon import parallel
    from jax_supcon.checkpoint import Checkpointer, abstract_target
    from jax_supcon.train import workdir as run_dir

    mode, k = parse_mode(last, best)
    _check_paths(workdir, out)
    config = run_dir.load_config(workdir)
    source = Checkpointer(workdir, create=False)
    steps = source.all_steps() if os.path.isdir(source.directory) else []
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {source.directory}")
    metric = config.get("best_metric") or None
    if mode == "last":
        chosen = choose_last(steps, k)
    else:
        chosen = choose_best(steps, run_dir.MetricLogger.read_records(workdir), metric, k)

    sharding = parallel.replicated(parallel.create_mesh(jax.local_devices()))
    total, newest = None, None
    try:
        for step in chosen:
            target = abstract_target(source.metadata(step), sharding)
            if newest is not None and _signature(target) != _signature(newest):
                raise ValueError(f"checkpoints {chosen[0]} and {step} of {workdir!r} hold different state trees")
            newest = target
            total = accumulate(total, source.restore(target, step))
    finally:
        source.close()
    averaged = finish_mean(total, len(chosen), newest)

    record = {
        "source_workdir": os.path.abspath(workdir),
        "mode": mode,
        "k": k,
        "steps": chosen,
        "metric": metric if mode == "best" else None,
    }
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(os.path.join(workdir, run_dir.CONFIG_FILE), os.path.join(out, run_dir.CONFIG_FILE))
    writer = Checkpointer(out)
    try:
        writer.save(chosen[-1], averaged)
    finally:
        writer.close()  # waits for the asynchronous write
    run_dir.write_json(os.path.join(out, AVERAGE_FILE), record)
    return record | {"out": os.path.abspath(out), "step": chosen[-1]}


def _option(name: str) -> int:
    """A K option's value; given explicitly it must be >= 1 (0 means "not given" otherwise)."""
    flag = flags.FLAGS[name]
    if flag.present and flag.value < 1:
        raise ValueError(f"--{name}={flag.value} must be >= 1")
    return flag.value


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = flags.FLAGS
    with cli.user_errors("jax-supcon-average"):
        summary = average_checkpoints(options.workdir, options.out, last=_option("last"), best=_option("best"))
    print(json.dumps(summary, sort_keys=True))


DESCRIPTION = """jax-supcon-average: average the last or best K checkpoints of a run into a new workdir (SWA).

Usage: jax-supcon-average --workdir=SRC --out=DST (--last=K | --best=K)

DST gets SRC's config.json, one checkpoint (the mean of the chosen ones' params, batch_stats and
EMA) and average.json; stage 2 reads it like any stage-1 workdir
(jax-supcon --config=configs/digits_linear.py --config.pretrained_workdir=DST ...).
Exit codes: 0 done, 2 bad input (nothing written).
"""


def run() -> None:
    """Console-script entry point (`jax-supcon-average`)."""
    define_flags()
    cli.start(main, description=DESCRIPTION, module_name=__name__)


if __name__ == "__main__":
    run()
