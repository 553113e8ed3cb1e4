"""Prompt datasets: the zoo corpus, controlled template families, text files, HF datasets.

A spec is ``PREFIX:REST``; :func:`mi_ideas.host.resolve_dataset` picks the loader by prefix
(these built-ins, and any a plugin registers through ``mi_ideas_register_datasets``):

| spec | what |
|---|---|
| ``zoo:stories[:N]`` | N generated stories (default 1000) with labelled concept spans |
| ``template:FAMILY`` | a controlled prompt family with a label for every slot: ``furniture_grid`` ("the [texture] [colour] [furniture]"), ``person_adjective``, ``intensity_ladder``, ``emotion_event``, ``story_prefixes`` |
| ``text:PATH`` | a ``.txt`` file (one text per non-empty line), a ``.jsonl`` file (its ``text`` field), or a folder of them |
| ``hf:NAME[:SPLIT]`` | a Hugging Face dataset through ``datasets`` (a directory saved with ``save_to_disk`` loads offline); its ``text`` column, or its first string column |

Every dataset is deterministic given its spec and the run's seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from mi_ideas.errors import UsageError

DEFAULT_DATA = "zoo:stories"


@dataclass
class Dataset:
    """Texts, with per-text labels (slot values / attributes) and, where known, concept spans."""

    spec: str
    texts: list[str]
    labels: list[dict[str, Any]] = field(default_factory=list)
    spans: list[list[Any]] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.texts:
            raise UsageError(f"dataset {self.spec!r} has no texts.")
        if not self.labels:
            self.labels = [{} for _ in self.texts]

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    @property
    def fingerprint(self) -> str:
        """A hash of the texts (for caches): equal texts, equal fingerprint."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode())
            h.update(b"\0")
        return h.hexdigest()[:16]


def _from_labelled(spec: str, items: list[Any], description: str) -> Dataset:
    return Dataset(spec, [it.text for it in items], [dict(it.attrs) for it in items],
                   [list(it.spans) for it in items], description)


def _zoo(rest: str, seed: int) -> Dataset:
    from mi_ideas.data import stories as corpus

    name, _, n = rest.partition(":")
    if name != "stories":
        raise UsageError(f"the zoo has one corpus, 'stories' (zoo:stories[:N]), not {name!r}.")
    try:
        count = int(n) if n else 1000
    except ValueError:
        raise UsageError(f"zoo:stories:N needs a whole number of stories, not {n!r}.") from None
    # A seed namespace the zoo model was not trained on: these stories are held out.
    items = corpus.generate_stories(count, seed=f"mi-ideas-data-{seed}")
    return _from_labelled(f"zoo:{rest}", items, f"{count} generated stories (held out from training)")


TEMPLATES: dict[str, str] = {
    "furniture_grid": "furniture_grid",
    "person_adjective": "person_adjective_prompts",
    "intensity_ladder": "intensity_ladder_prompts",
    "emotion_event": "emotion_event_prompts",
    "story_prefixes": "story_prefixes",
}


def _template(rest: str, seed: int) -> Dataset:
    from mi_ideas.data import stories as corpus

    if rest not in TEMPLATES:
        raise UsageError(
            f"no template family {rest!r}; the families are {', '.join(sorted(TEMPLATES))} "
            f"(e.g. --data template:furniture_grid)."
        )
    fn = getattr(corpus, TEMPLATES[rest])
    items = fn(200, seed=f"mi-ideas-data-{seed}") if rest == "story_prefixes" else fn()
    return _from_labelled(f"template:{rest}", items, (fn.__doc__ or "").strip().splitlines()[0])


def _text(rest: str, seed: int) -> Dataset:
    path = Path(rest).expanduser()
    if not path.exists():
        raise UsageError(f"text dataset {rest!r} does not exist; give a .txt/.jsonl file or a folder.")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
    texts: list[str] = []
    for f in files:
        try:
            content = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"text dataset file {str(f)!r} is not UTF-8 (byte {exc.start} is "
                f"{exc.object[exc.start:exc.start + 1]!r}); convert it to UTF-8 (e.g. "
                f"`iconv -f latin1 -t utf-8`) and run again."
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot read text dataset file {str(f)!r}: {exc.strerror}.") from None
        for i, line in enumerate(content.splitlines()):
            if not line.strip():
                continue
            if f.suffix == ".jsonl":
                try:
                    texts.append(str(json.loads(line)["text"]))
                except (ValueError, KeyError, TypeError):
                    raise UsageError(
                        f"{f}:{i + 1} is not a JSON object with a 'text' field."
                    ) from None
            else:
                texts.append(line)
    if not texts:
        raise UsageError(f"text dataset {rest!r} holds no non-empty lines.")
    return Dataset(f"text:{rest}", texts, description=f"{len(texts)} texts from {rest}")


def _hf(rest: str, seed: int) -> Dataset:
    import datasets as hf_datasets

    name, _, split = rest.partition(":")
    try:
        if Path(name).is_dir():
            ds = hf_datasets.load_from_disk(name)
            if isinstance(ds, hf_datasets.DatasetDict):
                ds = ds[split or "train"]
        else:
            ds = hf_datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds
        raise UsageError(
            f"could not load the Hugging Face dataset {rest!r}: {type(exc).__name__}: {exc}. "
            f"Offline, save it once with Dataset.save_to_disk(DIR) and use hf:DIR[:SPLIT]."
        ) from None
    columns = [c for c, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    if not columns:
        raise UsageError(f"dataset {rest!r} has no text column (features: {list(ds.features)}).")
    column = "text" if "text" in columns else columns[0]
    texts = [t for t in ds[column] if t and t.strip()]
    return Dataset(f"hf:{rest}", texts, description=f"{len(texts)} texts, column {column!r}")


BUILTIN_DATASETS: dict[str, tuple[Callable[[str, int], Dataset], str]] = {
    "zoo": (_zoo, "the generated story corpus: zoo:stories[:N]"),
    "template": (_template, "controlled prompt families with slot labels: template:FAMILY"),
    "text": (_text, "a text / jsonl file or folder: text:PATH"),
    "hf": (_hf, "a Hugging Face dataset: hf:NAME[:SPLIT] or hf:DIR saved with save_to_disk"),
}
