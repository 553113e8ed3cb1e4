"""The SAELens ``Evaluator``: the metric registry (:class:`Metric`, :data:`METRICS`,
:func:`register_metric`), what a metric sees (:class:`EvalContext`, :class:`EvalBatch`),
and :class:`Evaluator` / :func:`evaluator`, which prepare a held-out eval set once and
compute the metrics named in ``metrics=`` at every call.

The built-in metrics live in :mod:`mi_ideas.integrations.sae_lens.metrics`; importing
the package registers them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from mi_ideas.errors import UsageError
from mi_ideas.integrations.sae_lens._common import _check_positions, _dataset, _subject
from mi_ideas.integrations.sae_lens.kmeans import KMeansBaseline
from mi_ideas.metrics import row_mask

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_IDEAS",
    "DEFAULT_METRICS",
    "METRICS",
    "EvalBatch",
    "EvalContext",
    "Evaluator",
    "Metric",
    "evaluator",
    "register_metric",
]


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

#: the metrics an evaluator computes when ``metrics=`` is not given.
DEFAULT_METRICS = ("explained-variance", "kmeans-baseline", "sparsity", "spliced-kl")
#: the old name of :data:`DEFAULT_METRICS`, kept for compatibility.
DEFAULT_IDEAS = DEFAULT_METRICS


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


def _metrics_arg(metrics: Sequence[str] | str | None, ideas: Sequence[str] | str | None,
                 stacklevel: int) -> Sequence[str] | str | None:
    """``metrics``, or the deprecated ``ideas=`` spelling of it (warning at the caller
    ``stacklevel`` frames up from the function that calls this)."""
    if ideas is None:
        return metrics
    if metrics is not None:
        raise UsageError("the evaluator was given both metrics=... and ideas=...; pass "
                         "metrics=... only (ideas=... is its deprecated old name).")
    warnings.warn("the evaluator's ideas=... is deprecated; use metrics=... (the names of "
                  "the metrics to compute) instead.", DeprecationWarning,
                  stacklevel=stacklevel + 1)
    return ideas


def _resolve_metrics(metrics: Sequence[str] | str | None) -> list[str]:
    if metrics is None:
        return list(DEFAULT_METRICS)
    if isinstance(metrics, str):
        metrics = [metrics]
    names = list(dict.fromkeys(metrics))
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
    returns ``{prefix + key: float}`` for the metrics named in ``metrics``.

    The eval set is prepared once (at the first call, or by :meth:`prepare`): the first
    texts of ``dataset`` holding at least ``n_eval_tokens`` rows (whole texts; rows as
    :func:`~mi_ideas.integrations.sae_lens.provider.activation_provider` harvests them:
    ``positions``, ``skip_bos``, ``max_length``), harvested through the cache. ``dataset``
    should be held out from the training data
    (:func:`~mi_ideas.integrations.sae_lens.provider.split_dataset`). When
    ``kmeans-baseline`` is asked for, the following texts give ``n_kmeans_fit_tokens``
    more rows, disjoint from the eval set, to fit k-means on; a dataset too short for them
    is an error. ``data_provider`` is not read: training batches are never consumed by
    evaluation. ``activation_scaler`` may be None (identity), as after ``fit()`` has
    folded it into the SAE. Every call's result is appended to ``history``. ``ideas=`` is
    the deprecated old name of ``metrics=``.
    """

    def __init__(
        self,
        metrics: Sequence[str] | str | None = None,
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
        ideas: Sequence[str] | str | None = None,
    ):
        #: the names of the metrics every call computes, in order
        self.metrics = _resolve_metrics(_metrics_arg(metrics, ideas, stacklevel=2))
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
        return f"Evaluator({self.metrics}, site={self.site or self._site_arg!r})"

    @property
    def ideas(self) -> list[str]:
        """Deprecated: the old name of :attr:`metrics`."""
        warnings.warn("Evaluator.ideas is deprecated; use Evaluator.metrics instead.",
                      DeprecationWarning, stacklevel=2)
        return self.metrics

    @property
    def needs_fit_rows(self) -> bool:
        return any(METRICS[n].needs_fit_rows for n in self.metrics)

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
            for name in self.metrics:
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


def evaluator(metrics: Sequence[str] | str | None = None, *,
              ideas: Sequence[str] | str | None = None, **kwargs: Any) -> Evaluator:
    """An :class:`Evaluator` for ``SAETrainer(..., evaluator=...)``.

    ``metrics``: metric names from :data:`METRICS` (default :data:`DEFAULT_METRICS`:
    ``explained-variance``, ``kmeans-baseline``, ``sparsity``, ``spliced-kl``); an unknown
    name is a :class:`~mi_ideas.errors.UsageError` listing the known ones. Keyword
    arguments as :class:`Evaluator`: ``subject``, ``dataset`` (held out), ``site``,
    ``n_eval_tokens``, ``n_kmeans_fit_tokens``, ``kmeans_max_k``, ``kl_positions``
    ("last" or "all"), ``positions`` / ``max_length`` / ``skip_bos`` (as the provider's),
    ``batch_size``, ``prefix``, ``remote``, ``options`` (for registered metrics).
    ``ideas=`` is the deprecated old name of ``metrics=`` (a ``DeprecationWarning``;
    passing both is a ``UsageError``).
    """
    return Evaluator(_metrics_arg(metrics, ideas, stacklevel=2), **kwargs)
