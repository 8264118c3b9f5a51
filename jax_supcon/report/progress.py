"""Console progress: a bar for evaluation passes and the ETA of training, from process 0 only."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

import jax

T = TypeVar("T")

NON_TTY_INTERVAL_S = 30.0  # logs (not a terminal) get a line this often, not a redrawn bar
BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s` or `2h07m`: short enough for a console line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta(done: int, total: int, elapsed_s: float) -> str:
    """Time left at the rate so far, or `?` before anything is done."""
    if done <= 0 or elapsed_s <= 0:
        return "?"
    return format_duration(elapsed_s / done * max(total - done, 0))


def _line(desc: str, done: int, total: int, elapsed_s: float) -> str:
    filled = BAR_WIDTH * min(done, total) // max(total, 1)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"{desc} [{bar}] {done}/{total} batches, {format_duration(elapsed_s)}, ETA {eta(done, total, elapsed_s)}"


def progress(items: Iterable[T], *, total: int, desc: str, stream: TextIO | None = None) -> Iterator[T]:
    """Yield `items`, drawing a bar on stderr: redrawn in place on a terminal, one line every
    `NON_TTY_INTERVAL_S` (and at the end) in a log file. Silent on processes other than 0."""
    stream = stream or sys.stderr
    if jax.process_index() != 0:
        yield from items
        return
    tty = stream.isatty()
    start = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if tty and now - last >= 0.1:
            stream.write("\r" + _line(desc, done, total, now - start))
            stream.flush()
            last = now
        elif not tty and now - last >= NON_TTY_INTERVAL_S:
            stream.write(_line(desc, done, total, now - start) + "\n")
            last = now
    elapsed = time.perf_counter() - start
    stream.write(("\r" if tty else "") + _line(desc, done, max(total, done), elapsed) + "\n")
    stream.flush()
