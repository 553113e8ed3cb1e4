"""mi-ideas: mechanistic-interpretability project ideas as runnable, reproducible experiments.

Quick start::

    import mi_ideas
    result = mi_ideas.run("cis-toy-model", task="u-and")
    print(result.metrics)
    again = mi_ideas.load_run(result.run_dir)

This module stays cheap to import (no torch): heavy libraries load when a run needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mi_ideas.errors import ConfigError, MiIdeasError, RunError, UsageError
from mi_ideas.hookspecs import hookimpl
from mi_ideas.contract import Headline, Idea, IdeaConfig, IdeaResult, MemoryItem, Provenance
from mi_ideas.context import RunContext
from mi_ideas.runs.records import RunRecord, load_run

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "Headline", "Idea", "IdeaConfig", "IdeaResult", "MemoryItem", "MiIdeasError", "Provenance",
    "RunContext", "RunError", "RunRecord", "UsageError", "hookimpl", "list_ideas",
    "load_dataset", "load_dictionary", "load_run", "load_subject", "run",
]


def run(
    idea: str,
    config: IdeaConfig | dict[str, Any] | None = None,
    *,
    seed: int = 0,
    out: str | Path | None = None,
    config_file: str | Path | None = None,
    quiet: bool = False,
    host: Any = None,
    model: Any = None,
    saes: Any = None,
    data: Any = None,
    remote: Any = None,
    memory_budget: Any = None,
    preset: str | None = None,
    **values: Any,
) -> IdeaResult:
    """Run an idea and return its result (the idea's own pydantic ``Result``).

    Config values come from ``config_file``, then ``config`` (a dict or the idea's Config),
    then keyword arguments: ``mi_ideas.run("cis-toy-model", task="tms", n_features=5)``.
    The run directory (``result.run_dir``) is created under ``out`` (default ``./runs``).
    ``model`` is a spec (``"zoo:stories-gpt2"``, ``"hf:gpt2"``, ``"tl:gpt2"``) or your own
    nnsight / TransformerLens / Hugging Face model object; ``saes`` a list of specs or
    SAELens objects; ``data`` a spec or a list of strings; ``remote`` ``"local"``,
    ``"ndif"`` or a URL; ``memory_budget`` (``"8GB"``, bytes) caps the idea's estimated
    peak memory (default: ``$MI_IDEAS_MEMORY_BUDGET`` or half the machine's RAM).
    ``preset`` names one of the idea's ``presets`` (``mi-ideas show IDEA`` lists them),
    applied first, so the other values override it: ``mi_ideas.run("activation-plateaus",
    preset="quick")``.
    """
    from mi_ideas.runs.execute import execute

    merged: Any = config
    if values or not isinstance(config, IdeaConfig):
        base = config.model_dump() if isinstance(config, IdeaConfig) else (config or {})
        merged = {**base, **values}
    record = execute(idea, config=merged, file=config_file, seed=seed, out=out, host=host,
                     quiet=quiet, command=[], model=model, saes=saes, data=data, remote=remote,
                     memory_budget=memory_budget, preset=preset)
    assert record.result is not None
    return record.result


def list_ideas(host: Any = None) -> dict[str, type[Idea]]:
    """Every installed idea by name."""
    from mi_ideas.host import get_host

    return dict((host or get_host()).ideas)


def load_subject(model: Any = "zoo:stories-gpt2", *, remote: Any = None, host: Any = None) -> Any:
    """A model spec (``"zoo:stories-gpt2"``, ``"hf:gpt2"``, ``"tl:gpt2"``) or model object as
    a :class:`mi_ideas.subject.Subject`; see :func:`mi_ideas.host.resolve_model`."""
    from mi_ideas.host import resolve_model

    return resolve_model(model, remote=remote, host=host)


def load_dataset(spec: Any = "zoo:stories", *, seed: int = 0, host: Any = None) -> Any:
    """A data spec (``"zoo:stories:200"``, ``"text:PATH"``, ...) as a
    :class:`mi_ideas.data.Dataset`; see :func:`mi_ideas.host.resolve_dataset`."""
    from mi_ideas.host import resolve_dataset

    return resolve_dataset(spec, seed=seed, host=host)


def load_dictionary(spec: Any, subject: Any = None, *, host: Any = None) -> Any:
    """A dictionary spec (``"zoo:NAME"``, ``"saelens:RELEASE/ID"``, ``"sparsify:DIR"``, a
    directory) as a SAELens object, checked against ``subject`` when given; see
    :func:`mi_ideas.host.resolve_dictionary`."""
    from mi_ideas.host import resolve_dictionary

    return resolve_dictionary(spec, subject, host=host)
