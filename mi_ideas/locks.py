"""One writer per run directory: an ``fcntl`` lock on ``RUN_DIR/.writer.lock``.

The process that runs (or resumes) a run holds an exclusive lock on the file for as long as
it writes the directory, records its pid, host and start time in it, and removes it when
it is done. The operating
system drops the lock when the process dies, however it dies (``kill -9`` included), so:

- ``resume`` on a run whose lock is held refuses and names the live writer;
- a run whose provenance says ``running`` but whose lock is free lost its writer: it is
  shown as ``stale`` (see :func:`writer_alive`) and can be resumed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

from mi_ideas.errors import UsageError

LOCK_NAME = ".writer.lock"


def _fcntl() -> Any:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, no stale detection
        return None
    return fcntl


@contextlib.contextmanager
def writer_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory's writer lock; a clear error when another process holds it."""
    fcntl = _fcntl()
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = read_owner(run_dir)
            who = (f"process {owner.get('pid')} on {owner.get('host')} (since "
                   f"{owner.get('started_at')})") if owner else "another process"
            raise UsageError(
                f"the run in {str(run_dir)!r} is live: {who} is writing it. Two writers would "
                f"corrupt it; wait for that process to finish, or stop it first (a stopped "
                f"run can be resumed)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        }).encode())
        os.fsync(fd)
        try:
            yield
        finally:
            # A finished writer leaves no lock file behind (the directory holds only the
            # run's own files). Unlinked while still held: a process that opened the old
            # file fails its non-blocking lock until we close; one that comes later makes a
            # new file. (Only three processes racing at this instant could both proceed.)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        os.close(fd)  # closing releases the lock


def read_owner(run_dir: str | Path) -> dict[str, Any]:
    """The pid / host / start time last recorded by a writer ({} when none)."""
    try:
        return json.loads((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def writer_alive(run_dir: str | Path) -> bool:
    """Whether a process holds the run directory's writer lock right now."""
    fcntl = _fcntl()
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None or not path.is_file():  # pragma: no cover - no lock support
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def shown_status(run_dir: str | Path, status: str) -> str:
    """The status to show a reader: ``stale`` for a ``running`` run whose writer is gone."""
    if status == "running" and not writer_alive(run_dir):
        return "stale"
    return status
