"""Orbax checkpoints in `WORKDIR/checkpoints`: save, keep the latest N, restore (sharded).

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames), so a run
killed mid-save leaves the previous checkpoint intact and the next start resumes from it.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

CHECKPOINT_DIR = "checkpoints"


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` for one train-state pytree."""

    def __init__(self, workdir: str, *, keep: int = 2, create: bool = True):
        """`create=False` for restoring only (stage 2 reading stage 1): nothing is written."""
        self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
        options = ocp.CheckpointManagerOptions(preservation_policy=checkpoint_managers.LatestN(keep), create=create)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Restore into the shapes, dtypes and shardings of `abstract_state` (from eval_shape)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def close(self) -> None:
        """Wait for pending asynchronous saves, then release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
