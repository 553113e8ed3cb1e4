"""The built-in judges (no network) and the lookup of a judge by name.

A judge is ``judge(samples, subject) -> [score in [0, 1] per sample]`` (the contract of
``mi_ideas_register_judges``): samples are dicts with ``prompt``, ``shown_prompt``,
``continuation``, ``prompt_ids``, ``continuation_ids``, ``concept`` and ``concept_words``;
``subject`` is the unsteered model. Built-ins:

- ``concept-words`` (concept): 1 if one of ``concept_words`` occurs in the continuation as
  a whole word (case-insensitive), else 0. On the zoo the words are the generator's.
- ``unsteered-logprob`` (fluency): exp of the mean log-probability per continuation token
  under the unsteered model given the prompt (without instruction lines): the geometric
  mean token probability, in (0, 1].
- ``prompt-pmi`` (relevance): the mean over continuation tokens of a per-token score: 0
  for a token copied from the prompt (it completes a ``COPY_N``-gram, the token and the
  ``COPY_N`` − 1 tokens before it in prompt + continuation, that occurs in the prompt's
  tokens), else 1 if the prompt makes it more likely under the unsteered model, i.e.
  log p(t_i | BOS, prompt, t_<i) > log p(t_i | BOS, t_<i), ½ if the prompt does not
  change it (|difference| ≤ 1e-6 nats), 0 if the prompt makes it less likely; in [0, 1]:
  ½ when the prompt is uninformative (and nothing is copied), 0 when it makes every token
  less likely, at most (COPY_N − 1) / n when the n continuation tokens repeat the prompt
  verbatim (copying is what an induction-capable model finds most likely given the
  prompt, so without the copy rule a repeat of the prompt scores ~1).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from mi_ideas.errors import ConfigError

from .config import BUILTIN_JUDGES
from .prompts import mentions

DESCRIPTIONS = {
    "concept-words": "1 if a concept word occurs in the continuation as a whole word "
                     "(case-insensitive), else 0",
    "unsteered-logprob": "exp(mean log-probability per continuation token under the unsteered "
                         "model given the prompt without instruction lines): the geometric-mean "
                         "token probability, in (0, 1]",
    "prompt-pmi": "mean over continuation tokens of: 0 for a token copied from the prompt "
                  "(the token and the COPY_N-1 = 3 tokens before it in prompt + continuation "
                  "form a 4-gram that occurs in the prompt's tokens), else 1 if log p(t | BOS, "
                  "prompt, earlier continuation) > log p(t | BOS, earlier continuation) under "
                  "the unsteered model (the prompt makes the token more likely), 1/2 if the "
                  "prompt does not change it (|difference| <= 1e-6 nats), 0 if it makes it less "
                  "likely; in [0, 1], 1/2 for an uninformative prompt with nothing copied, at "
                  "most 3/n for n tokens that repeat the prompt verbatim",
}


def concept_words(samples: Sequence[dict], subject: Any) -> list[float]:
    return [1.0 if mentions(s["continuation"], s["concept_words"]) else 0.0 for s in samples]


#: log-probabilities already computed in this round of judging (fluency and relevance both
#: need log p(continuation | prompt): one forward, not two); cleared by :func:`new_round`.
_MEMO: dict[tuple, list[list[float]]] = {}


def new_round() -> None:
    """Forget the shared log-probabilities (the caller starts judging a new set of samples)."""
    _MEMO.clear()


def _target_logprobs(subject: Any, contexts: Sequence[Sequence[int]],
                     continuations: Sequence[Sequence[int]], batch_size: int = 128) -> list[list[float]]:
    """log p(continuation token | context, earlier continuation tokens) for each row, with
    the log-probabilities computed next to the model (no logits downloaded)."""
    key = (id(subject), tuple(map(tuple, contexts)), tuple(map(tuple, continuations)))
    if key not in _MEMO:
        _MEMO[key] = _compute_target_logprobs(subject, contexts, continuations, batch_size)
    return _MEMO[key]


def _compute_target_logprobs(subject: Any, contexts: Sequence[Sequence[int]],
                             continuations: Sequence[Sequence[int]], batch_size: int
                             ) -> list[list[float]]:
    import torch

    from mi_ideas.subject import StatsRequest

    out: list[list[float]] = [[] for _ in contexts]
    by_len: dict[int, list[int]] = {}
    for i, c in enumerate(continuations):
        by_len.setdefault(len(c), []).append(i)
    for n, rows in by_len.items():
        if n == 0:
            continue
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = subject.batch_from_ids([list(contexts[i]) + list(continuations[i]) for i in chunk])
            width = batch.input_ids.shape[1]
            targets = torch.as_tensor([list(continuations[i]) for i in chunk], dtype=torch.long)
            stats = StatsRequest(positions=list(range(width - n - 1, width - 1)), target_ids=targets)
            lp = subject.forward(batch, stats=stats).stats["target_logprob"].double()
            for j, i in enumerate(chunk):
                out[i] = lp[j].tolist()
    return out


def _bos(subject: Any) -> list[int]:
    tok = subject.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return [] if bos is None else [int(bos)]


def unsteered_logprob(samples: Sequence[dict], subject: Any) -> list[float]:
    lps = _target_logprobs(subject, [s["prompt_ids"] for s in samples],
                           [s["continuation_ids"] for s in samples])
    return [math.exp(sum(lp) / len(lp)) if lp else 0.0 for lp in lps]


#: |difference of log-probabilities| (nats) up to which the prompt counts as not mattering.
TIE = 1e-6


#: a continuation token is "copied from the prompt" when it completes an n-gram of this
#: length (the token and the COPY_N - 1 before it) that occurs in the prompt's tokens.
COPY_N = 4


def copied_from_prompt(prompt_ids: Sequence[int], continuation_ids: Sequence[int],
                       n: int = COPY_N) -> list[bool]:
    """Per continuation token, whether it completes an ``n``-gram of prompt + continuation
    that occurs in the prompt (verbatim copying; hand-written: a set of n-gram tuples)."""
    p, c = list(prompt_ids), list(continuation_ids)
    grams = {tuple(p[i:i + n]) for i in range(len(p) - n + 1)}
    full = p + c
    return [len(p) + i + 1 >= n and tuple(full[len(p) + i + 1 - n:len(p) + i + 1]) in grams
            for i in range(len(c))]


def prompt_pmi(samples: Sequence[dict], subject: Any) -> list[float]:
    conts = [s["continuation_ids"] for s in samples]
    with_prompt = _target_logprobs(subject, [s["prompt_ids"] for s in samples], conts)
    bos = _bos(subject)
    without = _target_logprobs(subject, [bos for _ in samples], conts)
    out = []
    for s, w, wo in zip(samples, with_prompt, without):
        if not w:
            out.append(0.0)
            continue
        copied = copied_from_prompt(s["prompt_ids"], s["continuation_ids"])
        out.append(sum(0.0 if cp else 1.0 if a - b > TIE else 0.5 if abs(a - b) <= TIE else 0.0
                       for a, b, cp in zip(w, wo, copied)) / len(w))
    return out


BUILTINS: dict[str, Callable[[Sequence[dict], Any], list[float]]] = {
    "concept-words": concept_words,
    "unsteered-logprob": unsteered_logprob,
    "prompt-pmi": prompt_pmi,
}


def resolve_judges(choice: Any, registered: dict[str, Any]) -> dict[str, tuple[str, Callable, str]]:
    """``{kind: (name, judge, description)}`` for the configured judges: built-ins by name,
    else judges registered through ``mi_ideas_register_judges`` (``registered``, the host's
    ``judges``) of the right kind."""
    clash = sorted(set(registered) & set(BUILTINS))
    if clash:
        raise ConfigError(
            f"the judge name(s) {clash} registered by plugin(s) "
            f"{sorted({registered[n].plugin for n in clash})} are steering-vs-prompting's "
            f"built-in judges; the plugin must use another name (then select it with --set "
            f"judges.KIND=NAME).")
    out = {}
    for kind in ("concept", "fluency", "relevance"):
        name = getattr(choice, kind)
        if name in BUILTINS:
            if BUILTIN_JUDGES[name] != kind:
                raise ConfigError(
                    f"judges.{kind}={name!r} is the built-in {BUILTIN_JUDGES[name]} judge; the "
                    f"built-in {kind} judge is "
                    f"{[n for n, k in BUILTIN_JUDGES.items() if k == kind][0]!r}.")
            out[kind] = (name, BUILTINS[name], DESCRIPTIONS[name])
            continue
        entry = registered.get(name)
        if entry is None:
            known = [n for n, k in BUILTIN_JUDGES.items() if k == kind] + sorted(
                n for n, e in registered.items() if e.kind == kind)
            raise ConfigError(
                f"judges.{kind}={name!r} is not a judge; the {kind} judges are {known}. A "
                f"plugin adds one through the mi_ideas_register_judges hook (docs/hooks.md); "
                f"is its package installed (`mi-ideas plugins`)?")
        if entry.kind != kind:
            raise ConfigError(
                f"judges.{kind}={name!r} is a {entry.kind!r} judge (plugin {entry.plugin!r}), "
                f"not a {kind} judge; choose a judge registered with kind {kind!r}.")
        out[kind] = (name, entry.judge, entry.description)
    return out


def score(kind: str, name: str, judge: Callable, samples: Sequence[dict], subject: Any) -> list[float]:
    """Call a judge and check its answer: one finite number in [0, 1] per sample."""
    if not samples:
        return []
    values = list(judge(list(samples), subject))
    if len(values) != len(samples):
        raise ConfigError(f"the {kind} judge {name!r} returned {len(values)} scores for "
                          f"{len(samples)} samples; a judge returns one score per sample.")
    out = []
    for v in values:
        v = float(v)
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ConfigError(f"the {kind} judge {name!r} returned {v!r}; judges return scores "
                              f"in [0, 1] (1 = best).")
        out.append(v)
    return out


def harmonic(c: float, f: float, r: float) -> float:
    """Harmonic mean of the three scores, 0 when any is 0 (AxBench's zero gate)."""
    if min(c, f, r) <= 0:
        return 0.0
    return 3.0 / (1.0 / c + 1.0 / f + 1.0 / r)
