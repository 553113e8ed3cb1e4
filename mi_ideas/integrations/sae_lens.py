"""Train SAELens dictionaries on any subject's activations, with mi-ideas metrics.

SAELens's ``SAETrainer(cfg, sae, data_provider, evaluator)`` needs two things this
module supplies:

:func:`activation_provider`
    a ``DataProvider`` (an iterator of ``(batch_size, d_model)`` float32 tensors) streamed
    from the harvest cache (:func:`mi_ideas.harvest.harvest_to_cache`). The first use runs the
    dataset through the subject -- locally, or through NDIF for a remote subject (one
    request per harvest batch) -- and every later epoch, run or provider reads the cache.
:func:`evaluator`
    an ``Evaluator``, ``(sae, data_provider, activation_scaler) -> dict[str, float]``,
    which SAELens calls every ``wandb_log_frequency * eval_every_n_wandb_logs`` steps
    when ``cfg.logger.log_to_wandb`` is on, and logs with ``wandb.log``. Its metrics are
    picked by name (``ideas=[...]``) from :data:`METRICS`; other code adds metrics with
    :func:`register_metric`.

Metrics (keys are prefixed, ``mi_ideas/`` by default; "eval set" is a fixed set of
held-out activations harvested once, see :class:`Evaluator`):

``explained-variance``
    ``explained_variance`` = 1 − Σᵢ‖xᵢ − x̂ᵢ‖² / Σᵢ‖xᵢ − x̄‖² over the eval set, x̂ the SAE's
    reconstruction in the model's own units (SAELens's activation scaler undone), x̄
    the eval set's mean. 1 is perfect; 0 is no better than predicting x̄; an untrained
    SAE (x̂ ≈ 0) scores ≈ −‖x̄‖²/variance, often negative.
``kmeans-baseline``
    ``kmeans_explained_variance``: the same quantity when each eval activation is replaced
    by its nearest centroid of a k-means fit (scikit-learn) with k = the SAE's width
    ``d_sae``, capped at ``kmeans_max_k`` and at the number of fitting rows
    (``kmeans_k`` reports the k used). The centroids are fitted once on held-out rows
    *disjoint from the eval set* and cached (in memory and under
    ``$MI_IDEAS_CACHE/kmeans``), so both numbers are out-of-sample. A k-means
    reconstruction is a dictionary of k atoms used one at a time with coefficient 1: an
    SAE that does not beat it is not using its sparsity.
``sparsity``
    ``l0``, the mean number of non-zero latents per eval token, and
    ``dead_latents_fraction``, the fraction of the ``d_sae`` latents that are zero on
    every eval token.
``spliced-kl``
    ``spliced_kl``: the mean KL(clean ‖ spliced) in nats of the next-token distribution,
    where "spliced" runs the model with the SAE's reconstruction x̂ written over the
    site (``Intervention(site, "replace", x̂, positions=mask)``, at exactly the eval
    set's rows), at the last token of each eval text (``kl_positions="last"``) or at every
    spliced position (``"all"``). ``mean_ablation_kl`` is the same with x̄ written
    instead (computed once), and ``spliced_kl_fraction`` = spliced_kl / mean_ablation_kl
    (0 = the SAE preserves the output, 1 = as bad as erasing the site to its mean). The
    KL is computed next to the model (:class:`~mi_ideas.subject.StatsRequest`), so a
    remote subject sends back one number per position, never logits.

Everything runs on any subject: ``subject`` and ``dataset`` may be specs
(``"hf:DIR"``, ``"zoo:stories:200"``) or objects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from mi_ideas.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ActivationProvider",
    "DEFAULT_IDEAS",
    "EvalContext",
    "Evaluator",
    "KMeansBaseline",
    "METRICS",
    "Metric",
    "activation_provider",
    "evaluator",
    "explained_variance",
    "register_metric",
    "row_mask",
    "split_dataset",
]


# -- shared helpers --------------------------------------------------------------------------


def _subject(subject: Any, remote: Any) -> Any:
    from mi_ideas.host import resolve_model

    return resolve_model(subject, remote=remote)


def _dataset(dataset: Any, seed: int) -> Any:
    from mi_ideas.host import resolve_dataset

    return resolve_dataset(dataset, seed=seed)


def _check_positions(positions: str) -> None:
    if positions not in ("all", "last"):
        raise UsageError(f"positions must be 'all' or 'last' (as harvest), not {positions!r}.")


def row_mask(batch: Any, positions: str = "all", *, skip_bos: bool = True,
             prepend_bos: bool = True) -> "torch.Tensor":
    """The boolean ``(batch, seq)`` mask of the rows :func:`~mi_ideas.harvest.harvest_to_cache`
    stores for ``batch``: every real token (BOS skipped) or each text's last token."""
    import torch

    _check_positions(positions)
    if positions == "last":
        mask = torch.zeros(batch.shape, dtype=torch.bool)
        mask[:, -1] = True
        return mask
    mask = batch.attention_mask.bool().clone()
    if skip_bos and prepend_bos:
        first = mask.float().argmax(dim=1)
        mask[torch.arange(len(batch)), first] = False
    return mask


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


def explained_variance(x: "torch.Tensor", x_hat: "torch.Tensor") -> float:
    """1 − Σᵢ‖xᵢ − x̂ᵢ‖² / Σᵢ‖xᵢ − x̄‖² (x̄ the mean row of ``x``), in float64."""
    x = x.double()
    resid = (x - x_hat.double()).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    if float(total) == 0.0:
        raise UsageError("explained variance is undefined on rows that are all equal.")
    return float(1.0 - resid / total)


# -- the data provider -------------------------------------------------------------------------


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
    acts = harvest_to_cache(subj, ds, [name], positions=positions, batch_size=harvest_batch_size,
                   max_length=max_length, prepend_bos=prepend_bos, skip_bos=skip_bos,
                   budget_mb=budget_mb, reuse=reuse, progress=progress)
    return ActivationProvider(acts, name, batch_size, loop=loop, shuffle_seed=shuffle_seed,
                              buffer_rows=buffer_rows, budget_mb=budget_mb, subject=subj,
                              dataset=ds)


# -- k-means baseline ---------------------------------------------------------------------------


class KMeansBaseline:
    """k centroids; an activation is reconstructed by its nearest centroid (Euclidean)."""

    def __init__(self, centroids: "torch.Tensor"):
        self.centroids = centroids.float()

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def fit(cls, x: "torch.Tensor", k: int, *, seed: int = 0, n_init: int = 3,
            max_iter: int = 100) -> "KMeansBaseline":
        """Fit k-means on the rows of ``x`` (scikit-learn ``KMeans``, k-means++ init, best
        of ``n_init``; ``MiniBatchKMeans`` above 20 000 rows). With ``k >= len(x)`` every
        row is its own centroid."""
        import numpy as np
        import torch

        x = x.detach().float().cpu()
        if k < 1:
            raise UsageError(f"k-means needs k >= 1, not {k}.")
        if k >= len(x):
            return cls(x.clone())
        from sklearn.cluster import KMeans, MiniBatchKMeans

        data = np.ascontiguousarray(x.numpy())
        if len(x) > 20_000:
            km = MiniBatchKMeans(n_clusters=k, n_init=n_init, random_state=seed,
                                 max_iter=max_iter, batch_size=4096)
        else:
            km = KMeans(n_clusters=k, n_init=n_init, random_state=seed, max_iter=max_iter)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - scikit-learn depends on it
            km.fit(data)
        else:
            with threadpool_limits(limits=max(1, torch.get_num_threads())):
                km.fit(data)
        return cls(torch.from_numpy(km.cluster_centers_.astype("float32")))

    def assign(self, x: "torch.Tensor", chunk: int = 4096) -> "torch.Tensor":
        """The index of each row's nearest centroid."""
        import torch

        out = []
        c = self.centroids
        c2 = c.pow(2).sum(-1)
        for i in range(0, len(x), chunk):
            xi = x[i:i + chunk].float()
            # ‖x − c‖² = ‖x‖² − 2x·c + ‖c‖²; ‖x‖² does not change the argmin
            out.append((c2[None] - 2 * xi @ c.T).argmin(-1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def reconstruct(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.centroids[self.assign(x)]

    def explained_variance(self, x: "torch.Tensor") -> float:
        return explained_variance(x, self.reconstruct(x))


# -- metrics registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A named evaluator metric: ``fn(ctx) -> {key: float}`` (keys get the prefix)."""

    name: str
    fn: Callable[["EvalContext"], Mapping[str, float]]
    description: str
    keys: tuple[str, ...] = ()
    #: whether the metric runs the model (on a remote subject: NDIF requests per call)
    needs_model: bool = False
    #: whether the evaluator must hold out rows for a k-means fit
    needs_fit_rows: bool = False


#: every metric an :func:`evaluator` can compute, by name.
METRICS: dict[str, Metric] = {}

DEFAULT_IDEAS = ("explained-variance", "kmeans-baseline", "sparsity", "spliced-kl")


def register_metric(name: str, *, description: str, keys: Sequence[str] = (),
                    needs_model: bool = False, needs_fit_rows: bool = False,
                    replace: bool = False) -> Callable:
    """Decorator adding ``fn(ctx: EvalContext) -> dict[str, float]`` to :data:`METRICS`.

    ``ctx`` gives the SAE, the activation scaler, the eval set (``ctx.x``), the
    reconstruction (``ctx.x_hat``, ``ctx.feature_acts``, computed once per call), the
    subject and the eval texts as batches with their splice masks (``ctx.eval_batches``),
    evaluator options (``ctx.options``) and a per-metric dict kept between calls
    (``ctx.state``). A name already taken is an error unless ``replace=True``.
    """
    def decorate(fn: Callable) -> Callable:
        if name in METRICS and not replace:
            raise UsageError(f"an evaluator metric named {name!r} is already registered.")
        METRICS[name] = Metric(name, fn, description, tuple(keys), needs_model, needs_fit_rows)
        return fn
    return decorate


def _resolve_ideas(ideas: Sequence[str] | str | None) -> list[str]:
    if ideas is None:
        return list(DEFAULT_IDEAS)
    if isinstance(ideas, str):
        ideas = [ideas]
    names = list(dict.fromkeys(ideas))
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        known = "; ".join(f"{m.name} ({m.description})" for m in METRICS.values())
        raise UsageError(
            f"unknown evaluator metric{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(u) for u in unknown)}. Known metrics: {known}.")
    if not names:
        raise UsageError(f"the evaluator was given no metrics; pick from {', '.join(METRICS)}.")
    return names


@dataclass
class EvalBatch:
    """Eval texts ``[start, stop)`` as a tokenized batch, with the mask of the rows the
    eval set holds for them (the splice positions) and those rows' slice of ``ctx.x``."""

    batch: Any
    mask: "torch.Tensor"
    rows: slice


class EvalContext:
    """What a metric function sees during one evaluator call."""

    def __init__(self, evaluator: "Evaluator", sae: Any, data_provider: Any,
                 activation_scaler: Any):
        self.evaluator = evaluator
        self.sae = sae
        self.data_provider = data_provider
        self.activation_scaler = activation_scaler
        self._recon: tuple[Any, Any] | None = None
        self.metric: str | None = None

    @property
    def subject(self) -> Any:
        return self.evaluator.subject

    @property
    def site(self) -> str:
        return self.evaluator.site

    @property
    def options(self) -> dict[str, Any]:
        return self.evaluator.options

    @property
    def x(self) -> "torch.Tensor":
        """The eval set's activations, ``(n_eval, d_model)``, in harvest order."""
        return self.evaluator.x_eval

    @property
    def x_fit(self) -> "torch.Tensor":
        """Held-out rows disjoint from ``x`` (for fitting baselines)."""
        return self.evaluator.x_fit

    @property
    def eval_batches(self) -> list[EvalBatch]:
        return self.evaluator.eval_batches()

    @property
    def state(self) -> dict[str, Any]:
        """A dict for the running metric, kept between evaluator calls."""
        return self.evaluator._state.setdefault(self.metric or "", {})

    def reconstruct(self, x: "torch.Tensor",
                    chunk: int = 4096) -> tuple["torch.Tensor", "torch.Tensor"]:
        """``(x_hat, feature_acts)`` of the SAE on ``x`` (model units in and out: the
        activation scaler is applied before encoding and undone after decoding)."""
        import torch

        sae, scaler = self.sae, self.activation_scaler
        param = next(sae.parameters())
        hats, feats = [], []
        for i in range(0, len(x), chunk):
            xi = x[i:i + chunk].to(device=param.device, dtype=param.dtype)
            if scaler is not None:
                xi = scaler.scale(xi)
            f = sae.encode(xi)
            h = sae.decode(f)
            if scaler is not None:
                h = scaler.unscale(h)
            if getattr(f, "is_sparse", False):
                f = f.to_dense()
            hats.append(h.float().cpu())
            feats.append(f.float().cpu())
        return torch.cat(hats), torch.cat(feats)

    def _ensure(self) -> tuple[Any, Any]:
        if self._recon is None:
            self._recon = self.reconstruct(self.x)
        return self._recon

    @property
    def x_hat(self) -> "torch.Tensor":
        return self._ensure()[0]

    @property
    def feature_acts(self) -> "torch.Tensor":
        return self._ensure()[1]


# -- the evaluator ---------------------------------------------------------------------------


class Evaluator:
    """A SAELens ``Evaluator``: ``evaluator(sae, data_provider, activation_scaler)``
    returns ``{prefix + key: float}`` for the metrics named in ``ideas``.

    The eval set is prepared once (at the first call, or by :meth:`prepare`): the first
    texts of ``dataset`` holding at least ``n_eval_tokens`` rows (whole texts; rows as
    :func:`activation_provider` harvests them: ``positions``, ``skip_bos``,
    ``max_length``), harvested through the cache. ``dataset`` should be held out from the
    training data (:func:`split_dataset`). When ``kmeans-baseline`` is asked for, the
    following texts give ``n_kmeans_fit_tokens`` more rows, disjoint from the eval set, to
    fit k-means on; a dataset too short for them is an error. ``data_provider`` is not
    read: training batches are never consumed by evaluation. ``activation_scaler`` may be
    None (identity), as after ``fit()`` has folded it into the SAE. Every call's result is
    appended to ``history``.
    """

    def __init__(
        self,
        ideas: Sequence[str] | str | None = None,
        *,
        subject: Any,
        dataset: Any,
        site: str | None = None,
        n_eval_tokens: int = 2048,
        n_kmeans_fit_tokens: int | None = None,
        kmeans_max_k: int = 4096,
        kmeans_n_init: int = 3,
        kl_positions: str = "last",
        positions: str = "all",
        max_length: int = 128,
        skip_bos: bool = True,
        prepend_bos: bool = True,
        batch_size: int = 32,
        prefix: str = "mi_ideas/",
        remote: Any = None,
        data_seed: int = 0,
        seed: int = 0,
        budget_mb: float = 256.0,
        options: Mapping[str, Any] | None = None,
    ):
        self.ideas = _resolve_ideas(ideas)
        _check_positions(positions)
        if kl_positions not in ("last", "all"):
            raise UsageError(f"kl_positions must be 'last' or 'all', not {kl_positions!r}.")
        if n_eval_tokens < 2:
            raise UsageError(f"n_eval_tokens must be at least 2, not {n_eval_tokens}.")
        self._subject_arg, self._remote = subject, remote
        self._dataset_arg = dataset
        self._site_arg = site
        self.n_eval_tokens = int(n_eval_tokens)
        self.n_kmeans_fit_tokens = int(n_kmeans_fit_tokens or n_eval_tokens)
        self.kmeans_max_k = int(kmeans_max_k)
        self.kmeans_n_init = int(kmeans_n_init)
        self.kl_positions = kl_positions
        self.positions = positions
        self.max_length = max_length
        self.skip_bos = skip_bos
        self.prepend_bos = prepend_bos
        self.batch_size = int(batch_size)
        self.prefix = prefix
        self.data_seed = data_seed
        self.seed = seed
        self.budget_mb = budget_mb
        self.options: dict[str, Any] = dict(options or {})
        self.history: list[dict[str, float]] = []
        self.subject: Any = None
        self.dataset: Any = None
        self.site: str = ""
        self.activations: Any = None
        self.x_eval: Any = None
        self.x_fit: Any = None
        self.eval_texts: list[str] = []
        self._row_starts: list[int] = []
        self._batches: list[EvalBatch] | None = None
        self._state: dict[str, dict[str, Any]] = {}
        self._prepared = False

    def __repr__(self) -> str:
        return f"Evaluator({self.ideas}, site={self.site or self._site_arg!r})"

    @property
    def needs_fit_rows(self) -> bool:
        return any(METRICS[n].needs_fit_rows for n in self.ideas)

    # -- preparation ----------------------------------------------------------------------

    def prepare(self, sae: Any = None) -> "Evaluator":
        """Load the subject and dataset and harvest the eval (and k-means fit) rows.

        The site is ``site`` or, when that was None, the SAE's ``cfg.metadata.hook_name``.
        """
        if self._prepared:
            return self
        import torch

        from mi_ideas.data import Dataset
        from mi_ideas.harvest import harvest_to_cache

        self.subject = _subject(self._subject_arg, self._remote)
        self.dataset = _dataset(self._dataset_arg, self.data_seed)
        site = self._site_arg
        if site is None:
            if sae is None:
                raise UsageError("the evaluator needs site=... (or an SAE whose "
                                 "cfg.metadata.hook_name names it).")
            from mi_ideas.dictionaries import site_of

            site = site_of(sae)
        self.site = self.subject.site(site).name

        # how many rows each text gives, until the eval (and fit) sets are covered
        texts = self.dataset.texts
        want_fit = self.n_kmeans_fit_tokens if self.needs_fit_rows else 0
        counts: list[int] = []
        for start in range(0, len(texts), 64):
            b = self.subject.tokenize(texts[start:start + 64], prepend_bos=self.prepend_bos,
                                      max_length=self.max_length)
            counts += [int(c) for c in row_mask(b, self.positions, skip_bos=self.skip_bos,
                                                 prepend_bos=self.prepend_bos).sum(1)]
            if sum(counts) >= self.n_eval_tokens + want_fit:
                break
        cum, n_eval_texts = 0, len(counts)
        for i, c in enumerate(counts):
            cum += c
            if cum >= self.n_eval_tokens:
                n_eval_texts = i + 1
                break
        n_fit_rows = sum(counts[n_eval_texts:])
        if want_fit and n_fit_rows == 0:
            raise UsageError(
                f"the evaluation dataset {self.dataset.spec!r} has no texts beyond the "
                f"{n_eval_texts} that hold the {self.n_eval_tokens} eval tokens, so the "
                f"kmeans-baseline has nothing held out to fit on. Give a larger dataset or "
                f"a smaller n_eval_tokens.")
        n_texts = len(counts) if want_fit else n_eval_texts
        subset = Dataset(f"{self.dataset.spec}[:{n_texts}]", list(texts[:n_texts]))
        self.activations = harvest_to_cache(
            self.subject, subset, [self.site], positions=self.positions,
            batch_size=self.batch_size, max_length=self.max_length,
            prepend_bos=self.prepend_bos, skip_bos=self.skip_bos, budget_mb=self.budget_mb)
        x = self.activations.load(self.site).float()
        docs = self.activations.load("doc")
        n_eval_rows = int((docs < n_eval_texts).sum())
        self.x_eval = x[:n_eval_rows]
        self.x_fit = x[n_eval_rows:n_eval_rows + want_fit]
        self.eval_texts = list(texts[:n_eval_texts])
        per_doc = torch.bincount(docs[:n_eval_rows].long(), minlength=n_eval_texts)
        self._row_starts = [0, *torch.cumsum(per_doc, 0).tolist()]
        if len(self.x_eval) < 2:
            raise UsageError(f"the evaluation dataset {self.dataset.spec!r} gives fewer "
                             f"than 2 rows at {self.site}; use longer or more texts.")
        self._prepared = True
        return self

    def eval_batches(self) -> list[EvalBatch]:
        """The eval texts in batches of ``batch_size``, each with its splice mask."""
        if self._batches is None:
            out = []
            for start in range(0, len(self.eval_texts), self.batch_size):
                stop = min(start + self.batch_size, len(self.eval_texts))
                batch = self.subject.tokenize(self.eval_texts[start:stop],
                                              prepend_bos=self.prepend_bos,
                                              max_length=self.max_length)
                mask = row_mask(batch, self.positions, skip_bos=self.skip_bos,
                                prepend_bos=self.prepend_bos)
                rows = slice(self._row_starts[start], self._row_starts[stop])
                if int(mask.sum()) != rows.stop - rows.start:  # pragma: no cover - invariant
                    raise RuntimeError("eval batch rows do not match the harvest")
                out.append(EvalBatch(batch, mask, rows))
            self._batches = out
        return self._batches

    # -- the call ----------------------------------------------------------------------

    def __call__(self, sae: Any, data_provider: Any = None,
                 activation_scaler: Any = None) -> dict[str, float]:
        import torch

        d_out = getattr(sae.cfg, "d_out", None)
        if "Transcoder" in type(sae).__name__ or (d_out is not None and d_out != sae.cfg.d_in):
            raise UsageError(
                f"the evaluator scores dictionaries that reconstruct their input; a "
                f"{type(sae).__name__} maps one site to another, which its metrics do not cover.")
        self.prepare(sae)
        ctx = EvalContext(self, sae, data_provider, activation_scaler)
        out: dict[str, float] = {}
        with torch.no_grad():
            for name in self.ideas:
                ctx.metric = name
                for key, value in METRICS[name].fn(ctx).items():
                    out[self.prefix + key] = float(value)
        self.history.append(dict(out))
        return out

    # -- cached pieces the built-in metrics use ----------------------------------------

    def kmeans(self, k: int) -> KMeansBaseline:
        """The k-means baseline with ``k`` centroids, fitted once on ``x_fit`` and cached
        (in memory, and under ``$MI_IDEAS_CACHE/kmeans``)."""
        from safetensors.torch import load_file, save_file

        from mi_ideas.harvest import cache_root

        cache = self._state.setdefault("__kmeans__", {})
        if k in cache:
            return cache[k]
        key = hashlib.sha256(json.dumps({
            "harvest": self.activations.path.name, "rows": [len(self.x_eval), len(self.x_fit)],
            "k": k, "seed": self.seed, "n_init": self.kmeans_n_init, "v": 1,
        }, sort_keys=True).encode()).hexdigest()[:20]
        path = cache_root() / "kmeans" / f"{key}.safetensors"
        if path.is_file():
            km = KMeansBaseline(load_file(str(path))["centroids"])
        else:
            km = KMeansBaseline.fit(self.x_fit, k, seed=self.seed, n_init=self.kmeans_n_init)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({"centroids": km.centroids.contiguous()}, str(tmp))
            tmp.replace(path)
        cache[k] = km
        return km

    def reference_logprobs(self) -> list["torch.Tensor"]:
        """The clean model's next-token log-probabilities at the KL positions, one tensor
        per eval batch (computed once; reads the ``logits`` site at those positions only)."""
        cache = self._state.setdefault("__reference__", {})
        if "ref" not in cache:
            refs = []
            for eb in self.eval_batches():
                pos = "last" if self.kl_positions == "last" else eb.mask
                logits = self.subject.forward(eb.batch, read=["logits"], positions=pos)
                refs.append(logits.activations["logits"].float().log_softmax(-1))
            cache["ref"] = refs
        return cache["ref"]

    def spliced_kl(self, values: "torch.Tensor") -> float:
        """Mean KL(clean ‖ spliced) at the KL positions with ``values`` written over the
        site at the eval rows: ``(n_eval, d)`` (one row per eval row) or ``(d,)``."""
        kl = self.spliced_kl_values(values)
        return float(kl.sum()) / max(kl.numel(), 1)

    def spliced_kl_values(self, values: "torch.Tensor") -> "torch.Tensor":
        """Every KL(clean ‖ spliced) value at the KL positions (one per text with
        ``kl_positions="last"``), as :meth:`spliced_kl` averages them."""
        import torch

        from mi_ideas.subject import Intervention, StatsRequest

        out_kl = []
        for eb, ref in zip(self.eval_batches(), self.reference_logprobs()):
            v = values if values.ndim == 1 else values[eb.rows]
            pos = "last" if self.kl_positions == "last" else eb.mask
            out = self.subject.forward(
                eb.batch, interventions=[Intervention(self.site, "replace", v, eb.mask)],
                stats=StatsRequest(positions=pos, kl_reference=ref))
            out_kl.append(out.stats["kl"].double().reshape(-1))
        return torch.cat(out_kl)


def evaluator(ideas: Sequence[str] | str | None = None, **kwargs: Any) -> Evaluator:
    """An :class:`Evaluator` for ``SAETrainer(..., evaluator=...)``.

    ``ideas``: metric names from :data:`METRICS` (default :data:`DEFAULT_IDEAS`:
    ``explained-variance``, ``kmeans-baseline``, ``sparsity``, ``spliced-kl``); an unknown
    name is a :class:`~mi_ideas.errors.UsageError` listing the known ones. Keyword
    arguments as :class:`Evaluator`: ``subject``, ``dataset`` (held out), ``site``,
    ``n_eval_tokens``, ``n_kmeans_fit_tokens``, ``kmeans_max_k``, ``kl_positions``
    ("last" or "all"), ``positions`` / ``max_length`` / ``skip_bos`` (as the provider's),
    ``batch_size``, ``prefix``, ``remote``, ``options`` (for registered metrics).
    """
    return Evaluator(ideas, **kwargs)


# -- built-in metrics -------------------------------------------------------------------------


@register_metric(
    "explained-variance", keys=("explained_variance",),
    description="1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² of the SAE on the held-out eval set")
def _explained_variance(ctx: EvalContext) -> dict[str, float]:
    return {"explained_variance": explained_variance(ctx.x, ctx.x_hat)}


@register_metric(
    "kmeans-baseline", keys=("kmeans_explained_variance", "kmeans_k"), needs_fit_rows=True,
    description="the same explained variance for nearest-centroid k-means with k = d_sae "
                "(capped), fitted once on other held-out rows")
def _kmeans_baseline(ctx: EvalContext) -> dict[str, float]:
    ev = ctx.evaluator
    k = min(int(ctx.sae.cfg.d_sae), ev.kmeans_max_k, len(ctx.x_fit))
    km = ev.kmeans(k)
    return {"kmeans_explained_variance": km.explained_variance(ctx.x), "kmeans_k": float(k)}


@register_metric(
    "sparsity", keys=("l0", "dead_latents_fraction"),
    description="mean non-zero latents per eval token (l0) and the fraction of latents "
                "zero on every eval token")
def _sparsity(ctx: EvalContext) -> dict[str, float]:
    active = ctx.feature_acts != 0
    return {"l0": float(active.sum(-1).float().mean()),
            "dead_latents_fraction": float((~active.any(0)).float().mean())}


@register_metric(
    "spliced-kl", keys=("spliced_kl", "mean_ablation_kl", "spliced_kl_fraction"),
    needs_model=True,
    description="next-token KL(clean ‖ spliced) in nats with the SAE reconstruction "
                "written over the site, next to the KL of mean ablation")
def _spliced_kl(ctx: EvalContext) -> dict[str, float]:
    ev = ctx.evaluator
    state = ctx.state
    if "mean_ablation_kl" not in state:
        state["mean_ablation_kl"] = ev.spliced_kl(ctx.x.mean(0))
    kl = ev.spliced_kl(ctx.x_hat)
    ablation = state["mean_ablation_kl"]
    return {"spliced_kl": kl, "mean_ablation_kl": ablation,
            "spliced_kl_fraction": kl / ablation if ablation > 0 else float("nan")}


@register_metric(
    "plateau-preservation",
    keys=("plateau_in_fraction", "plateau_in_fraction_isotropic", "plateau_kl_ratio"),
    needs_model=True,
    description="does the reconstruction stay in x's plateau? the fraction of eval texts "
                "whose spliced KL stays below options['plateau_kl_threshold'] (default 0.1 "
                "nats), next to the same for isotropic errors of the same length per row, "
                "and the ratio of their median KLs")
def _plateau_preservation(ctx: EvalContext) -> dict[str, float]:
    import torch

    threshold = float(ctx.options.get("plateau_kl_threshold", 0.1))
    state = ctx.state
    if "directions" not in state:  # one fixed set of random directions across calls
        g = torch.Generator().manual_seed(int(ctx.options.get("seed", 0)))
        d = torch.randn(ctx.x.shape, generator=g)
        state["directions"] = d / d.norm(dim=-1, keepdim=True)
    err = (ctx.x - ctx.x_hat).norm(dim=-1, keepdim=True)
    iso = ctx.x + err * state["directions"]
    kl_hat = ctx.evaluator.spliced_kl_values(ctx.x_hat)
    kl_iso = ctx.evaluator.spliced_kl_values(iso)
    median_iso = float(kl_iso.median())
    return {
        "plateau_in_fraction": float((kl_hat < threshold).double().mean()),
        "plateau_in_fraction_isotropic": float((kl_iso < threshold).double().mean()),
        "plateau_kl_ratio": float(kl_hat.median()) / median_iso if median_iso > 0 else float("nan"),
    }
