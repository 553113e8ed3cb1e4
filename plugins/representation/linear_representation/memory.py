"""Pre-run checks and memory estimate of linear-representation (no torch)."""

from __future__ import annotations

from typing import Any

from mi_ideas import MemoryItem


def check(config: Any, subject: Any = None) -> None:
    """The grids build, and with a subject its sites exist and the read positions are whole
    tokens (ConfigError / UsageError)."""
    from .run import prompts_of, token_indices

    grid, ladder = prompts_of(config)
    if subject is not None:
        for s in config.sites:
            subject.site(s)
        token_indices(subject.tokenizer, grid, config.position)
        if ladder is not None:
            token_indices(subject.tokenizer, ladder, config.ladder.position)


def estimate(config: Any, subject: Any = None) -> list[MemoryItem]:
    """The activations held (float64, every site) and the largest design matrix."""
    from .run import prompts_of

    grid, ladder = prompts_of(config)
    d = int(subject.d_model) if subject is not None else 1024
    n = len(grid.texts) + (0 if ladder is None else len(ladder.texts))
    copies = 2 if config.reinit_control else 1
    cols = 1 + sum(len(v) - 1 for v in grid.slot_values) + grid.n_contexts
    pair = max((len(a) - 1) * (len(b) - 1) for i, a in enumerate(grid.slot_values)
               for b in grid.slot_values[i + 1:])
    return [
        MemoryItem("activations (float64, every site)", 8 * n * d * len(config.sites) * copies,
                   ("grid", "ladder", "sites")),
        MemoryItem("interaction design (float64)", 8 * len(grid.texts) * (cols + pair),
                   ("grid",)),
        MemoryItem("cell distance matrix (float64)", 8 * grid.n_cells ** 2, ("grid",)),
    ]
