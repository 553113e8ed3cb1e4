"""Running an idea into a run directory, resuming one, and finalising it."""

from __future__ import annotations

import contextlib
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping

from mi_ideas.context import RunContext, progress_bars_wanted
from mi_ideas.contract import IdeaConfig, IdeaResult, Provenance
from mi_ideas.errors import MiIdeasError, RunError, UsageError
from mi_ideas.runs.inputs import RunInputs, resolve_inputs
from mi_ideas.locks import writer_lock
from mi_ideas.runs.memory import check_memory
from mi_ideas.runs.layout import (
    git_revision, mi_ideas_version, package_versions, utc_now, write_json,
    write_provenance, default_runs_dir, new_run_dir,
)
from mi_ideas.runs.records import RunRecord, load_run


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
    memory_budget: Any = None,
    preset: str | None = None,
) -> RunRecord:
    """Validate a config, run an idea into a new run directory, and return the record.

    Config precedence: ``preset`` (a name in ``Idea.presets``) < ``file`` < ``sets``
    (``key=value`` strings) < ``config`` (a mapping of values or a ready config object).
    Raises :class:`~mi_ideas.errors.ConfigError` before anything is written when the config
    is bad, and :class:`~mi_ideas.errors.RunError` (run directory marked failed) when the
    idea raises.
    """
    from mi_ideas.config import build_config, preset_values
    from mi_ideas.host import get_host

    host = host or get_host()
    idea_cls = host.get_idea(idea_name)
    base = preset_values(idea_cls, preset)
    if isinstance(config, IdeaConfig):
        if not isinstance(config, idea_cls.Config):
            raise UsageError(
                f"config is a {type(config).__name__}, but {idea_name!r} expects "
                f"{idea_cls.Config.__name__}."
            )
        if file is not None or sets or base:
            config = build_config(
                idea_cls.Config, file=file, sets=sets,
                values=config.model_dump(exclude_unset=True), idea=idea_name, base=base,
            )
    else:
        config = build_config(idea_cls.Config, file=file, sets=sets, values=config, idea=idea_name,
                              base=base)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"seed must be an integer, got {seed!r}.")
    # Model, dictionaries and data are resolved before the run directory exists, so a bad
    # spec is a usage error that writes nothing.
    t_load = time.perf_counter()
    with library_bars(show=not quiet and progress_bars_wanted(), models=idea_cls.uses_model):
        inputs = resolve_inputs(idea_cls, host, model=model, saes=saes, data=data,
                                remote=remote, seed=seed)
    # Stage lines come when a stage is done, so an error is never preceded by one.
    loaded = [w for w, used in (("the model", idea_cls.uses_model),
                                ("dictionaries", idea_cls.uses_saes),
                                ("data", idea_cls.uses_data)) if used]
    t_loaded = time.perf_counter() - t_load
    # The idea's own check of the config against its inputs, then the memory estimate, may
    # refuse the config, so the stage line waits for them.
    idea_cls.check(config, inputs.subject, dataset=inputs.dataset, saes=inputs.saes, host=host)
    estimate = check_memory(idea_cls, config, inputs.subject, memory_budget, inputs.dataset)
    if not quiet and loaded:
        stage(f"{idea_name}: loaded {', '.join(loaded)} in {t_loaded:.1f} s")

    started = utc_now()
    root = Path(out) if out is not None else default_runs_dir()
    path = new_run_dir(root, idea_name, config, seed, started, inputs.provenance())
    plugin = host.plugin_of(idea_name)
    provenance = Provenance(
        idea=idea_name,
        plugin=plugin.name if plugin else None,
        plugin_distribution=plugin.distribution if plugin else None,
        plugin_version=plugin.version if plugin else None,
        mi_ideas_version=mi_ideas_version(),
        python=platform.python_version(),
        platform=platform.platform(),
        packages=package_versions(),
        seed=seed,
        git_revision=git_revision(),
        command=list(command if command is not None else sys.argv),
        status="running",
        started_at=started.isoformat(),
        memory_estimate_bytes=estimate,
        preset=preset,
        **inputs.provenance(),
    )
    record = RunRecord(idea=idea_name, config=config, seed=seed, path=path, provenance=provenance)
    with writer_lock(path):
        write_json(path / "config.json", config.model_dump(mode="json"))
        write_provenance(record)
        return _run_in(record, idea_cls, inputs, host, quiet)


def resume(run_dir: str | Path, *, host: Any = None, quiet: bool = False,
           command: list[str] | None = None, model: Any = None, saes: Any = None,
           data: Any = None, remote: Any = None, memory_budget: Any = None) -> RunRecord:
    """Run a failed or interrupted run again, in its own directory, with its config and seed.

    Ideas that save checkpoints (:meth:`RunContext.checkpoint`) pick up where they stopped.
    The model, dictionaries and data are the recorded specs unless given again (needed when
    the original run was handed Python objects). Earlier attempts stay in provenance.json
    under ``attempts``.
    """
    from mi_ideas.host import get_host

    host = host or get_host()
    with writer_lock(run_dir):
        return _resume_locked(run_dir, host, quiet, command, model, saes, data, remote,
                              memory_budget)


def _resume_locked(run_dir: str | Path, host: Any, quiet: bool, command: list[str] | None,
                   model: Any, saes: Any, data: Any, remote: Any, memory_budget: Any
                   ) -> RunRecord:
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
    with library_bars(show=not quiet and progress_bars_wanted(), models=idea_cls.uses_model):
        inputs = resolve_inputs(
            idea_cls, host, seed=old.seed,
            model=model if model is not None else recorded_model,
            saes=saes if saes is not None else recorded_saes,
            data=data if data is not None else recorded_data,
            remote=remote if remote is not None else recorded_remote,
        )
    idea_cls.check(old.config, inputs.subject, dataset=inputs.dataset, saes=inputs.saes,
                   host=host)
    check_memory(idea_cls, old.config, inputs.subject, memory_budget, inputs.dataset)
    attempt = {k: prov.get(k) for k in ("started_at", "finished_at", "status", "error",
                                        "wall_time_s")}
    if attempt["status"] == "running":  # its writer died without a word (we hold the lock)
        attempt.update(status="stale", error="the process writing the run died (e.g. kill -9)")
    provenance = old.provenance.model_copy(update={
        "attempts": [*(prov.get("attempts") or []), attempt],
        "status": "running", "error": None, "finished_at": None, "wall_time_s": None,
        "started_at": utc_now().isoformat(), "traceback": None,
        "command": list(command if command is not None else sys.argv),
        **inputs.provenance(),
    })
    record = RunRecord(idea=old.idea, config=old.config, seed=old.seed, path=Path(run_dir),
                       provenance=provenance)
    write_provenance(record)
    return _run_in(record, idea_cls, inputs, host, quiet)


def _run_in(record: RunRecord, idea_cls: Any, inputs: "RunInputs", host: Any,
            quiet: bool) -> RunRecord:
    """Call the idea in a prepared run directory and finalise the directory."""
    path, config, seed, idea_name = record.path, record.config, record.seed, record.idea

    t0 = time.perf_counter()
    ctx = RunContext(seed=seed, run_dir=path, quiet=quiet, subject=inputs.subject,
                     saes=inputs.saes, dataset=inputs.dataset, host=host)
    try:
        host.run_started(record)
        with library_bars(show=not quiet and progress_bars_wanted(), models=idea_cls.uses_model):
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
            f"run of {idea_name!r} failed: {message.rstrip('.')}. The run directory {str(path)!r} is "
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
    if not quiet:
        stage(f"{idea_name}: complete (seed {seed}) in {record.provenance.wall_time_s} s")
    _notify_finished(host, record, result)
    return record


def stage(message: str) -> None:
    """One line on stderr saying which stage a run is in (quiet runs print none)."""
    print(f"mi-ideas: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def library_bars(show: bool, models: bool) -> Iterator[None]:
    """Hide the loading bars of transformers / huggingface_hub (``Loading weights``) unless
    they can be drawn (a terminal, not quiet): under ``-q`` or in a log file they are noise.
    Only touches transformers when the idea loads a model (importing it is slow)."""
    if show or not models:
        yield
        return
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _finish(record: RunRecord, t0: float, status: str, error: str | None = None,
            tb: str | None = None) -> None:
    """Write result.json (when complete) and then the final provenance."""
    now = utc_now()
    update: dict[str, Any] = {
        "status": status,
        "error": error,
        "finished_at": now.isoformat(),
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }
    if tb:
        update["traceback"] = tb
    if status != "complete":
        # What the idea had written before it stopped stays (each file complete: writes are
        # atomic), listed here so nobody mistakes it for a finished run's output.
        update["partial_artifacts"] = sorted(
            str(p.relative_to(record.path)) for sub in ("artifacts", "figures", "checkpoints")
            for p in (record.path / sub).rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
    record.provenance = record.provenance.model_copy(update=update)
    if status == "complete" and record.result is not None:
        body = record.result.model_dump(mode="json", exclude={"provenance"})
        write_json(record.path / "result.json", body)
    write_provenance(record)


def _notify_finished(host: Any, record: RunRecord, result: IdeaResult | None) -> None:
    try:
        host.run_finished(record, result)
    except Exception as exc:  # noqa: BLE001 - the run directory is already final
        print(f"mi-ideas: warning: a mi_ideas_run_finished hook raised {exc!r}", file=sys.stderr)


