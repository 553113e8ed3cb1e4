"""The three tasks of cis-toy-model, one module each, plus shared helpers in ``common``.

* :mod:`.uand` — U-AND (Hänni et al. 2024), with the linear control and the hand-built
  Bernoulli construction;
* :mod:`.compressed` — compressed computation (Braun et al. 2025), with the clean-label
  control (Bhagat et al. 2025);
* :mod:`.tms` — the toy model of superposition (Elhage et al. 2022), with the dense control.

Each task module has ``run(ctx, cfg) -> CisResult``. Importing this package is cheap; the
task modules (which import torch) load on :func:`run_task`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..config import CisConfig
    from ..result import CisResult

#: config ``task`` value -> module in this package
MODULES = {"u-and": "uand", "compressed-computation": "compressed", "tms": "tms"}


def run_task(ctx: Any, cfg: "CisConfig") -> "CisResult":
    """Run the task ``cfg.task`` selects."""
    return import_module(f".{MODULES[cfg.task]}", __name__).run(ctx, cfg)
