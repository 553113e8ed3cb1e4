"""Atomic file writes (a crash mid-write never leaves a partial file under the final name)
and reading run files back with errors that name the file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from mi_ideas.errors import UsageError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_run_file(path: Path, validate: Any = None) -> Any:
    """Read a run file as JSON and validate it; a missing or corrupt file is a clear error
    naming the file and what is wrong with it (never a raw JSON / pydantic traceback)."""
    import json

    from pydantic import ValidationError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"the run file {str(path)!r} is missing, so the run cannot be read back. The run "
            f"directory is incomplete; start a new run."
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"the run file {str(path)!r} is corrupt (not valid JSON: {exc}). It was changed "
            f"or truncated after the run wrote it (run files are written atomically); restore "
            f"it from a copy or start a new run."
        ) from None
    if validate is None:
        return data
    try:
        return validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()[:3])
        raise UsageError(
            f"the run file {str(path)!r} does not hold what mi-ideas expects ({problems}). "
            f"It was edited, or written by an incompatible version of the idea; restore it "
            f"or start a new run."
        ) from None
