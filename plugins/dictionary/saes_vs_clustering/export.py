"""The SAE side of a run as SAEBench-style JSON records (the layout of SAEBench's
``evals/base_eval_output.py``: ``eval_type_id``, ``eval_config``, ``eval_id``,
``datetime_epoch_millis``, ``eval_result_metrics`` in categories, ``eval_result_details``,
``sae_lens_id``, ``sae_lens_release_id``, ``sae_lens_version``, ``sae_cfg_dict``).

The categories and keys follow SAEBench's ``core`` eval (``reconstruction_quality``,
``sparsity``, ``model_performance_preservation``) so the numbers can sit next to
SAEBench's; ``eval_type_id`` names this idea, because the quantities are computed here
(explained variance over all held-out rows at once, in float64).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

EVAL_TYPE_ID = "mi_ideas.saes_vs_clustering"


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def saebench_records(result: Any, saes: dict[str, Any], config: Any, inputs: Any
                     ) -> dict[str, dict[str, Any]]:
    """One record per SAE (``"sae.K"`` trained here, ``"sae_given.K"`` given)."""
    import importlib.metadata as md

    from mi_ideas_plugins.dictionary.common.evaluate import DEFS

    m = result.metrics
    try:
        version = md.version("sae-lens")
    except md.PackageNotFoundError:  # pragma: no cover
        version = None
    out = {}
    now = int(time.time() * 1000)
    eval_config = _jsonable({
        "site": inputs.site, "source": inputs.source, "n_eval_rows": int(m["n_eval_rows"]),
        "n_train_rows": int(m["n_train_rows"]), "context_size": config.max_length,
        "definitions": {"explained_variance": DEFS["ev"], "mse": DEFS["mse"], "l0": DEFS["l0"],
                        "ce_loss_score": DEFS["ce_loss_score"]},
        "config": config.model_dump(),
    })
    for name, sae in saes.items():
        method, k = name.rsplit(".", 1)
        p = f"{method}.{k}"
        metrics: dict[str, dict[str, float]] = {
            "reconstruction_quality": {"explained_variance": m[f"{p}.ev"], "mse": m[f"{p}.mse"]},
            "sparsity": {"l0": m[f"{p}.l0"]},
            "clustering_baselines": {f"{b}_explained_variance": m[f"{b}.{k}.ev"]
                                     for b in ("kmeans", "kmeans_scaled", "pca_kmeans", "random")
                                     if f"{b}.{k}.ev" in m},
        }
        if f"{p}.ce_loss_score" in m:
            metrics["model_performance_preservation"] = {
                "ce_loss_score": m[f"{p}.ce_loss_score"],
                "ce_loss_with_sae": m["ce_clean"] + m[f"{p}.ce_increase"],
                "ce_loss_without_sae": m["ce_clean"],
                "ce_loss_with_ablation": m["ce_zero_ablation"],
            }
        cfg = sae.cfg.to_dict() if hasattr(sae.cfg, "to_dict") else {}
        eval_id = hashlib.sha256(json.dumps([name, eval_config], sort_keys=True).encode()
                                 ).hexdigest()[:16]
        spec = getattr(sae, "_mi_ideas_spec", None)
        out[name] = {
            "eval_type_id": EVAL_TYPE_ID,
            "eval_config": eval_config,
            "eval_id": eval_id,
            "datetime_epoch_millis": now,
            "eval_result_metrics": metrics,
            "eval_result_details": [],
            "sae_lens_id": name,
            "sae_lens_release_id": spec or ("trained-by-saes-vs-clustering"
                                            if method == "sae" else "given"),
            "sae_lens_version": version,
            "sae_cfg_dict": _jsonable(cfg),
        }
    return out
