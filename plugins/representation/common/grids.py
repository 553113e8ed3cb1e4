"""Factorial prompt grids: a template with ``{slot}`` fields, the values of each slot, and
the token position each prompt is read at (standard library only, except where a
tokenizer is passed in).

A grid's *cells* are every combination of the slot values (``itertools.product`` order,
the first slot varying slowest); its *contexts* are every combination of the context
slots' values, crossed with every cell (replicates: the same cell rendered in several
contexts, so that models with slot x slot interactions are not saturated). Prompt
``(cell, context)`` is row ``cell * n_contexts + context``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from itertools import product
from typing import Any, Mapping, Sequence

from mi_ideas.errors import ConfigError


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names of ``template`` in order of appearance (with repeats).

    Raises ValueError for what the renderer does not take: format specs, conversions,
    attribute or index access, positional ``{}`` fields, unbalanced braces.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template {template!r} is not a valid template ({exc}); write slots "
                         f"as {{name}} and literal braces as {{{{ and }}}}") from None
    out = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field or not field.isidentifier():
            raise ValueError(f"template {template!r} has a field {{{field}}}: fields must be "
                             f"slot names like {{colour}} (no positional {{}}, indices or "
                             f"attributes)")
        if spec or conversion:
            raise ValueError(f"template {template!r}: field {{{field}}} has a format spec or "
                             f"conversion; write it as plain {{{field}}}")
        out.append(field)
    return out


def check_grid(template: str, slots: Mapping[str, Sequence[str]],
               contexts: Mapping[str, Sequence[str]], what: str = "grid") -> None:
    """ValueError (rendered by the config loader as one line per problem) unless every
    template field is a slot or a context slot, every slot and context slot appears in the
    template, each has at least one value (slots at least two), and values are unique."""
    fields = template_fields(template)
    names = set(fields)
    both = sorted(set(slots) & set(contexts))
    if both:
        raise ValueError(f"{what}: {', '.join(both)} is both a slot and a context slot; give "
                         f"each name once")
    known = set(slots) | set(contexts)
    unknown = [f for f in dict.fromkeys(fields) if f not in known]
    if unknown:
        raise ValueError(
            f"{what}: the template uses {', '.join('{' + f + '}' for f in unknown)}, which "
            f"{'is' if len(unknown) == 1 else 'are'} not among the slots "
            f"({', '.join(slots) or 'none'}) or contexts ({', '.join(contexts) or 'none'}); "
            f"add {'it' if len(unknown) == 1 else 'them'} to slots (a factor of the design) or "
            f"contexts (replicates), or remove {'it' if len(unknown) == 1 else 'them'} from the "
            f"template")
    missing = [s for s in [*slots, *contexts] if s not in names]
    if missing:
        raise ValueError(
            f"{what}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} given values "
            f"but the template {template!r} has no "
            f"{' / '.join('{' + m + '}' for m in missing)} field; put the field in the "
            f"template or remove the slot")
    for kind, table, least in (("slot", slots, 2), ("context slot", contexts, 1)):
        for name, values in table.items():
            values = list(values)
            if len(values) < least:
                need = ("at least two values (a slot with one value is a constant: write it "
                        "into the template)" if least == 2 else "at least one value")
                raise ValueError(f"{what}: {kind} {name!r} has {len(values)} value"
                                 f"{'' if len(values) == 1 else 's'}; it needs {need}")
            empty = [v for v in values if not str(v).strip()]
            if empty:
                raise ValueError(f"{what}: {kind} {name!r} has an empty value; every value "
                                 f"must be a non-empty word")
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"{what}: {kind} {name!r} lists {', '.join(map(repr, twice))} "
                                 f"twice; each value once")


@dataclass(frozen=True)
class GridPrompts:
    """The rendered prompts of a grid, ``n_cells * n_contexts`` of them (cell-major).

    ``levels[c, s]`` is the index of slot ``s``'s value in cell ``c``; ``slot_end[i]`` the
    character offset where the ``position`` slot's (last occurrence's) value ends in prompt
    ``i`` (None for position ``last``)."""

    texts: list[str]
    slot_names: list[str]
    slot_values: list[list[str]]
    levels: list[list[int]]
    n_contexts: int
    context_labels: list[str]
    slot_end: list[int] | None

    @property
    def n_cells(self) -> int:
        return len(self.levels)


def render_grid(template: str, slots: Mapping[str, Sequence[str]],
                contexts: Mapping[str, Sequence[str]], position: str = "last") -> GridPrompts:
    """Render every (cell, context) prompt; record where the ``position`` slot ends."""
    names = list(slots)
    values = [list(slots[n]) for n in names]
    ctx_names = list(contexts)
    ctx_combos = list(product(*[list(contexts[n]) for n in ctx_names])) or [()]
    texts, ends, levels = [], [], []
    for idx in product(*[range(len(v)) for v in values]):
        levels.append(list(idx))
        fill = {n: values[s][i] for s, (n, i) in enumerate(zip(names, idx))}
        for combo in ctx_combos:
            text, end = _render(template, {**fill, **dict(zip(ctx_names, combo))}, position)
            texts.append(text)
            ends.append(end)
    labels = [", ".join(f"{n}={v}" for n, v in zip(ctx_names, c)) or "(none)" for c in ctx_combos]
    return GridPrompts(texts=texts, slot_names=names, slot_values=values, levels=levels,
                       n_contexts=len(ctx_combos), context_labels=labels,
                       slot_end=None if position == "last" else ends)


def _render(template: str, fill: Mapping[str, str], position: str) -> tuple[str, int]:
    out, end = [], -1
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if field is not None:
            out.append(str(fill[field]))
            if field == position:
                end = sum(len(p) for p in out)
    return "".join(out), end


def slot_token_index(tokenizer: Any, text: str, end: int, *, slot: str,
                     value: str | None = None) -> int:
    """Index (into the tokens of ``text``, no special tokens) of the last token of the slot
    value that ends at character ``end``.

    The tokens of ``text[:end]`` must be a prefix of the tokens of ``text``: otherwise the
    tokenizer merges the value with what follows it (or splits it differently in context),
    the value has no last token of its own, and a ConfigError says so.
    """
    full = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    head = list(tokenizer(text[:end], add_special_tokens=False)["input_ids"])
    if not head or full[:len(head)] != head:
        if value is None:
            value = text[:end].split()[-1] if text[:end].split() else text[:end]
        after = text[end:end + 12]
        raise ConfigError(
            f"position={slot!r}: the value {value!r} of slot {slot!r} is not found as whole "
            f"tokens in the tokenised prompt {text!r}: the tokenizer merges its end with the "
            f"text after it ({after!r}), so it has no last token of its own. Put a space or "
            f"punctuation after {{{slot}}} in the template, choose values that end at a token "
            f"boundary, or use position=last.")
    return len(head) - 1
