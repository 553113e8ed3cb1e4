"""Run directories: creating, executing into, finalising, and reading back.

Layout of ``runs/<idea>/<UTC timestamp>-<short hash>/``::

    config.json       the validated config
    provenance.json   versions, seed, git revision, command, status, wall time
    result.json       the idea's result (only once the run is complete)
    report.html       metrics with definitions, figures, config and provenance in one file
    artifacts/        tensors (safetensors) and JSON data
    figures/          PNG figures

Every file is written atomically (temp file + rename). Nothing is ever unpickled.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from mi_ideas.errors import MiIdeasError, RunError, UsageError
from mi_ideas.idea import IdeaConfig, IdeaResult, Provenance, RunContext, atomic_write_text

DEFAULT_RUNS_DIR = "runs"
_TRACKED_PACKAGES = (
    "torch", "numpy", "pydantic", "pluggy", "safetensors",
    "nnsight", "transformers", "transformer-lens", "sae-lens",
)


@dataclass
class RunRecord:
    """A run: its idea, validated config, seed, directory, provenance and (once done) result."""

    idea: str
    config: IdeaConfig
    seed: int
    path: Path
    provenance: Provenance
    result: IdeaResult | None = None

    def load_artifact(self, name: str) -> dict[str, Any]:
        """Read an artifact back: a dict of tensors (safetensors) or JSON data."""
        rel = (self.result.artifacts if self.result else {}).get(name)
        candidates = [self.path / rel] if rel else []
        candidates += [self.path / "artifacts" / f"{name}.safetensors",
                       self.path / "artifacts" / f"{name}.json"]
        for path in candidates:
            if path.is_file():
                if path.suffix == ".json":
                    return json.loads(path.read_text(encoding="utf-8"))
                from safetensors.torch import load_file

                return load_file(str(path))
        raise UsageError(
            f"run {str(self.path)!r} has no artifact named {name!r}; it has "
            f"{sorted(self.result.artifacts) if self.result else []}."
        )


def default_runs_dir() -> Path:
    """Where runs go when no ``--out`` is given: ``$MI_IDEAS_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get("MI_IDEAS_RUNS_DIR", DEFAULT_RUNS_DIR))


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def config_hash(idea: str, config: IdeaConfig, seed: int) -> str:
    """Short hash of what determines a run: idea, config and seed."""
    payload = json.dumps(
        {"idea": idea, "config": config.model_dump(mode="json"), "seed": seed}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def new_run_dir(root: Path, idea: str, config: IdeaConfig, seed: int, now: _dt.datetime) -> Path:
    """Create a fresh, empty run directory; never reuses an existing one."""
    base = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{config_hash(idea, config, seed)}"
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


def _git_revision() -> str | None:
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


def _package_versions() -> dict[str, str]:
    out = {}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _mi_ideas_version() -> str:
    try:
        return metadata.version("mi-ideas")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n")


def _write_provenance(record: RunRecord) -> None:
    atomic_write_text(
        record.path / "provenance.json", record.provenance.model_dump_json(indent=2) + "\n"
    )


def execute(
    idea_name: str,
    *,
    config: IdeaConfig | Mapping[str, Any] | None = None,
    file: str | Path | None = None,
    sets: tuple[str, ...] | list[str] = (),
    seed: int = 0,
    out: str | Path | None = None,
    host: Any = None,
    quiet: bool = False,
    command: list[str] | None = None,
    model: Any = None,
    saes: Any = None,
    data: Any = None,
    remote: Any = None,
) -> RunRecord:
    """Validate a config, run an idea into a new run directory, and return the record.

    Config precedence: ``file`` < ``sets`` (``key=value`` strings) < ``config`` (a mapping
    of values or a ready config object). Raises :class:`~mi_ideas.errors.ConfigError` before
    anything is written when the config is bad, and :class:`~mi_ideas.errors.RunError`
    (run directory marked failed) when the idea raises.
    """
    from mi_ideas.config import build_config
    from mi_ideas.host import get_host

    host = host or get_host()
    idea_cls = host.get_idea(idea_name)
    if isinstance(config, IdeaConfig):
        if not isinstance(config, idea_cls.Config):
            raise UsageError(
                f"config is a {type(config).__name__}, but {idea_name!r} expects "
                f"{idea_cls.Config.__name__}."
            )
        if file is not None or sets:
            config = build_config(
                idea_cls.Config, file=file, sets=sets,
                values=config.model_dump(exclude_unset=True), idea=idea_name,
            )
    else:
        config = build_config(idea_cls.Config, file=file, sets=sets, values=config, idea=idea_name)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"seed must be an integer, got {seed!r}.")
    # Model, dictionaries and data are resolved before the run directory exists, so a bad
    # spec is a usage error that writes nothing.
    inputs = resolve_inputs(idea_cls, host, model=model, saes=saes, data=data,
                            remote=remote, seed=seed)

    started = _utc_now()
    root = Path(out) if out is not None else default_runs_dir()
    path = new_run_dir(root, idea_name, config, seed, started)
    plugin = host.plugin_of(idea_name)
    provenance = Provenance(
        idea=idea_name,
        plugin=plugin.name if plugin else None,
        plugin_distribution=plugin.distribution if plugin else None,
        plugin_version=plugin.version if plugin else None,
        mi_ideas_version=_mi_ideas_version(),
        python=platform.python_version(),
        platform=platform.platform(),
        packages=_package_versions(),
        seed=seed,
        git_revision=_git_revision(),
        command=list(command if command is not None else sys.argv),
        status="running",
        started_at=started.isoformat(),
        **inputs.provenance(),
    )
    record = RunRecord(idea=idea_name, config=config, seed=seed, path=path, provenance=provenance)
    _write_json(path / "config.json", config.model_dump(mode="json"))
    _write_provenance(record)
    return _run_in(record, idea_cls, inputs, host, quiet)


def resume(run_dir: str | Path, *, host: Any = None, quiet: bool = False,
           command: list[str] | None = None, model: Any = None, saes: Any = None,
           data: Any = None, remote: Any = None) -> RunRecord:
    """Run a failed or interrupted run again, in its own directory, with its config and seed.

    Ideas that save checkpoints (:meth:`RunContext.checkpoint`) pick up where they stopped.
    The model, dictionaries and data are the recorded specs unless given again (needed when
    the original run was handed Python objects). Earlier attempts stay in provenance.json
    under ``attempts``.
    """
    from mi_ideas.host import get_host

    host = host or get_host()
    old = load_run(run_dir, host=host)
    if old.provenance.status == "complete":
        raise UsageError(
            f"the run in {str(run_dir)!r} is complete; there is nothing to resume. Start a new "
            f"run with `mi-ideas run {old.idea}`."
        )
    idea_cls = host.get_idea(old.idea)
    prov = old.provenance.model_dump()
    recorded_model = (prov.get("model") or {}).get("spec")
    recorded_saes = [d["spec"] for d in prov.get("dictionaries") or []] or None
    recorded_data = (prov.get("data") or {}).get("spec")
    recorded_remote = (prov.get("model") or {}).get("remote")
    inputs = resolve_inputs(
        idea_cls, host, seed=old.seed,
        model=model if model is not None else recorded_model,
        saes=saes if saes is not None else recorded_saes,
        data=data if data is not None else recorded_data,
        remote=remote if remote is not None else recorded_remote,
    )
    attempt = {k: prov.get(k) for k in ("started_at", "finished_at", "status", "error",
                                        "wall_time_s")}
    provenance = old.provenance.model_copy(update={
        "attempts": [*(prov.get("attempts") or []), attempt],
        "status": "running", "error": None, "finished_at": None, "wall_time_s": None,
        "started_at": _utc_now().isoformat(), "traceback": None,
        "command": list(command if command is not None else sys.argv),
        **inputs.provenance(),
    })
    record = RunRecord(idea=old.idea, config=old.config, seed=old.seed, path=Path(run_dir),
                       provenance=provenance)
    _write_provenance(record)
    return _run_in(record, idea_cls, inputs, host, quiet)


def _run_in(record: RunRecord, idea_cls: Any, inputs: "RunInputs", host: Any,
            quiet: bool) -> RunRecord:
    """Call the idea in a prepared run directory and finalise the directory."""
    path, config, seed, idea_name = record.path, record.config, record.seed, record.idea

    t0 = time.perf_counter()
    ctx = RunContext(seed=seed, run_dir=path, quiet=quiet, subject=inputs.subject,
                     saes=inputs.saes, dataset=inputs.dataset)
    try:
        host.run_started(record)
        result = idea_cls().run(ctx, config)
        if not isinstance(result, idea_cls.Result):
            raise TypeError(
                f"{idea_cls.__name__}.run returned {type(result).__name__}, "
                f"expected {idea_cls.Result.__name__}"
            )
    except KeyboardInterrupt:
        _finish(record, t0, "interrupted", error="interrupted by the user (Ctrl-C)")
        _notify_finished(host, record, None)
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure marks the run failed
        message = exc.args[0] if isinstance(exc, MiIdeasError) and exc.args else (
            f"{type(exc).__name__}: {exc}"
        )
        _finish(record, t0, "failed", error=message, tb=traceback.format_exc())
        _notify_finished(host, record, None)
        raise RunError(
            f"run of {idea_name!r} failed: {message}. The run directory {str(path)!r} is "
            f"marked failed; provenance.json holds the traceback.",
            run_dir=str(path),
        ) from exc

    result = result.model_copy(
        update={
            "artifacts": {**ctx.artifacts.saved, **result.artifacts},
            "figures": {**ctx.artifacts.figures, **result.figures},
            "run_dir": str(path),
        }
    )
    record.result = result
    _finish(record, t0, "complete")
    try:
        from mi_ideas.report import write_report

        write_report(path)
    except Exception as exc:  # noqa: BLE001 - the run itself is complete and saved
        print(f"mi-ideas: warning: could not write report.html ({exc!r}); "
              f"`mi-ideas report {path}` tries again.", file=sys.stderr)
    result = result.model_copy(update={"provenance": record.provenance})
    record.result = result
    _notify_finished(host, record, result)
    return record


@dataclass
class RunInputs:
    """The model, dictionaries and dataset a run was given (resolved from specs)."""

    subject: Any = None
    saes: list[Any] | None = None
    sae_specs: list[str] | None = None
    dataset: Any = None
    remote: Any = None

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.subject is not None:
            out["model"] = {"spec": self.subject.spec, "backend": self.subject.backend,
                            "fingerprint": self.subject.fingerprint,
                            "remote": self.remote if self.remote else None}
        if self.saes:
            from mi_ideas.dictionaries import site_of

            out["dictionaries"] = [
                {"spec": spec, "class": type(sae).__name__, "site": site_of(sae),
                 "d_sae": int(sae.cfg.d_sae)}
                for spec, sae in zip(self.sae_specs or [], self.saes)
            ]
        if self.dataset is not None:
            out["data"] = {"spec": self.dataset.spec, "fingerprint": self.dataset.fingerprint,
                           "n_texts": len(self.dataset)}
        return out


def resolve_inputs(idea_cls: Any, host: Any, *, model: Any, saes: Any, data: Any, remote: Any,
                   seed: int) -> RunInputs:
    """Check the idea takes what it is given, then load the model, dictionaries and data."""
    name = idea_cls.name
    for given, flag, uses in ((model, "--model", idea_cls.uses_model),
                              (saes, "--sae", idea_cls.uses_saes),
                              (data, "--data", idea_cls.uses_data)):
        if given not in (None, [], ()) and not uses:
            raise UsageError(f"{name!r} does not take {flag}: it does not use one.")
    if remote not in (None, False, "", "off"):
        if not idea_cls.uses_model:
            raise UsageError(f"{name!r} uses no model, so --remote does not apply.")
        if not idea_cls.remote:
            raise UsageError(
                f"{name!r} cannot run remotely: its model calls need local access (it says "
                f"remote = False). Run it without --remote on a machine that holds the model."
            )
    inputs = RunInputs(remote=remote)
    if idea_cls.uses_model:
        from mi_ideas.models import load_subject

        inputs.subject = load_subject(model if model is not None else idea_cls.default_model,
                                      remote=remote, host=host)
    if idea_cls.uses_saes:
        from mi_ideas.dictionaries import load_dictionary

        specs = list(saes) if saes not in (None, [], ()) else list(idea_cls.default_saes)
        if isinstance(saes, str):
            specs = [saes]
        inputs.saes = [load_dictionary(s, inputs.subject) for s in specs]
        inputs.sae_specs = [s if isinstance(s, str) else type(s).__name__ for s in specs]
    if idea_cls.uses_data:
        from mi_ideas.data import load_dataset

        inputs.dataset = load_dataset(data if data is not None else idea_cls.default_data,
                                      seed=seed, host=host)
    return inputs


def _finish(record: RunRecord, t0: float, status: str, error: str | None = None,
            tb: str | None = None) -> None:
    """Write result.json (when complete) and then the final provenance."""
    now = _utc_now()
    update: dict[str, Any] = {
        "status": status,
        "error": error,
        "finished_at": now.isoformat(),
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }
    if tb:
        update["traceback"] = tb
    record.provenance = record.provenance.model_copy(update=update)
    if status == "complete" and record.result is not None:
        body = record.result.model_dump(mode="json", exclude={"provenance"})
        _write_json(record.path / "result.json", body)
    _write_provenance(record)


def _notify_finished(host: Any, record: RunRecord, result: IdeaResult | None) -> None:
    try:
        host.run_finished(record, result)
    except Exception as exc:  # noqa: BLE001 - the run directory is already final
        print(f"mi-ideas: warning: a mi_ideas_run_finished hook raised {exc!r}", file=sys.stderr)


def load_run(path: str | Path, host: Any = None) -> RunRecord:
    """Read a run directory back into the idea's own Config and Result objects."""
    from mi_ideas.host import get_host

    path = Path(path)
    prov_path = path / "provenance.json"
    if not prov_path.is_file():
        raise UsageError(
            f"{str(path)!r} is not a run directory (no provenance.json); run directories "
            f"look like runs/<idea>/<timestamp>-<hash>/."
        )
    provenance = Provenance.model_validate_json(prov_path.read_text(encoding="utf-8"))
    host = host or get_host()
    idea_cls = host.get_idea(provenance.idea)
    config = idea_cls.Config.model_validate_json((path / "config.json").read_text(encoding="utf-8"))
    result = None
    result_path = path / "result.json"
    if result_path.is_file():
        data = json.loads(result_path.read_text(encoding="utf-8"))
        data["provenance"] = provenance.model_dump(mode="json")
        data["run_dir"] = str(path)  # the directory may have moved since the run
        result = idea_cls.Result.model_validate(data)
    return RunRecord(
        idea=provenance.idea, config=config, seed=provenance.seed, path=path,
        provenance=provenance, result=result,
    )
