"""Result of the cis-toy-model idea (no torch import)."""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import Field

from mi_ideas import IdeaResult

from .config import Task


class CisResult(IdeaResult):
    """Metrics are flat floats, each defined in ``definitions``; ``details`` hold the
    per-gate / per-feature / per-instance data behind the figures."""

    task: Task | None = Field(None, description="The task that was run.")


def make_result(task: Task, metrics: Mapping[str, float], definitions: Mapping[str, str],
                details: dict[str, Any]) -> CisResult:
    """A task's result: every metric added with ``result.add`` and its definition, in the
    order computed (a metric missing from ``definitions`` is a KeyError)."""
    result = CisResult(task=task, details=details)
    for name, value in metrics.items():
        result.add(name, value, definitions[name])
    return result
