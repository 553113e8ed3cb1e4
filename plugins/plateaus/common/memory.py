"""Peak-memory estimates for the plateau family (pure Python: no torch, nothing allocated).

Each idea's ``estimate_memory`` describes its run as tensors that live for the whole run
(``persistent``) and phases that follow each other (a clean forward, a sweep, a probe,
…); the peak is the persistent tensors plus the largest phase (:func:`peak`). Sizes come
from the config and the subject (``d_model``, ``n_layers``, ``d_vocab``); what a run
cannot know before it starts (the dictionary's width, the length of a dataset's texts)
is an assumption stated in the item's text, chosen on the high side.

The working set of one forward pass was measured (peak RSS increase, CPU, Hugging Face
GPT-2 through nnsight, float32) over vocabularies of 1.4k–20k, widths of 128–512 and
4–12 layers. One forward without gradients holds up to about 2·d_vocab + (24 +
4·n_layers)·d_model floats per (row, token) — the logits of every position, the blocks'
activations and the read-outs — and one with autograd (the activations kept for the
backward pass) up to 2·d_vocab + (16 + 40·n_layers)·d_model. Repeated forwards of the same
size leave freed buffers that the allocator has not returned yet, and with several torch
threads the peak RSS of a sweep reached about 1.5 times a single forward's, so
:func:`forward` counts 1.5 times those working sets.
"""

from __future__ import annotations

from typing import Any, Iterable

from mi_ideas import MemoryItem

F32 = 4
F64 = 8
I64 = 8
#: SAE width assumed where the dictionary is not known yet (the zoo SAE is 8× d_model;
#: public GPT-2 / Pythia SAEs are 8–32×): 32 × d_model, on the high side.
SAE_EXPANSION = 32


def dims(subject: Any) -> tuple[int, int, int]:
    """``(d_model, n_layers, d_vocab)`` of the subject."""
    return int(subject.d_model), int(subject.n_layers), int(subject.d_vocab)


def runs_here(subject: Any) -> bool:
    """Whether the model's forwards run in this process (not on a remote server)."""
    return not bool(getattr(subject, "on_server", False))


def tensor(what: str, count: float, fields: Iterable[str], itemsize: int = F32) -> MemoryItem:
    """An item of ``count`` elements of ``itemsize`` bytes."""
    return MemoryItem(what, int(count) * itemsize, tuple(fields))


def forward(what: str, subject: Any, rows: int, seq: int, fields: Iterable[str], *,
            grad: bool = False) -> MemoryItem:
    """The working set of one forward of ``rows`` sequences of ``seq`` tokens (logits over
    every position, the blocks' activations; with ``grad``, everything kept for the
    backward pass). Nothing when the model runs on a server."""
    d, n_layers, vocab = dims(subject)
    per_token = 2 * vocab + ((16 + 40 * n_layers) if grad else (24 + 4 * n_layers)) * d
    per_token = per_token * 3 // 2  # the allocator's slack over repeated forwards
    if not runs_here(subject):
        return MemoryItem(what + " (runs on the server: only the request here)",
                          int(rows) * d * F32, tuple(fields))
    return MemoryItem(what, int(rows) * int(seq) * per_token * F32, tuple(fields))


def model_copy(what: str, subject: Any) -> MemoryItem:
    """Float32 weights of a fresh copy of the architecture (GPT-2-like count:
    12·n_layers·d_model² + (d_vocab + 2048)·d_model, embeddings untied)."""
    d, n_layers, vocab = dims(subject)
    return MemoryItem(what, (12 * n_layers * d * d + 2 * (vocab + 2048) * d) * F32, ())


def total(items: Iterable[MemoryItem]) -> int:
    return sum(int(i.bytes) for i in items)


def peak(persistent: list[MemoryItem], phases: dict[str, list[MemoryItem]]) -> list[MemoryItem]:
    """The persistent tensors plus the largest phase, each phase item labelled with it."""
    if not phases:
        return list(persistent)
    name, items = max(phases.items(), key=lambda kv: total(kv[1]))
    return [*persistent, *(MemoryItem(f"{name}: {i.what}", i.bytes, i.fields) for i in items)]


def sweep_engine(subject: Any, *, n_prompts: int, seq: int, layer: int, rows: int, R: int,
                 n_readouts: int = 2, fields: Iterable[str] = ("rows_per_forward",),
                 full_only: bool = False,
                 row_fields: Iterable[str] = ("n_prompts", "n_paths", "n_steps"),
                 ) -> list[MemoryItem]:
    """What the sweep engine (``common/sweep.py``) holds while a plan of ``rows`` rows runs on
    ``n_prompts`` prompts of ``seq`` tokens at ``resid_pre.layer``, ``R`` rows per chunk.

    Never every path point: the points of one chunk at a time. The last-position engine
    (local) holds the prompts' prefix cache, n_prompts × (n_layers − L) × 2 × T × d floats
    (keys and values of every later block), and per chunk the gathered cache (R × (n_layers
    − L) × 2 × T × d), the chunk's points (R × d × 3 while built), its last-position forward,
    and the logits and the reference of its rows (about 2R × d_vocab; the read-outs are
    computed in float64 a block of rows at a time). The full-forward engine (the fallback
    where the fast path's check fails, and ``engine="full"``) holds per chunk the residual
    stream of its rows and one forward of R × T tokens; the larger of the two is counted.
    Both keep the read-outs of every row (``n_readouts`` floats each). Remote: the request.
    """
    d, n_layers, vocab = dims(subject)
    chunk = max(1, min(int(R), int(rows)))
    later = max(1, n_layers - int(layer))
    kept = tensor(f"the sweep's read-outs ({n_readouts} per row) of all {rows} rows",
                  n_readouts * rows, tuple(row_fields))
    points = tensor(f"the path points of one chunk of {chunk} rows (x3 while built)",
                    3 * chunk * d, tuple(fields))
    if not runs_here(subject):
        return [kept, points, forward(f"one request of {chunk} rows", subject, chunk, seq,
                                      tuple(fields))]
    last = [
        tensor(f"prefix cache of the {n_prompts} prompts (keys and values of blocks "
               f"{layer}-{n_layers - 1})", n_prompts * later * 2 * seq * d, ("prompt_tokens",)),
        tensor(f"the cache gathered for one chunk of {chunk} rows", chunk * later * 2 * seq * d,
               (*fields, "prompt_tokens")),
        forward(f"the last-position forward of {chunk} rows", subject, chunk, 1, tuple(fields)),
        tensor("its logits and reference log-probs, and the float64 read-out blocks",
               2 * chunk * vocab + 2 * (1 << 20), tuple(fields)),
    ]
    full = [
        tensor(f"the residual stream of one chunk of {chunk} rows", 2 * chunk * seq * d,
               (*fields, "prompt_tokens")),
        forward(f"one full forward of {chunk} rows", subject, chunk, seq,
                (*fields, "prompt_tokens")),
    ]
    if full_only:
        return [kept, points, *full]
    engine = max((last, full), key=total)
    which = ("the last-position engine" if engine is last
             else "the full-forward fallback (larger than the last-position engine here)")
    return [kept, points, *(MemoryItem(f"{which}: {i.what}", i.bytes, i.fields)
                            for i in engine)]
