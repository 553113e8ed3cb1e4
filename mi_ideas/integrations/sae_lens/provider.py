"""The SAELens ``DataProvider``: :class:`ActivationProvider`, built by
:func:`activation_provider` from a harvest of any subject (local or NDIF), and
:func:`split_dataset` to hold texts out for the evaluator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from mi_ideas.errors import UsageError
from mi_ideas.integrations.sae_lens._common import _check_positions, _dataset, _subject

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ActivationProvider", "activation_provider", "split_dataset"]


def split_dataset(dataset: Any, n_eval: int, *, seed: int = 0) -> tuple[Any, Any]:
    """``(train, held_out)``: a dataset (spec or object) with its last ``n_eval`` texts held
    out, e.g. ``split_dataset("zoo:stories:1200", 200)``. Feed ``train`` to
    :func:`activation_provider` and ``held_out`` to :func:`evaluator`."""
    from mi_ideas.data import Dataset

    ds = _dataset(dataset, seed)
    if not 0 < n_eval < len(ds):
        raise UsageError(f"cannot hold out {n_eval} of the {len(ds)} texts of {ds.spec!r}; "
                         f"hold out at least one and leave at least one to train on.")
    cut = len(ds) - n_eval
    spans = ds.spans
    train = Dataset(f"{ds.spec}[:{cut}]", ds.texts[:cut], ds.labels[:cut],
                    spans[:cut] if spans is not None else None, ds.description)
    held = Dataset(f"{ds.spec}[{cut}:]", ds.texts[cut:], ds.labels[cut:],
                   spans[cut:] if spans is not None else None, ds.description)
    return train, held



class ActivationProvider:
    """An iterator of ``(batch_size, d_model)`` float32 activation batches (SAELens's
    ``DataProvider``), read from a cached harvest; see :func:`activation_provider`.

    Attributes: ``activations`` (the :class:`~mi_ideas.harvest.Activations` on disk),
    ``subject``, ``dataset``, ``site``, ``batch_size``, ``n_rows`` (rows per epoch),
    ``epochs`` (passes over the cache started so far) and ``rows_served``.
    """

    def __init__(self, activations: Any, site: str, batch_size: int, *, loop: bool = True,
                 shuffle_seed: int | None = None, buffer_rows: int | None = None,
                 budget_mb: float = 256.0, subject: Any = None, dataset: Any = None):
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, not {batch_size}.")
        if activations.n_rows == 0:
            raise UsageError(
                f"the harvest of {activations.manifest.get('data')!r} holds no rows at "
                f"{site} (every text was only a BOS token?); use longer texts.")
        self.activations = activations
        self.site = site
        self.batch_size = int(batch_size)
        self.loop = loop
        self.shuffle_seed = shuffle_seed
        self.subject = subject
        self.dataset = dataset
        d = int(activations.manifest.get("d_model") or 1)
        budget_rows = max(2 * self.batch_size, int(budget_mb * 2**20 / (4 * d)))
        self.buffer_rows = (max(2 * self.batch_size, int(buffer_rows)) if buffer_rows
                            else budget_rows)
        #: the whole harvest is held in memory when it fits the budget (no re-reads)
        self._in_memory = self.n_rows <= budget_rows
        self._all: Any = None
        self.epochs = 0
        self.rows_served = 0
        self._gen = self._batches()

    @property
    def n_rows(self) -> int:
        return self.activations.n_rows

    def __repr__(self) -> str:
        return (f"ActivationProvider({self.site}, n_rows={self.n_rows}, "
                f"batch_size={self.batch_size}, loop={self.loop}, "
                f"shuffle_seed={self.shuffle_seed}, epochs={self.epochs})")

    def __iter__(self) -> "ActivationProvider":
        return self

    def __next__(self) -> "torch.Tensor":
        batch = next(self._gen)
        self.rows_served += len(batch)
        return batch

    # -- streams -----------------------------------------------------------------------

    def _epoch(self) -> Iterator["torch.Tensor"]:
        """One pass over the harvest in cache order, as chunks of rows."""
        if self._in_memory:
            if self._all is None:
                self._all = self.activations.load(self.site).float()
            yield self._all
            return
        yield from self.activations.iter_batches(self.site, max(self.batch_size, 4096))

    def _chunks(self) -> Iterator["torch.Tensor"]:
        """Epoch after epoch (once when ``loop=False``), shuffled when asked."""
        import torch

        gen = (torch.Generator().manual_seed(int(self.shuffle_seed))
               if self.shuffle_seed is not None else None)
        if gen is not None and self._in_memory:
            # the whole harvest fits the buffer: each epoch is an exact permutation
            while True:
                self.epochs += 1
                x = next(self._epoch())
                yield x[torch.randperm(len(x), generator=gen)]
                if not self.loop:
                    return
        buffer: Any = None
        while True:
            self.epochs += 1
            for chunk in self._epoch():
                if gen is None:
                    yield chunk
                    continue
                # a mixing buffer: fill, shuffle, hand out half, keep half
                buffer = chunk if buffer is None else torch.cat([buffer, chunk])
                while len(buffer) >= self.buffer_rows:
                    buffer = buffer[torch.randperm(len(buffer), generator=gen)]
                    half = len(buffer) // 2
                    yield buffer[:half]
                    buffer = buffer[half:]
            if not self.loop:
                break
        if buffer is not None and len(buffer):
            yield buffer[torch.randperm(len(buffer), generator=gen)]

    def _batches(self) -> Iterator["torch.Tensor"]:
        """Exactly ``batch_size`` rows per batch (a batch may span two epochs); with
        ``loop=False`` the last batch holds what is left."""
        import torch

        bs = self.batch_size
        pending: Any = None
        offset = 0
        for chunk in self._chunks():
            if pending is None or offset >= len(pending):
                pending, offset = chunk, 0
            else:
                pending, offset = torch.cat([pending[offset:], chunk]), 0
            while len(pending) - offset >= bs:
                yield pending[offset:offset + bs].clone()
                offset += bs
        if pending is not None and offset < len(pending):
            yield pending[offset:].clone()


def activation_provider(
    subject: Any,
    site: str,
    dataset: Any,
    batch_size: int,
    *,
    max_length: int = 128,
    positions: str = "all",
    skip_bos: bool = True,
    prepend_bos: bool = True,
    budget_mb: float = 256.0,
    loop: bool = True,
    shuffle_seed: int | None = None,
    buffer_rows: int | None = None,
    harvest_batch_size: int = 32,
    remote: Any = None,
    data_seed: int = 0,
    reuse: bool = True,
    progress: Any = None,
) -> ActivationProvider:
    """A SAELens ``DataProvider`` of ``site`` activations of ``subject`` over ``dataset``.

    ``subject``: a :class:`~mi_ideas.subject.Subject`, a model object, or a model spec
    (``"hf:DIR"``; with ``remote="ndif"`` or a URL it runs through NDIF). ``dataset``: a
    :class:`~mi_ideas.data.Dataset`, a list of texts, or a data spec. ``site``: a standard
    site or a TransformerLens hook name (``blocks.1.hook_resid_pre``).

    The activations are harvested once with :func:`mi_ideas.harvest.harvest_to_cache` (``positions``,
    ``skip_bos``, ``max_length``, ``prepend_bos``, ``budget_mb`` and ``reuse`` as there;
    ``harvest_batch_size`` texts per forward, which for a remote subject is one NDIF
    request) and cached by model and data fingerprint, so a second provider, a later epoch
    or a re-run never calls the model again.

    Rows come in harvest order -- text by text, token by token (BOS skipped), the whole
    dataset, then again from the start while ``loop=True`` (SAETrainer pulls as many
    batches as ``total_training_samples`` needs, plus ``n_batches_for_norm_estimate``
    first when the SAE's ``normalize_activations`` is ``"expected_average_only_in"`` or
    ``"covariance_whitening"``). Every batch has exactly ``batch_size`` rows (a batch may
    span the end of one epoch and the start of the next); with ``loop=False`` iteration
    stops after one pass and the last batch holds what is left.

    ``shuffle_seed``: shuffle rows (deterministically for a seed). When the harvest fits in
    ``budget_mb`` it is held in memory and every epoch is a fresh permutation of all rows;
    otherwise rows are mixed in a buffer of ``buffer_rows`` rows (default: as many as fit
    in ``budget_mb``) that is shuffled, half handed out and refilled.
    """
    from mi_ideas.harvest import harvest_to_cache

    _check_positions(positions)
    subj = _subject(subject, remote)
    ds = _dataset(dataset, data_seed)
    name = subj.site(site).name
    acts = harvest_to_cache(subj, ds, [name], positions=positions,
                            batch_size=harvest_batch_size, max_length=max_length,
                            prepend_bos=prepend_bos, skip_bos=skip_bos, budget_mb=budget_mb,
                            reuse=reuse, progress=progress)
    return ActivationProvider(acts, name, batch_size, loop=loop, shuffle_seed=shuffle_seed,
                              buffer_rows=buffer_rows, budget_mb=budget_mb, subject=subj,
                              dataset=ds)
