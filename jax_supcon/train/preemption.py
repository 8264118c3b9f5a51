"""SIGTERM as a request to stop at the next safe point, for the whole life of a job.

A scheduler that pre-empts a job sends SIGTERM and, after a grace period, SIGKILL. Inside
`sigterm_requests_stop()` SIGTERM only sets a flag: the step loop saves a checkpoint at the step
it reached and raises `Preempted` (the CLI exits 0 and the same command resumes); before the first
step there is nothing new to save; after training, the phases that take long (final embedding,
maps, test evaluation) are skipped and done on the next start. The CLI enters it before anything
else, the jobs enter it too (for library users), and nested entries share one flag.

Single process only: with several processes every one of them must stop at the same step, which
JAX's preemption sync point arranges (`release()` hands SIGTERM back to it). No JAX import here,
so the CLI can install the handler before JAX loads.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator


class Preempted(Exception):  # noqa: N818 (an outcome, not an error: the CLI exits 0)
    """SIGTERM arrived; the run saved what it had and stopped."""


class _Flag:
    requested = False
    depth = 0  # nesting of active `sigterm_requests_stop` blocks that installed or share the handler
    previous = None


_flag = _Flag()


def _handle(signum, frame) -> None:
    _flag.requested = True


@contextlib.contextmanager
def sigterm_requests_stop(enabled: bool = True) -> Iterator[None]:
    """Within the block SIGTERM sets the flag `requested()` reads instead of ending the process.
    Re-entrant (inner blocks share the outer one's flag); a no-op when not `enabled` or outside
    the main thread, where Python cannot install signal handlers."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    if _flag.depth == 0:
        _flag.previous = signal.signal(signal.SIGTERM, _handle)
        _flag.requested = False
    _flag.depth += 1
    try:
        yield
    finally:
        _flag.depth -= 1
        if _flag.depth == 0:
            release()


def release() -> None:
    """Give SIGTERM back to its previous handler (a multi-process run: JAX's preemption notice)."""
    if _flag.previous is not None:
        signal.signal(signal.SIGTERM, _flag.previous)
        _flag.previous = None
    _flag.requested = False


def requested() -> bool:
    """Whether SIGTERM arrived inside an active `sigterm_requests_stop` block."""
    return _flag.requested


def stop_if_requested(reached: str) -> None:
    """Raise `Preempted` if SIGTERM arrived; `reached` says what is saved and what the next start does."""
    if _flag.requested:
        raise Preempted(f"SIGTERM: {reached}")


def stops_on_sigterm(job: Callable[..., dict]) -> Callable[..., dict]:
    """Decorate a job so that, in a single-process run, SIGTERM anywhere inside it is a request to
    stop (see `sigterm_requests_stop`), however it is called (the CLI, a test, a notebook); one that
    came before the job started (the CLI installs the handler first) stops it at once."""

    @functools.wraps(job)
    def run(*args, **kwargs) -> dict:
        import jax

        with sigterm_requests_stop(enabled=jax.process_count() == 1):
            stop_if_requested("stopped before the job started; nothing written")  # while Python was loading
            return job(*args, **kwargs)

    return run
