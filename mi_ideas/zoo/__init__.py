"""The embedded zoo: a tiny model, tokenizer, SAE and transcoder shipped with mi_ideas.

Everything here is trained by ``python -m mi_ideas.zoo.build.train`` on the corpus of
:mod:`mi_ideas.data.stories` and stored in standard formats:

* ``models/stories-gpt2/`` -- a Hugging Face directory (``GPT2LMHeadModel``,
  safetensors, byte-level BPE tokenizer with ``<|endoftext|>`` as BOS/EOS);
  ``transformers.AutoModelForCausalLM.from_pretrained(model_dir())`` works offline;
* ``models/stories-gpt2-checkpoints/step-NNNN/`` -- float16 snapshots of the same
  training run (config.json + model.safetensors; the tokenizer is the final
  model's), manifest entries ``stories-gpt2@step-NNNN`` of kind ``checkpoint``;
  :func:`checkpoints` lists them, ``load_model("stories-gpt2@step-0100")`` and the
  model spec ``zoo:stories-gpt2@step-0100`` load one (as float32);
* ``saes/stories-gpt2-resid2-topk/`` -- a SAELens TopK SAE on
  ``blocks.2.hook_resid_pre``;
* ``saes/stories-gpt2-mlp1-transcoder/`` -- a SAELens ``Transcoder`` from
  ``blocks.1.hook_mlp_in`` to ``blocks.1.hook_mlp_out``;
* ``manifest.json`` -- sha256 of every shipped file, the training config and
  the key figures (held-out loss next to unigram / bigram losses, explained
  variance and L0 of the dictionaries).

Importing this module is cheap (standard library only).  ``load_model`` and
``load_dictionary`` import transformers / SAELens when called.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "ZOO_DIR",
    "MANIFEST_PATH",
    "DEFAULT_MODEL",
    "DEFAULT_SAE",
    "DEFAULT_TRANSCODER",
    "ZooEntry",
    "Mismatch",
    "Checkpoint",
    "checkpoints",
    "tokenizer_dir",
    "load_options",
    "manifest",
    "entry",
    "model_dir",
    "sae_dir",
    "list_entries",
    "verify",
    "load_model",
    "load_dictionary",
]

#: Directory holding the shipped zoo files (next to this module).
ZOO_DIR = Path(__file__).resolve().parent
MANIFEST_PATH = ZOO_DIR / "manifest.json"

DEFAULT_MODEL = "stories-gpt2"
DEFAULT_SAE = "stories-gpt2-resid2-topk"
DEFAULT_TRANSCODER = "stories-gpt2-mlp1-transcoder"

_DICT_KINDS = ("sae", "transcoder")


class ZooEntry(NamedTuple):
    """One row of :func:`list_entries`."""

    name: str
    kind: str  # "model", "sae" or "transcoder"
    path: Path
    key_numbers: dict[str, Any]  # size and quality numbers from the manifest, ready to print


class Mismatch(NamedTuple):
    """One problem found by :func:`verify`."""

    path: str  # relative to the zoo directory
    problem: str  # "missing", "sha256 mismatch", "size mismatch" or "not in manifest"
    expected: str | None = None
    actual: str | None = None


class Checkpoint(NamedTuple):
    """One row of :func:`checkpoints`: a snapshot of a zoo model's training run."""

    name: str  # zoo name, e.g. "stories-gpt2@step-0100" (spec "zoo:" + name); the final model's own name
    step: int  # optimizer steps taken
    tokens_seen: int  # step * batch_size * n_ctx
    path: Path  # Hugging Face directory (float16 weights for snapshots, float32 for the final model)
    heldout_loss: float  # nats/token on the held-out positions of the final model's heldout_loss


def _strip(name: str) -> str:
    return name[len("zoo:"):] if name.startswith("zoo:") else name


@lru_cache(maxsize=8)
def _load_manifest(path: str, mtime: float) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def manifest(root: str | Path | None = None) -> dict[str, Any]:
    """The zoo manifest (a fresh copy of the parsed ``manifest.json``).

    ``root`` defaults to :data:`ZOO_DIR`; pass another directory to read the
    manifest of a zoo written elsewhere (e.g. ``train.py --out DIR``).
    """
    p = (Path(root) if root is not None else ZOO_DIR) / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"no zoo manifest at {p}; run `python -m mi_ideas.zoo.build.train`")
    return json.loads(json.dumps(_load_manifest(str(p), p.stat().st_mtime)))


def entry(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """The manifest entry for ``name`` (``"stories-gpt2"`` or ``"zoo:stories-gpt2"``)."""
    entries = manifest(root)["entries"]
    key = _strip(name)
    if key not in entries:
        raise KeyError(f"no zoo entry {name!r}; known: {', '.join(sorted(entries))}")
    return entries[key]


def _path(name: str, kinds: tuple[str, ...], root: str | Path | None) -> Path:
    e = entry(name, root)
    if e["kind"] not in kinds:
        raise KeyError(f"zoo entry {name!r} is a {e['kind']}, not a {' or '.join(kinds)}")
    return (Path(root) if root is not None else ZOO_DIR) / e["path"]


def model_dir(name: str = DEFAULT_MODEL, root: str | Path | None = None) -> Path:
    """Local Hugging Face directory of zoo model (or checkpoint) ``name``.

    A checkpoint directory holds no tokenizer: see :func:`tokenizer_dir`.
    """
    return _path(name, ("model", "checkpoint"), root)


def tokenizer_dir(name: str = DEFAULT_MODEL, root: str | Path | None = None) -> Path:
    """Directory of the tokenizer of zoo model or checkpoint ``name`` (a checkpoint's is its model's)."""
    e = entry(name, root)
    if e["kind"] == "checkpoint":
        return model_dir(e["of"], root)
    return model_dir(name, root)


def checkpoints(name: str = DEFAULT_MODEL, root: str | Path | None = None,
                include_final: bool = True) -> list[Checkpoint]:
    """The training checkpoints of zoo model ``name``, sorted by step.

    With ``include_final`` (default) the last row is the final model itself
    (its own name, e.g. ``"stories-gpt2"``, step = its training steps).  Every
    ``heldout_loss`` is measured on the same held-out positions (manifest
    ``metrics.definition``), so the rows form a loss-vs-training curve.
    """
    key = _strip(name)
    base = Path(root) if root is not None else ZOO_DIR
    entries = manifest(root)["entries"]
    final = entry(key, root)
    if final["kind"] != "model":
        raise KeyError(f"zoo entry {name!r} is a {final['kind']}, not a model")
    rows = [Checkpoint(n, int(e["step"]), int(e["tokens_seen"]), base / e["path"], float(e["metrics"]["heldout_loss"]))
            for n, e in entries.items() if e["kind"] == "checkpoint" and e.get("of") == key]
    if include_final:
        tr = final.get("training", {})
        rows.append(Checkpoint(key, int(tr.get("steps", 0)), int(tr.get("tokens_seen", 0)), base / final["path"],
                               float(final["metrics"]["heldout_loss"])))
    return sorted(rows, key=lambda c: c.step)


def load_options(name: str = DEFAULT_MODEL, root: str | Path | None = None) -> dict[str, Any]:
    """Extra ``from_pretrained``-style options a loader needs for zoo model ``name``.

    ``{}`` for a model; for a float16 checkpoint ``{"tokenizer": <the final
    model's tokenizer>, "dtype": torch.float32}`` (weights upcast on load).
    """
    if entry(name, root)["kind"] != "checkpoint":
        return {}
    import torch
    from transformers import AutoTokenizer

    return {"tokenizer": AutoTokenizer.from_pretrained(str(tokenizer_dir(name, root)), local_files_only=True),
            "dtype": torch.float32}


def sae_dir(name: str = DEFAULT_SAE, root: str | Path | None = None) -> Path:
    """Local SAELens directory of zoo SAE or transcoder ``name``."""
    return _path(name, _DICT_KINDS, root)


def _key_numbers(e: dict[str, Any]) -> dict[str, Any]:
    m = e.get("metrics", {})
    if e["kind"] == "checkpoint":
        return {"of": e.get("of"), "step": e.get("step"), "tokens_seen": e.get("tokens_seen"),
                "dtype": e.get("dtype"), "heldout_loss": m.get("heldout_loss")}
    if e["kind"] == "model":
        return {
            "params": e.get("n_parameters"),
            "layers": e.get("n_layer"),
            "d_model": e.get("d_model"),
            "vocab": e.get("d_vocab"),
            "heldout_loss": m.get("heldout_loss"),
            "bigram_loss": m.get("bigram_loss"),
            "unigram_loss": m.get("unigram_loss"),
        }
    fig = {"hook": e.get("hook_name")}
    if e.get("hook_name_out"):
        fig["hook_out"] = e["hook_name_out"]
    fig.update({"d_sae": e.get("d_sae"), "explained_variance": m.get("explained_variance"), "l0": m.get("l0")})
    return fig


def list_entries(root: str | Path | None = None) -> list[ZooEntry]:
    """One :class:`ZooEntry` (name, kind, path, key figures) per shipped model / dictionary."""
    base = Path(root) if root is not None else ZOO_DIR
    return [ZooEntry(name, e["kind"], base / e["path"], _key_numbers(e))
            for name, e in manifest(root)["entries"].items()]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(root: str | Path | None = None, extra: bool = True) -> list[Mismatch]:
    """Check shipped files against the manifest; returns the problems (empty list = all good).

    Every file listed in the manifest must exist with the recorded size and
    sha256.  With ``extra=True`` files inside the entries' directories that
    the manifest does not list are reported as ``"not in manifest"``.
    """
    base = Path(root) if root is not None else ZOO_DIR
    man = manifest(root)
    problems: list[Mismatch] = []
    listed = man.get("files", {})
    for rel, info in sorted(listed.items()):
        p = base / rel
        if not p.is_file():
            problems.append(Mismatch(rel, "missing"))
            continue
        size = p.stat().st_size
        if "bytes" in info and size != info["bytes"]:
            problems.append(Mismatch(rel, "size mismatch", str(info["bytes"]), str(size)))
            continue
        digest = sha256_file(p)
        if digest != info["sha256"]:
            problems.append(Mismatch(rel, "sha256 mismatch", info["sha256"], digest))
    if extra:
        for e in man["entries"].values():
            d = base / e["path"]
            if not d.is_dir():
                continue
            for p in sorted(d.rglob("*")):
                rel = p.relative_to(base).as_posix()
                if p.is_file() and rel not in listed and "__pycache__" not in p.parts:
                    problems.append(Mismatch(rel, "not in manifest"))
    return problems


def load_model(name: str = DEFAULT_MODEL, root: str | Path | None = None, **kwargs: Any):
    """``(model, tokenizer)`` from transformers, loaded offline from the local directory.

    ``name`` may be a checkpoint (``"stories-gpt2@step-0100"``): its float16
    weights are loaded as float32 (unless ``dtype=`` says otherwise) and the
    tokenizer is the final model's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = str(model_dir(name, root))
    kwargs.setdefault("local_files_only", True)
    if entry(name, root)["kind"] == "checkpoint":
        import torch

        kwargs.setdefault("dtype", torch.float32)
    model = AutoModelForCausalLM.from_pretrained(d, **kwargs)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir(name, root)), local_files_only=True)
    model.eval()
    return model, tok


def load_dictionary(name: str = DEFAULT_SAE, root: str | Path | None = None, device: str = "cpu"):
    """The SAELens object (``TopKSAE``, ``Transcoder``, ...) for zoo dictionary ``name``."""
    from sae_lens import SAE

    return SAE.load_from_disk(str(sae_dir(name, root)), device=device)
