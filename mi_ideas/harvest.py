"""Batched activation harvesting: many sites per forward, streamed to disk, cached.

``harvest_to_cache(subject, dataset, sites)`` runs the dataset through the subject in batches,
reads every site in one forward per batch, and streams the rows to safetensors shards, so
peak memory is bounded by ``budget_mb`` however many tokens are harvested. The result is
cached under ``$MI_IDEAS_CACHE`` (default ``~/.cache/mi-ideas``) by (model fingerprint,
dataset fingerprint, sites, positions, max_length), so another idea or a re-run reuses it.

Each row also records which text it came from, its position and its token id.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from mi_ideas.errors import UsageError

HARVEST_VERSION = 1


def cache_root() -> Path:
    """Where caches live: ``$MI_IDEAS_CACHE`` or ``~/.cache/mi-ideas``."""
    return Path(os.environ.get("MI_IDEAS_CACHE", Path.home() / ".cache" / "mi-ideas"))


@dataclass
class Activations:
    """A harvested set of activations on disk: read whole, or stream in batches."""

    path: Path
    manifest: dict[str, Any]

    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    def __len__(self) -> int:
        return self.n_rows

    def shards(self) -> Iterator[dict[str, Any]]:
        """Each shard as a dict of tensors (sites plus ``doc``, ``pos``, ``token``)."""
        from safetensors.torch import load_file

        for name in self.manifest["shards"]:
            yield load_file(str(self.path / name))

    def load(self, site: str) -> Any:
        """All rows of one site as one ``(n_rows, d)`` tensor (needs the memory for it)."""
        import torch

        if site not in self.manifest["sites"] and site not in ("doc", "pos", "token"):
            raise UsageError(f"site {site!r} was not harvested; harvested: {self.sites}.")
        return torch.cat([s[site] for s in self.shards()]) if self.manifest["shards"] else None

    def iter_batches(self, site: str, batch_size: int) -> Iterator[Any]:
        """Rows of one site in batches of ``batch_size``, reading one shard at a time."""
        import torch

        buf: list[Any] = []
        have = 0
        for shard in self.shards():
            x = shard[site]
            buf.append(x)
            have += len(x)
            while have >= batch_size:
                cat = torch.cat(buf)
                yield cat[:batch_size]
                rest = cat[batch_size:]
                buf, have = ([rest] if len(rest) else []), len(rest)
        if have:
            yield torch.cat(buf)


def cache_key(subject: Any, dataset: Any, sites: Sequence[str], positions: str,
              max_length: int, prepend_bos: bool) -> str:
    payload = json.dumps({
        "v": HARVEST_VERSION, "model": subject.fingerprint, "backend": subject.backend,
        "data": dataset.fingerprint, "sites": sorted(sites), "positions": positions,
        "max_length": max_length, "bos": prepend_bos,
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def harvest_to_cache(
    subject: Any,
    dataset: Any,
    sites: Sequence[str],
    *,
    positions: Any = "all",
    positions_key: str | None = None,
    batch_size: int = 32,
    max_length: int = 128,
    prepend_bos: bool = True,
    skip_bos: bool = True,
    budget_mb: float = 256.0,
    reuse: bool = True,
    progress: Any = None,
) -> Activations:
    """Harvest ``sites`` over a dataset; returns the on-disk :class:`Activations`.

    ``positions``: ``"all"`` (every real token; ``skip_bos`` drops the BOS row, whose norm
    dwarfs the rest), ``"last"`` (the last token of each text), or a function
    ``mask(batch) -> (batch, seq) bool tensor`` choosing rows (e.g. only tokens labelled with a
    concept), named by ``positions_key`` for the cache. ``budget_mb`` bounds the
    rows held in memory before a shard is written. ``reuse=False`` recomputes and replaces
    a cached harvest.
    """
    import torch

    from mi_ideas.data import Dataset

    if isinstance(dataset, (list, tuple)) and all(isinstance(t, str) for t in dataset):
        dataset = Dataset("python:list", list(dataset))
    if not isinstance(dataset, Dataset):
        raise UsageError(
            f"harvest_to_cache takes a mi_ideas.data.Dataset or a list of strings, not "
            f"{type(dataset).__name__}; resolve a spec first with "
            f"mi_ideas.load_dataset({dataset!r})."
        )
    if callable(positions):
        if not positions_key:
            raise UsageError(
                "a position mask function needs positions_key, a name that identifies it in "
                "the cache (e.g. positions_key='colour-words')."
            )
        position_name = f"mask:{positions_key}"
    elif positions in ("all", "last"):
        position_name = f"{positions}/skip_bos={skip_bos}"
    else:
        raise UsageError(
            f"harvest positions must be 'all', 'last' or a mask function, not {positions!r}."
        )
    names = [subject.site(s).name for s in sites]
    key = cache_key(subject, dataset, names, position_name, max_length, prepend_bos)
    root = cache_root() / "harvest"
    final = root / key
    if reuse and (final / "manifest.json").is_file():
        return Activations(final, json.loads((final / "manifest.json").read_text()))

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bytes_per_row = 4 * sum(subject.d_vocab if n == "logits" else subject.d_model for n in names) + 24
    # Shards of 1/16 of the budget, written by a background thread while the model
    # runs on: at most the buffer being filled plus one shard being written (and its
    # concatenated copy) are in memory, well under the budget.
    rows_per_shard = max(1, int(budget_mb * 2**20 / 16 / bytes_per_row))
    buffers: dict[str, list[torch.Tensor]] = {n: [] for n in [*names, "doc", "pos", "token"]}
    buffered = 0
    shards: list[str] = []
    n_rows = 0
    writer = ThreadPoolExecutor(max_workers=1)  # disk writes overlap the next forwards
    pending: list[Future] = []

    def flush() -> None:
        nonlocal buffered
        if not buffered:
            return
        name = f"shard-{len(shards):05d}.safetensors"
        parts = {k: list(v) for k, v in buffers.items()}
        for future in pending:  # one write in flight at a time bounds memory
            future.result()
        pending[:] = [writer.submit(_write_shard, parts, tmp / name)]
        shards.append(name)
        for v in buffers.values():
            v.clear()
        buffered = 0

    starts = range(0, len(dataset), batch_size)
    iterator = progress(starts, total=len(starts), desc="harvest") if progress else starts
    try:
        for start in iterator:
            texts = dataset.texts[start:start + batch_size]
            batch = subject.tokenize(texts, prepend_bos=prepend_bos, max_length=max_length)
            if callable(positions):
                mask = positions(batch).bool() & batch.attention_mask.bool()
            elif positions == "last":
                mask = torch.zeros(batch.shape, dtype=torch.bool)
                mask[:, -1] = True
            else:
                mask = batch.attention_mask.bool().clone()
                if skip_bos and prepend_bos:
                    first = mask.float().argmax(dim=1)
                    mask[torch.arange(len(batch)), first] = False
            acts = subject.forward(batch, read=names, positions=mask).activations
            rows, cols = mask.nonzero(as_tuple=True)
            first_real = batch.attention_mask.float().argmax(dim=1)
            for n in names:
                buffers[n].append(acts[n].float())
            buffers["doc"].append(rows + start)
            buffers["pos"].append(cols - first_real[rows])
            buffers["token"].append(batch.input_ids[rows, cols])
            buffered += len(rows)
            n_rows += len(rows)
            if buffered >= rows_per_shard:
                flush()
        flush()
        for future in pending:
            future.result()
        manifest = {
            "version": HARVEST_VERSION, "sites": names, "n_rows": n_rows, "shards": shards,
            "model": subject.spec, "model_fingerprint": subject.fingerprint,
            "backend": subject.backend, "data": dataset.spec,
            "data_fingerprint": dataset.fingerprint, "positions": position_name,
            "skip_bos": skip_bos, "max_length": max_length, "prepend_bos": prepend_bos,
            "d_model": subject.d_model,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        writer.shutdown(wait=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    writer.shutdown(wait=True)
    return Activations(final, manifest)


def _write_shard(parts: dict[str, list[Any]], path: Path) -> None:
    """Concatenate a shard's rows and write it (runs on the writer thread)."""
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.cat(v) for k, v in parts.items()}, str(path))


def list_cache() -> list[dict[str, Any]]:
    """Every cached harvest: key, model, data, sites, rows, size on disk."""
    root = cache_root() / "harvest"
    out = []
    for d in sorted(root.glob("*")) if root.is_dir() else []:
        m = d / "manifest.json"
        if d.name.startswith(".") or not m.is_file():
            continue
        info = json.loads(m.read_text())
        size = sum(f.stat().st_size for f in d.iterdir())
        out.append({"key": d.name, "model": info["model"], "data": info["data"],
                    "sites": info["sites"], "rows": info["n_rows"], "bytes": size})
    return out


def clear_cache() -> int:
    """Delete every cached harvest; returns how many were removed."""
    root = cache_root() / "harvest"
    n = 0
    for d in root.glob("*") if root.is_dir() else []:
        shutil.rmtree(d, ignore_errors=True)
        n += 1
    return n
