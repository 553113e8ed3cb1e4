"""Kept so ``from mi_ideas.models import load_subject`` (0.1 docs) still works.

Spec lookup lives in the host now (:func:`mi_ideas.host.resolve_model`); the public name is
:func:`mi_ideas.load_subject`.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MODEL = "zoo:stories-gpt2"


def load_subject(model: Any = DEFAULT_MODEL, *, remote: Any = None, host: Any = None) -> Any:
    """Same as :func:`mi_ideas.load_subject`."""
    from mi_ideas.host import resolve_model

    return resolve_model(model, remote=remote, host=host)
