"""Rows of activations for fitting dictionaries: :class:`RowSource` and
:func:`load_activations_file` (a user's own ``(n, d)`` safetensors tensor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from mi_ideas.errors import UsageError

__all__ = ["RowSource", "load_activations_file"]


class RowSource:
    """Rows ``(n, d)`` that can be read many times: a tensor in memory, or a harvest
    (:class:`mi_ideas.harvest.Activations`) streamed shard by shard.

    A harvest is read into memory once when it fits ``budget_mb``; otherwise every pass
    reads it from disk, so peak memory stays one shard plus one batch whatever the number
    of rows (the activations are never held twice). ``transform`` maps each batch (e.g. a
    PCA projection) as it is read.
    """

    def __init__(self, *, tensor: torch.Tensor | None = None, activations: Any = None,
                 site: str | None = None, budget_mb: float = 256.0,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self._tensor = tensor
        self._acts = activations
        self._site = site
        self.transform = transform
        if tensor is None:
            self.n_rows = int(activations.n_rows)
            d = int(activations.manifest.get("d_model") or 0)
            if self.n_rows * max(d, 1) * 4 <= budget_mb * 2**20:
                self._tensor = activations.load(site).float()
        else:
            self.n_rows = int(tensor.shape[0])
        self.in_memory = self._tensor is not None

    @classmethod
    def of(cls, x: torch.Tensor) -> "RowSource":
        return cls(tensor=x.float())

    def mapped(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "RowSource":
        """The same rows with ``fn`` applied to every batch (not stored)."""
        out = RowSource.__new__(RowSource)
        out.__dict__.update(self.__dict__)
        out.transform = fn if self.transform is None else (lambda b, f=self.transform: fn(f(b)))
        return out

    def materialize(self) -> torch.Tensor:
        """Every row as one tensor: the in-memory rows themselves (no copy) when there is no
        transform, else one concatenation of the (transformed / streamed) batches."""
        if self._tensor is not None and self.transform is None:
            return self._tensor.contiguous()
        return torch.cat(list(self.batches()))

    def batches(self, batch_size: int = 8192) -> Iterator[torch.Tensor]:
        """One pass over every row, in order, ``batch_size`` rows at a time."""
        f = self.transform or (lambda b: b)
        if self._tensor is not None:
            for i in range(0, self.n_rows, batch_size):
                yield f(self._tensor[i:i + batch_size])
            return
        for b in self._acts.iter_batches(self._site, batch_size):
            yield f(b.float())

    def sample(self, n: int) -> torch.Tensor:
        """``min(n, n_rows)`` rows spread evenly over the whole source (every m-th row), for
        seeding k-means and estimating scales without a full read into memory."""
        stride = max(1, self.n_rows // max(n, 1))
        if self._tensor is not None:
            f = self.transform or (lambda b: b)
            return f(self._tensor[::stride][:n])
        out, seen = [], 0
        for b in self.batches():
            idx = torch.arange((-seen) % stride, len(b), stride)
            out.append(b[idx])
            seen += len(b)
        return torch.cat(out)[:n]

    def shuffled_batches(self, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        """Endless batches of exactly ``batch_size`` rows (SAELens's ``DataProvider``):
        a fresh permutation of all rows per epoch in memory; streamed, the rows of a
        window of 64 batches are permuted (the harvest's texts are already independent)."""
        g = torch.Generator().manual_seed(seed)
        while True:
            if self._tensor is not None:
                f = self.transform or (lambda b: b)
                perm = torch.randperm(self.n_rows, generator=g)
                for i in range(0, self.n_rows - batch_size + 1, batch_size):
                    yield f(self._tensor[perm[i:i + batch_size]])
                if self.n_rows < batch_size:
                    yield f(self._tensor[torch.randint(self.n_rows, (batch_size,), generator=g)])
                continue
            for window in self.batches(64 * batch_size):
                window = window[torch.randperm(len(window), generator=g)]
                for i in range(0, len(window) - batch_size + 1, batch_size):
                    yield window[i:i + batch_size]


def load_activations_file(path: str) -> torch.Tensor:
    """The tensor ``activations`` of shape ``(n, d)`` from a safetensors file, as float32;
    a UsageError naming the problem and the fix otherwise
    (:func:`~.files.check_activations_header`, plus a check for NaN / inf)."""
    from safetensors import safe_open

    from .files import FIX, check_activations_header

    check_activations_header(path)
    with safe_open(str(Path(path).expanduser()), framework="pt") as f:
        x = f.get_tensor("activations").float()
    if not torch.isfinite(x).all():
        raise UsageError(f"activations={path!r} contains NaN or infinite values; drop those "
                         f"rows before saving. {FIX}")
    return x
