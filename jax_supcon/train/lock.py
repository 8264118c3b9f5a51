"""One run per workdir: an exclusive `flock` on `WORKDIR/.lock` held for as long as a job runs
(`holds_workdir` decorates every job), and a read-only look at who holds it (`running_holder`)
for the tools that read a workdir while it may be in use."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
from collections.abc import Callable, Iterator

from jax_supcon.parallel import is_main_process

LOCK_FILE = ".lock"  # held (flock) by the run using the workdir; names its host and pid


def make_workdir(workdir: str) -> bool:
    """Create `workdir` if needed (returns whether it did); a path that cannot be a workdir (a file,
    under a file, read-only, no space) is a one-line ValueError."""
    if os.path.isdir(workdir):
        if not os.access(workdir, os.W_OK | os.X_OK):
            raise ValueError(f"--workdir={workdir!r} is not writable")
        return False
    try:
        os.makedirs(workdir)
    except OSError as error:
        if isinstance(error, FileExistsError) and os.path.isdir(workdir):
            return False  # another run started at the same moment made it; the lock decides between them
        raise ValueError(f"--workdir={workdir!r} cannot be created: {error.strerror}") from None
    return True


@contextlib.contextmanager
def exclusive(workdir: str) -> Iterator[None]:
    """Hold `workdir` for one run: an exclusive `flock` on `workdir/.lock`, which names the holder's
    host and pid. A second run gets a one-line ValueError naming the holder. The kernel releases
    the lock when its process dies, so a lock file left by a killed run is stale by construction.
    Process 0 holds it for every process of a multi-process job. On a shared file system the lock
    is as good as its flock support (NFSv4 and Lustre/GPFS with flock enabled: yes; NFSv3 without
    lockd, or a file system mounted without flock: no exclusion). A workdir this call created is
    removed again when the run leaves nothing in it but the lock (and an empty checkpoints/)."""
    if not is_main_process():
        yield
        return
    import fcntl

    created = make_workdir(workdir)
    path = os.path.join(workdir, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ValueError(
                f"workdir {workdir!r} is in use by {holder}; wait for that run to end or pick a new --workdir"
            ) from None
        if os.path.exists(path) and os.fstat(fd).st_ino == os.stat(path).st_ino:
            break  # locked the file that is in place (not one a finishing run just unlinked)
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"host {socket.gethostname()} pid {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode())
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # releases the lock
        if created:  # a run refused before it wrote anything leaves no folder behind
            for empty in (os.path.join(workdir, "checkpoints"), workdir):
                with contextlib.suppress(OSError):
                    os.rmdir(empty)


def running_holder(workdir: str) -> str | None:
    """Who holds `workdir` (its lock file's "host H pid P (since ...)") while a run is in it, else
    None. A clean exit removes the lock file; one left by a killed process on this host is stale
    (its pid is gone); a holder on another host is taken at its word. Reads only: taking the lock to
    test it could make a run starting at that moment refuse the workdir."""
    try:
        with open(os.path.join(workdir, LOCK_FILE)) as f:
            holder = f.read().strip()
    except OSError:
        return None
    parts = holder.split()
    here = socket.gethostname()
    if len(parts) >= 4 and parts[:3:2] == ["host", "pid"] and parts[1] == here and parts[3].isdigit():
        try:
            os.kill(int(parts[3]), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
    return holder or None


def holds_workdir(job: Callable[..., dict]) -> Callable[..., dict]:
    """Decorate a job's `train_and_evaluate(config, workdir, ...)` so it runs under `exclusive(workdir)`."""

    @functools.wraps(job)
    def run(config, workdir: str, *args, **kwargs) -> dict:
        with exclusive(workdir):
            return job(config, workdir, *args, **kwargs)

    return run
