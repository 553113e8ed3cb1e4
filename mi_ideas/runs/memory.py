"""The memory budget: an idea's estimate of its peak, checked before anything is allocated.

The budget is ``--memory-budget`` / ``memory_budget=`` (e.g. ``8GB``, ``512MiB``, a number
of bytes), else ``$MI_IDEAS_MEMORY_BUDGET``, else half of this machine's physical RAM.
"""

from __future__ import annotations

import os
import re
from typing import Any

from mi_ideas.errors import UsageError

#: the default budget's share of physical RAM
DEFAULT_FRACTION = 0.5
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def physical_ram() -> int | None:
    """Bytes of physical RAM, or None where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


def parse_size(text: Any) -> int:
    """``"8GB"``, ``"512 MiB"``, ``"1e9"`` or an int as bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(
            f"memory budget {text!r} is not a size; write it like 8GB, 512MiB or a number of "
            f"bytes."
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def budget_bytes(budget: Any = None) -> tuple[int | None, str]:
    """The budget in bytes (None: unknown RAM and no budget given) and where it came from."""
    if budget not in (None, ""):
        return parse_size(budget), "--memory-budget"
    env = os.environ.get("MI_IDEAS_MEMORY_BUDGET")
    if env:
        return parse_size(env), "MI_IDEAS_MEMORY_BUDGET"
    ram = physical_ram()
    if ram is None:  # pragma: no cover
        return None, "no budget"
    return int(ram * DEFAULT_FRACTION), f"half of this machine's {human(ram)} of RAM"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_memory(idea_cls: Any, config: Any, subject: Any = None, budget: Any = None,
                 dataset: Any = None) -> int | None:
    """Refuse a config whose estimated peak exceeds the budget; returns the estimate."""
    import inspect

    # ``dataset`` (sizes that grow with the data) goes to estimates whose signature takes it
    params = inspect.signature(idea_cls.estimate_memory).parameters
    extra = {"dataset": dataset} if "dataset" in params else {}
    items = idea_cls.estimate_memory(config, subject, **extra)
    if items is None:
        return None
    total = sum(int(i.bytes) for i in items)
    limit, source = budget_bytes(budget)
    if limit is not None and total > limit:
        biggest = sorted(items, key=lambda i: -i.bytes)[:4]
        parts = "; ".join(
            f"{i.what}: {human(i.bytes)}" + (f" (scales with {', '.join(i.fields)})" if i.fields else "")
            for i in biggest)
        # the fields behind the parts that matter (a tenth of the total or more)
        fields = sorted({f for i in biggest if i.bytes >= total / 10 for f in i.fields})
        raise UsageError(
            f"{idea_cls.name!r} with this config would need about {human(total)} at its peak, "
            f"over the memory budget of {human(limit)} ({source}). The largest parts: {parts}. "
            f"Lower {', '.join(fields) if fields else 'the config sizes'}, or raise the budget "
            f"with --memory-budget SIZE (e.g. --memory-budget 64GB) if the machine has it."
        )
    return total
