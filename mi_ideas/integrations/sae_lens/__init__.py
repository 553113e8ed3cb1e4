"""Train SAELens dictionaries on any subject's activations, with mi-ideas metrics.

SAELens's ``SAETrainer(cfg, sae, data_provider, evaluator)`` needs two things this
package supplies:

:func:`activation_provider` (:mod:`.provider`)
    a ``DataProvider`` (an iterator of ``(batch_size, d_model)`` float32 tensors) streamed
    from the harvest cache (:func:`mi_ideas.harvest.harvest_to_cache`). The first use runs the
    dataset through the subject -- locally, or through NDIF for a remote subject (one
    request per harvest batch) -- and every later epoch, run or provider reads the cache.
    :func:`split_dataset` holds texts out for the evaluator.
:func:`evaluator` (:mod:`.evaluation`)
    an ``Evaluator``, ``(sae, data_provider, activation_scaler) -> dict[str, float]``,
    which SAELens calls every ``wandb_log_frequency * eval_every_n_wandb_logs`` steps
    when ``cfg.logger.log_to_wandb`` is on, and logs with ``wandb.log``. Its metrics are
    picked by name (``metrics=[...]``) from :data:`METRICS`; other code adds metrics with
    :func:`register_metric`. The built-in ones (explained variance, a k-means baseline
    from :mod:`.kmeans`, sparsity, spliced KL, plateau preservation) are defined in
    :mod:`.metrics`, which this package imports to register them.

Everything runs on any subject: ``subject`` and ``dataset`` may be specs
(``"hf:DIR"``, ``"zoo:stories:200"``) or objects.

``explained_variance`` and ``row_mask`` are :mod:`mi_ideas.metrics`'s,
re-exported here for compatibility; ``TranscoderTrainingSAE`` / ``fit_transcoder`` (a
transcoder trained with SAELens's ``SAETrainer``) are :mod:`mi_ideas.training.transcoder`'s.
"""

from __future__ import annotations

# importing .metrics registers the built-in metrics in METRICS
from mi_ideas.integrations.sae_lens import metrics as _builtin_metrics  # noqa: F401
from mi_ideas.integrations.sae_lens.evaluation import (
    DEFAULT_IDEAS,
    DEFAULT_METRICS,
    METRICS,
    EvalBatch,
    EvalContext,
    Evaluator,
    Metric,
    evaluator,
    register_metric,
)
from mi_ideas.integrations.sae_lens.kmeans import KMeansBaseline
from mi_ideas.integrations.sae_lens.provider import (
    ActivationProvider,
    activation_provider,
    split_dataset,
)
from mi_ideas.metrics import explained_variance, row_mask
from mi_ideas.training.transcoder import TranscoderTrainingSAE, fit_transcoder

__all__ = [
    "ActivationProvider",
    "DEFAULT_IDEAS",
    "DEFAULT_METRICS",
    "EvalBatch",
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
    "TranscoderTrainingSAE",
    "fit_transcoder",
]
