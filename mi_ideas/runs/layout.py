"""Where a run lives and what it records about itself: directory, hash, provenance files."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from mi_ideas.contract import IdeaConfig
from mi_ideas.errors import UsageError
from mi_ideas.io import atomic_write_text
from mi_ideas.runs.records import RunRecord

DEFAULT_RUNS_DIR = "runs"
_TRACKED_PACKAGES = (
    "torch", "numpy", "pydantic", "pluggy", "safetensors",
    "nnsight", "transformers", "transformer-lens", "sae-lens",
)


def default_runs_dir() -> Path:
    """Where runs go when no ``--out`` is given: ``$MI_IDEAS_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get("MI_IDEAS_RUNS_DIR", DEFAULT_RUNS_DIR))


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def run_hash(idea: str, config: IdeaConfig, seed: int, inputs: dict[str, Any] | None = None) -> str:
    """Short hash of what determines a run: idea, config, seed, and the model, dictionary
    and data specs (with their fingerprints) and remote setting in ``inputs`` (the
    ``model`` / ``dictionaries`` / ``data`` entries of provenance)."""
    inputs = inputs or {}
    model = inputs.get("model") or {}
    payload = json.dumps({
        "idea": idea, "config": config.model_dump(mode="json"), "seed": seed,
        "model": [model.get("spec"), model.get("fingerprint"), model.get("remote")] if model else None,
        "dictionaries": [d.get("spec") for d in inputs.get("dictionaries") or []],
        "data": [(inputs.get("data") or {}).get("spec"), (inputs.get("data") or {}).get("fingerprint")]
        if inputs.get("data") else None,
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def new_run_dir(root: Path, idea: str, config: IdeaConfig, seed: int, now: _dt.datetime,
                inputs: dict[str, Any] | None = None) -> Path:
    """Create a fresh, empty run directory; never reuses an existing one."""
    base = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{run_hash(idea, config, seed, inputs)}"
    parent = Path(root) / idea
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the runs directory {str(parent)!r}: {exc.strerror}. Choose a "
            f"writable place with --out DIR (or MI_IDEAS_RUNS_DIR)."
        ) from None
    for i in range(1000):
        path = parent / (base if i == 0 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UsageError(f"could not create a new run directory under {str(parent)!r}.")


def git_revision() -> str | None:
    """The git revision of the mi_ideas source, with '-dirty' when it has local edits."""
    src = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def mi_ideas_version() -> str:
    try:
        return metadata.version("mi-ideas")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n")


def write_provenance(record: RunRecord) -> None:
    atomic_write_text(
        record.path / "provenance.json", record.provenance.model_dump_json(indent=2) + "\n"
    )


