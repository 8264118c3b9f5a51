"""Orbax checkpoints in `WORKDIR/checkpoints`: save, keep the latest N and the best, restore (sharded).

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames), so a run
killed mid-save leaves the previous checkpoint intact and the next start resumes from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

CHECKPOINT_DIR = "checkpoints"
DAMAGED_SUFFIX = ".damaged"  # a checkpoint that did not restore is renamed <step>.damaged, never deleted


@contextlib.contextmanager
def _stderr_held() -> Iterator[Callable[[], None]]:
    """Hold what is written to file descriptor 2 inside the block and pass it on at its end, unless
    the block calls the `discard` it is given (or raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    keep = [True]
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield lambda: keep.clear()
        except BaseException:
            keep.clear()
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if keep:
                held.seek(0)
                os.write(2, held.read())


def _drop_orbax_read_leftovers() -> None:
    """After a failed orbax read, Python reports each of its abandoned read coroutines when it is
    collected ("Exception ignored in: <coroutine ...>" and a page of TensorStore spec, thousands of
    lines for one truncated file, at any later moment), and tensorstore's callbacks of that read
    find orbax's event loop closed. The failure itself is reported in one line, so from then on
    those reports are dropped; any other unraisable exception passes as before."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_orbax_leftovers", False):
        return

    def hook(unraisable) -> None:
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
            return
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
            return  # a tensorstore callback of the failed read, scheduled on orbax's finished event loop
        previous(unraisable)

    hook.drops_orbax_leftovers = True
    sys.unraisablehook = hook


def checkpoint_directory(workdir: str, step: int | None = None) -> str:
    """`WORKDIR/checkpoints`, or the folder of checkpoint `step` in it (no orbax manager needed)."""
    directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    return directory if step is None else os.path.join(directory, str(step))


def tree_bytes(tree: Any) -> int:
    """Bytes of the arrays (or `jax.ShapeDtypeStruct`s) in `tree`: about one checkpoint's size."""
    import jax
    import numpy as np

    return sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))


def free_bytes(path: str) -> int:
    """Free space on the file system that holds `path` (or would hold it: its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def _one_line(error: Exception, limit: int = 200) -> str:
    """`Type: first line of the message`, cut to `limit` characters (orbax errors span pages)."""
    message = str(error).split(" See full TensorStore details", 1)[0]  # then a page of spec
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` for one train-state pytree.

    With `best_metric`, the `keep_best` checkpoints with the highest values of that metric (passed
    to `save`) are kept as well as the latest `keep`.
    """

    def __init__(
        self,
        workdir: str,
        *,
        keep: int = 2,
        best_metric: str | None = None,
        keep_best: int = 1,
        create: bool = True,
    ):
        """`create=False` for restoring only (stage 2 reading stage 1): nothing is written."""
        self.directory = checkpoint_directory(workdir)
        self._best_metric = best_metric
        policies = [checkpoint_managers.LatestN(keep)]
        if best_metric:
            policies.append(
                checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=False,
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies), create=create
        )
        self._manager = ocp.CheckpointManager(
            self.directory, item_handlers=ocp.StandardCheckpointHandler(), options=options
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def select_step(self, which: str, records: list[dict], metric: str | None) -> int:
        """`latest`, `best` (highest `metric` among the logged `records` still on disk), or a step."""
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if which == "latest":
            return steps[-1]
        if which == "best":
            scored = [(r[metric], r["step"]) for r in records if metric and metric in r and r["step"] in steps]
            if not scored:
                raise ValueError(f"checkpoint='best' needs a checkpoint with {metric!r} logged; have steps {steps}")
            return max(scored)[1]
        if not which.isdigit() or int(which) not in steps:
            raise ValueError(f"checkpoint={which!r}; allowed: 'latest', 'best' or one of the saved steps {steps}")
        return int(which)

    def restore_selected(
        self,
        which: str,
        records: list[dict],
        metric: str | None,
        target: Callable[[int], Any],
        *,
        attempts: int = 3,
    ) -> tuple[Any, int]:
        """(state, step) of checkpoint `which` (`select_step`), restored into `target(step)`, from a
        run that may still be training: when its own rotation deletes the chosen step before it is
        read, `latest` picks the newest again; any other choice is a one-line ValueError."""
        attempt = 1
        while True:
            step = self.select_step(which, records, metric)
            try:
                return self.restore(target(step), step), step
            except Exception:
                if os.path.isdir(os.path.join(self.directory, str(step))):
                    raise  # not rotation: the checkpoint itself is unreadable
                if which != "latest" or attempt == attempts:
                    raise ValueError(
                        f"checkpoint step {step} in {self.directory} was deleted while it was being read: the "
                        "run there is still training and rotating its checkpoints; ask for checkpoint 'latest' "
                        "or wait for the run to end"
                    ) from None
            self._manager.reload()
            attempt += 1

    def metadata(self, step: int) -> Any:
        """The saved tree of checkpoint `step`: shapes and dtypes, no data (to restore any job's state)."""
        return self._manager.item_metadata(step).tree

    def check_space(self, tree: Any, step: int | None = None) -> None:
        """A one-line ValueError when the checkpoint folder's file system has less free space than one
        checkpoint of `tree` (its array bytes): at the start, before anything is compiled, and before
        each save, so a full disk stops the run cleanly instead of in orbax's writer threads."""
        need, free = tree_bytes(tree), free_bytes(self.directory)
        if free >= need:
            return
        what = "a checkpoint" if step is None else f"checkpoint {step}"
        raise ValueError(
            f"no space for {what} in {self.directory}: {_megabytes(free)} free, a checkpoint of this run takes "
            f"about {_megabytes(need)}; {self._what_is_kept()}"
        )

    def _what_is_kept(self) -> str:
        latest = self.latest_step()
        kept = "no checkpoint is saved yet" if latest is None else f"the newest checkpoint is step {latest}"
        return f"{kept}. Free some space and run the same command again"

    @contextlib.contextmanager
    def _no_space_in_one_line(self) -> Iterator[None]:
        """The disk filled up while orbax wrote (another program took the space): one line, not pages."""
        try:
            yield
        except Exception as error:
            if "No space left on device" not in str(error) and getattr(error, "errno", None) != errno.ENOSPC:
                raise
            raise ValueError(
                f"no space left on device writing a checkpoint in {self.directory}; {self._what_is_kept()}"
            ) from None

    def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
        """Save `state` as checkpoint `step`; `metrics` rank it for the best-checkpoint policy, and
        a checkpoint whose metrics lack `best_metric` (undefined on a tiny test split) is kept only
        as one of the latest."""
        if metrics is not None and self._best_metric and metrics.get(self._best_metric) is None:
            metrics = None
        with self._no_space_in_one_line():
            self._manager.wait_until_finished()  # as orbax does first; then the free space is settled
        self.check_space(state, step)
        with self._no_space_in_one_line():
            self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Restore into the shapes, dtypes and shardings of `abstract_state` (from eval_shape).

        A dataclass field that the state gained after the checkpoint was written (a feature added
        to the library since: it is saved without it) restores as empty when it is empty in
        `abstract_state` (the feature is off), so runs recorded by an older version go on."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        target, added = self._without_added_fields(abstract_state, step)
        try:
            restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception:
            _drop_orbax_read_leftovers()
            raise
        return restored if not added else type(abstract_state)(**restored, **{name: {} for name in added})

    def _without_added_fields(self, abstract_state: Any, step: int) -> tuple[Any, list[str]]:
        """(`abstract_state` as a dict without its empty fields that checkpoint `step` lacks, their
        names), or (`abstract_state`, []) when it has them all (or is not a dataclass)."""
        if not dataclasses.is_dataclass(abstract_state):
            return abstract_state, []
        try:
            saved = getattr(self._manager.item_metadata(step), "tree", None)
        except Exception:  # unreadable metadata: the restore itself reports it
            return abstract_state, []
        if not isinstance(saved, dict):
            return abstract_state, []
        fields = {field.name: getattr(abstract_state, field.name) for field in dataclasses.fields(abstract_state)}
        added = [name for name, value in fields.items() if name not in saved and isinstance(value, dict) and not value]
        if not added:
            return abstract_state, []
        return {name: value for name, value in fields.items() if name not in added}, added

    def restore_newest_readable(self, abstract_state: Any) -> tuple[Any, int]:
        """(state, step) of the newest checkpoint that restores. Newer ones that do not (truncated,
        data or metadata missing) are renamed `<step>.damaged` once a readable one is found, each
        reported in one line on stderr; with none readable, a ValueError naming the newest's
        problem, and nothing renamed."""
        failures: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            state, problem = self._try_restore(abstract_state, step)
            if problem is not None:
                failures.append((step, problem))
                continue
            for bad, why in failures:
                self._set_aside(bad, why, resume_step=step)
            return state, step
        if not failures:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        newest, why = failures[0]
        raise ValueError(
            f"no readable checkpoint in {self.directory}: step {newest} ({why}) and {len(failures) - 1} older; "
            "nothing was changed (move the workdir aside to start afresh)"
        )

    def _try_restore(self, abstract_state: Any, step: int, grace_s: float = 0.5) -> tuple[Any, str | None]:
        """(state, None), or (None, why in one line) when checkpoint `step` does not restore. A failed
        orbax read leaves pages of reports behind (tracebacks from tensorstore callbacks in other
        threads, abandoned coroutines and futures reported when collected): they are collected here,
        while stderr is held, and dropped."""
        with _stderr_held() as discard:
            try:
                return self.restore(abstract_state, step), None
            except Exception as error:  # noqa: BLE001 (any failure to read makes the checkpoint unusable)
                why = _one_line(error)
            time.sleep(grace_s)  # the other threads' callbacks
            gc.collect()  # the abandoned reads, now that the exception is gone
            discard()
            return None, why

    def _set_aside(self, step: int, why: str, *, resume_step: int) -> None:
        import jax

        path = os.path.join(self.directory, str(step))
        if jax.process_index() == 0:
            target = path + DAMAGED_SUFFIX
            suffix = 1
            while os.path.exists(target):  # an earlier damaged copy of the same step stays too
                target, suffix = f"{path}{DAMAGED_SUFFIX}{suffix}", suffix + 1
            os.rename(path, target)
            print(
                f"jax-supcon: checkpoint {step} is unreadable ({why}); moved to {target}, resuming from step "
                f"{resume_step}",
                file=sys.stderr,
                flush=True,
            )
        self._manager.reload()

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        with self._no_space_in_one_line():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending asynchronous saves, then release the manager."""
        try:
            self.wait()
        finally:
            self._manager.close()


def abstract_target(metadata_tree: Any, sharding: Any) -> Any:
    """`jax.ShapeDtypeStruct`s with `sharding` for every array of a checkpoint's metadata tree
    (`Checkpointer.metadata`): restores any job's state without building its model or optimizer."""
    import jax

    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), metadata_tree)
