"""Run directories: creating, executing into, finalising, and reading back.

:mod:`.layout` (directory names, the run hash, provenance), :mod:`.inputs` (model,
dictionaries and data for a run), :mod:`.execute` (run, resume, finalise),
:mod:`.records` (:class:`RunRecord`, :func:`load_run`).

Layout of ``runs/<idea>/<UTC timestamp>-<short hash>/``::

    config.json       the validated config
    provenance.json   versions, seed, git revision, command, status, wall time
    result.json       the idea's result (only once the run is complete)
    report.html       metrics with definitions, figures, config and provenance in one file
    artifacts/        tensors (safetensors) and JSON data
    figures/          PNG figures

Every file is written atomically (temp file + rename). Nothing is ever unpickled.
"""

from mi_ideas.runs.execute import execute, resume
from mi_ideas.runs.inputs import RunInputs, resolve_inputs
from mi_ideas.runs.layout import DEFAULT_RUNS_DIR, default_runs_dir, new_run_dir, run_hash
from mi_ideas.runs.records import RunRecord, load_run

__all__ = [
    "DEFAULT_RUNS_DIR", "RunInputs", "RunRecord", "default_runs_dir", "execute", "load_run",
    "new_run_dir", "resolve_inputs", "resume", "run_hash",
]
