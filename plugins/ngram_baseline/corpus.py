"""The training and held-out token rows: the zoo's own corpus, or any dataset split by texts.

``zoo-corpus:NAME`` (registered by this plugin) is the training stories and the held-out
stories of zoo model NAME, rebuilt from its manifest (``corpus``: generator, seeds, counts),
each text labelled ``split`` = ``train`` / ``heldout``. Packed with the model's tokenizer by
:func:`mi_ideas.zoo.build.lm.pack_rows`, exactly as ``mi_ideas.zoo.build.train`` packs them,
these are the rows the model was trained on and the rows its ``heldout_loss`` is measured on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mi_ideas.errors import UsageError

#: label ids of the token-type table: 0 = the row / story separator, 1 = unlabelled text
EOT_LABEL, OTHER_LABEL = "eot", "other"
_SHIFT = 32  # token id and label id packed into one int64 while packing rows


def _zoo_root(rest: str) -> tuple[str, Path | None, int | None]:
    head, sep, tail = rest.rpartition(":")
    limit = None
    if sep and tail.isdigit():
        rest, limit = head, int(tail)
    if rest and Path(rest).expanduser().is_dir():
        return "stories-gpt2", Path(rest).expanduser(), limit
    return rest or "stories-gpt2", None, limit


def load_zoo_corpus(rest: str, seed: int) -> Any:
    """``zoo-corpus:NAME[:N]`` (or ``zoo-corpus:DIR[:N]``, a zoo directory written by
    ``train.py --out DIR``): the zoo model's training and held-out stories, labelled by
    split. ``N`` keeps only the first N training stories (the stories are deterministic per
    index and packed in order, so their rows are the first rows of the full training text);
    the held-out stories are always all of them."""
    from mi_ideas import zoo
    from mi_ideas.data import Dataset
    from mi_ideas.data import stories as corpus

    name, root, limit = _zoo_root(rest)
    try:
        man = zoo.manifest(root)
        e = zoo.entry(name, root)
        if e.get("kind") != "model":
            raise KeyError(name)
    except (FileNotFoundError, KeyError):
        models = [n for n, v in man.get("entries", {}).items() if v.get("kind") == "model"] \
            if "man" in locals() else []
        raise UsageError(
            f"zoo-corpus:{rest}: the zoo has no model named {name!r} (its models: "
            f"{', '.join(models) or 'none'}). Use zoo-corpus:stories-gpt2 (the embedded zoo's "
            f"training text) or zoo-corpus:DIR for a zoo directory with a manifest.json.") from None
    c = man.get("corpus", {})
    version = c.get("corpus_version")
    here = getattr(corpus, "CORPUS_VERSION", None)
    if version is not None and here is not None and version != here:
        raise UsageError(
            f"the zoo model {name!r} was trained on corpus version {version}, but this "
            f"mi_ideas generates version {here}, so its training text cannot be rebuilt. "
            f"Retrain the zoo (`python -m mi_ideas.zoo.build.train`) or give the text with "
            f"--data text:PATH.")
    try:
        n_train = int(c["n_train_stories"])
        train = corpus.generate_stories(min(n_train, limit or n_train), c["train_seed"])
        held = corpus.generate_stories(int(c["n_heldout_stories"]), c["heldout_seed"])
    except KeyError as exc:
        raise UsageError(f"the zoo manifest's corpus section lacks {exc}; retrain the zoo.") from None
    items = train + held
    n_ctx = int(e.get("n_ctx", 128))
    labels = ([{"split": "train", "n_ctx": n_ctx}] * len(train)
              + [{"split": "heldout", "n_ctx": n_ctx}] * len(held))
    return Dataset(f"zoo-corpus:{rest}", [it.text for it in items], [dict(d) for d in labels],
                   [list(it.spans) for it in items],
                   f"the training stories ({len(train)}, seed {c['train_seed']}) and held-out "
                   f"stories ({len(held)}, seed {c['heldout_seed']}) of zoo model {name}")


@dataclass
class Rows:
    """Packed rows of one split: token ids and, per token, a label id (see ``label_names``)."""

    tokens: Any  # np.ndarray [n_rows, n_ctx] int64
    labels: Any  # np.ndarray [n_rows, n_ctx] int64
    n_texts: int


@dataclass
class Split:
    """Training and held-out rows, how they were split, and the token-type names."""

    train: Rows
    heldout: Rows
    method: str  # "labels" or "fraction"
    n_ctx: int
    label_names: list[str]
    eot: int


def _eot(tokenizer: Any) -> int:
    for tid in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        if tid is not None:
            return int(tid)
    raise UsageError("the model's tokenizer has no end-of-text / BOS token to separate the "
                     "packed texts; give a tokenizer with eos_token (or bos_token) set.")


def _pack(tokenizer: Any, texts: list[str], spans: list[list[Any]] | None, n_ctx: int,
          eot: int, names: dict[str, int]) -> Rows:
    from mi_ideas.data.stories import token_labels
    from mi_ideas.zoo.build.lm import pack_rows

    enc = tokenizer(list(texts), add_special_tokens=False,
                    return_offsets_mapping=spans is not None)
    seqs = []
    for i, ids in enumerate(enc["input_ids"]):
        lab = [names[OTHER_LABEL]] * len(ids)
        if spans is not None and spans[i]:
            for j, sp in enumerate(token_labels(enc["offset_mapping"][i], spans[i])):
                if sp is not None:
                    lab[j] = names.setdefault(sp.category, len(names))
        seqs.append([(lb << _SHIFT) | t for t, lb in zip(ids, lab)])
    packed = pack_rows(seqs, n_ctx, eot)  # eot carries label 0 (EOT_LABEL)
    return Rows(packed & ((1 << _SHIFT) - 1), packed >> _SHIFT, len(texts))


def build_split(dataset: Any, tokenizer: Any, config: Any, rng: Any) -> Split:
    """Pack ``dataset`` into training and held-out rows as ``config`` says."""
    import numpy as np

    labels = dataset.labels
    labelled = all("split" in lb for lb in labels)
    method = config.split if config.split != "auto" else ("labels" if labelled else "fraction")
    n = len(dataset.texts)
    if method == "labels":
        if not labelled:
            missing = sum("split" not in lb for lb in labels)
            raise UsageError(
                f"split='labels' needs every text of {dataset.spec!r} labelled split=train or "
                f"heldout, but {missing} of {n} are not; use --set split=fraction (a random "
                f"heldout_fraction of the texts is held out).")
        bad = {lb["split"] for lb in labels} - {"train", "heldout"}
        if bad:
            raise UsageError(f"split labels must be 'train' or 'heldout', not {sorted(bad)}.")
        is_held = np.array([lb["split"] == "heldout" for lb in labels])
    else:
        n_held = int(np.ceil(config.heldout_fraction * n))
        if n < 2 or n_held >= n:
            raise UsageError(
                f"{dataset.spec!r} has {n} text(s): too few to hold out {config.heldout_fraction} "
                f"of them and train on the rest; give more texts (one per line in text:PATH).")
        is_held = np.zeros(n, dtype=bool)
        is_held[rng.permutation(n)[:n_held]] = True
    if is_held.all() or not is_held.any():
        raise UsageError(f"the split of {dataset.spec!r} leaves no "
                         f"{'training' if is_held.all() else 'held-out'} text.")
    n_ctx = config.context_length or int(labels[0].get("n_ctx", 128))
    eot = _eot(tokenizer)
    names = {EOT_LABEL: 0, OTHER_LABEL: 1}
    spans = dataset.spans
    if spans is not None and not getattr(tokenizer, "is_fast", False):
        spans = None  # token labels need offset mappings (a fast tokenizer)
    parts = {}
    for key, mask in (("train", ~is_held), ("heldout", is_held)):
        idx = np.flatnonzero(mask)
        # token types are only needed where the model is scored
        keep_spans = spans is not None and key == "heldout"
        parts[key] = _pack(tokenizer, [dataset.texts[i] for i in idx],
                           [spans[i] for i in idx] if keep_spans else None, n_ctx, eot, names)
        if parts[key].tokens.shape[0] == 0:
            raise UsageError(
                f"the {key} texts of {dataset.spec!r} fill no whole row of {n_ctx} tokens "
                f"(an incomplete last row is dropped, as in training); give more text or a "
                f"smaller context_length.")
    ordered = sorted(names, key=names.get)
    return Split(parts["train"], parts["heldout"], method, n_ctx, ordered, eot)
