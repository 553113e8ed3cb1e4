"""Prompts and vector texts from the dataset, and the prompts each condition shows the model
(pure Python)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from mi_ideas.errors import ConfigError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def mentions(text: str, words: Sequence[str]) -> bool:
    """Whether ``text`` contains one of ``words`` as a whole word (case-insensitive)."""
    return any(re.search(rf"(?<![A-Za-z]){re.escape(w)}(?![A-Za-z])", text, re.I)
               for w in words)


def instruction_pattern(template: str) -> re.Pattern:
    """A regex matching the template with any single word in place of ``{word}``."""
    head, _, tail = template.partition("{word}")
    return re.compile(re.escape(head) + r"\s*(?:the |a |an )?[A-Za-z'-]+" + re.escape(tail), re.I)


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


@dataclass(frozen=True)
class Split:
    """Which dataset texts make the selection prompts, the evaluation prompts and the
    vector texts (indices into the dataset; disjoint by construction)."""

    select: list[int]
    eval: list[int]
    select_prompts: list[str]
    eval_prompts: list[str]
    vector_pool: list[int]


def split_dataset(dataset: Any, config: Any) -> Split:
    """The first clean texts (no instruction line, no concept word in the prompt part, a
    prompt not seen before) make the prompts, select split then eval split; every later
    clean text is the vector pool.

    A text is skipped when its labels say it opens with a topic or instruction line (the
    zoo corpus's ``attrs["topic"]`` / ``attrs["never"]``) or when one of its sentences
    matches an instruction template with any word.
    """
    patterns = [instruction_pattern(config.concept_instruction),
                instruction_pattern(config.ignore_instruction),
                re.compile(r"\bThis is a story about\b", re.I)]
    want = config.n_select + config.n_eval
    prompt_idx: list[int] = []
    prompts: list[str] = []
    pool: list[int] = []
    for i, text in enumerate(dataset.texts):
        label = dataset.labels[i] if i < len(dataset.labels) else {}
        if isinstance(label, dict) and (label.get("topic") or label.get("never")):
            continue
        if any(p.search(text) for p in patterns):
            continue
        if len(prompt_idx) < want:
            sents = sentences(text)
            if len(sents) <= config.prompt_sentences:
                continue  # nothing would be left to continue
            prompt = " ".join(sents[:config.prompt_sentences])
            if mentions(prompt, config.concepts) or prompt in prompts:
                continue  # a repeated prompt could sit in both splits
            prompt_idx.append(i)
            prompts.append(prompt)
        else:
            pool.append(i)
    if len(prompt_idx) < want:
        raise ConfigError(
            f"steering-vs-prompting needs {want} prompts (n_select + n_eval) but the dataset "
            f"{dataset.spec!r} has only {len(prompt_idx)} usable texts (longer than "
            f"prompt_sentences={config.prompt_sentences} sentences, no instruction line, no "
            f"concept word in the prompt, distinct prompts). Lower n_select / n_eval or give a larger dataset "
            f"(e.g. --data zoo:stories:2000).")
    return Split(prompt_idx[:config.n_select], prompt_idx[config.n_select:],
                 prompts[:config.n_select], prompts[config.n_select:], pool)


def swap_candidates(word: str, swap_words: Sequence[str]) -> list[str]:
    """The words that replace ``word`` in its swapped texts: ``swap_words`` if given, else the
    other words of the zoo generator's list that holds it."""
    if swap_words:
        out = [w for w in swap_words if w.lower() != word.lower()]
    else:
        from mi_ideas.data.stories import CONCEPTS

        lists = [ws for ws in CONCEPTS.values() if word in ws]
        out = sorted({w for w in (lists[0] if lists else []) if w != word})
    if not out:
        raise ConfigError(
            f"vector_contrast=swap replaces {word!r} by another word of its kind, but none is "
            f"known: {word!r} is in no word list of the zoo generator and swap_words gives no "
            f"other word. Set swap_words=[...] (e.g. words of the same kind) or "
            f"vector_contrast=texts_without.")
    return out


def vector_texts(dataset: Any, pool: Sequence[int], word: str, n: int, *,
                 contrast: str = "texts_without", swap_words: Sequence[str] = (),
                 rng: Any = None) -> tuple[list[str], list[str]]:
    """Up to ``n`` pool texts containing ``word`` and as many contrast texts: the same texts
    with every occurrence of the word replaced by a word drawn from
    :func:`swap_candidates` (``contrast="swap"``), or pool texts without it."""
    pos = [dataset.texts[i] for i in pool if mentions(dataset.texts[i], [word])][:n]
    if len(pos) < 2:
        raise ConfigError(
            f"the steering vector for {word!r} needs at least 2 dataset texts that contain "
            f"the word, after the prompts; the dataset {dataset.spec!r} has {len(pos)}. Choose "
            f"a word the data uses (concepts=[...]) or a larger dataset (--data "
            f"zoo:stories:2000).")
    if contrast == "swap":
        subs = swap_candidates(word, swap_words)
        pattern = re.compile(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", re.I)
        pick = (lambda: subs[int(rng.integers(len(subs)))]) if rng is not None else (lambda: subs[0])
        neg_all = [pattern.sub(lambda _: pick(), t) for t in pos]
    else:
        neg_all = [dataset.texts[i] for i in pool if not mentions(dataset.texts[i], [word])]
    neg = neg_all[:len(pos)]
    if len(neg) < 2:
        raise ConfigError(
            f"the steering vector for {word!r} with vector_contrast=texts_without needs at "
            f"least 2 dataset texts without the word, after the prompts; the dataset "
            f"{dataset.spec!r} has {len(neg)}. Use vector_contrast=swap or a larger dataset.")
    return pos, neg


def messages(prompt: str) -> list[str]:
    """A chat-style prompt's messages: its lines when it has several, else its sentences."""
    lines = [ln for ln in prompt.splitlines() if ln.strip()]
    return lines if len(lines) > 1 else sentences(prompt)


def shown_prompt(prompt: str, word: str, *, concept: bool, ignore: bool, config: Any) -> str:
    """The text a condition shows the model: the prompt with the concept instruction
    (before it, or after every message) and / or the ignore instruction (at the start,
    after a leading concept instruction: the zoo corpus's order)."""
    c = config.concept_instruction.format(word=word)
    g = config.ignore_instruction.format(word=word)
    lines = "\n" in prompt.strip()
    join = "\n" if lines else " "
    head: list[str] = []
    body = prompt
    if concept and config.instruction_placement == "before":
        head.append(c)
    elif concept:
        body = join.join(f"{m}{join}{c}" for m in messages(prompt))
    if ignore:
        head.append(g)
    return join.join([*head, body])
