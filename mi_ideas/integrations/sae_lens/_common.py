"""Helpers the provider and the evaluator share: resolving subject and dataset specs, and
checking ``positions``."""

from __future__ import annotations

from typing import Any

from mi_ideas.errors import UsageError


def _subject(subject: Any, remote: Any) -> Any:
    from mi_ideas.host import resolve_model

    return resolve_model(subject, remote=remote)


def _dataset(dataset: Any, seed: int) -> Any:
    from mi_ideas.host import resolve_dataset

    return resolve_dataset(dataset, seed=seed)


def _check_positions(positions: str) -> None:
    if positions not in ("all", "last"):
        raise UsageError(f"positions must be 'all' or 'last' (as harvest), not {positions!r}.")
