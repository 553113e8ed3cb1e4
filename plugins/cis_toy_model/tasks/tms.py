"""Toy model of superposition (Elhage et al. 2022, "Toy Models of Superposition").

n features x_i ~ U[0, 1] with probability p (else 0) are compressed into m < n
dimensions and reconstructed as x_hat = ReLU(W^T W x + b), minimising the
importance-weighted MSE sum_i I_i (x_i - x_hat_i)^2. With sparse features (small p) the
columns W_i store more features than dimensions; for 5 features in 2 dimensions they
form a regular pentagon. The control is the same model trained on dense features
(p = 1), where superposition does not pay.

Several instances are trained in parallel from different initialisations (as in the
paper) and the lowest-loss one is reported.
"""

from __future__ import annotations

import math

import torch

from ..config import CisConfig
from ..result import CisResult, make_result
from .common import child_seed, train_adam

DEFINITIONS = {
    "loss": "Importance-weighted reconstruction MSE of the reported (lowest-loss) "
    "instance, mean over held-out samples and features.",
    "n_represented": "Features whose column W_i has norm > 0.5.",
    "norm_min": "Smallest column norm ||W_i||.",
    "norm_max": "Largest column norm ||W_i||.",
    "dims_per_feature": "m / ||W||_F^2 (Elhage et al.'s dimensionality): 1 for one "
    "feature per dimension, 2/5 for a unit-norm pentagon in 2D.",
    "max_cos": "Largest cosine between two distinct columns (positive interference, "
    "which the ReLU cannot filter; cos 72 deg = 0.309 for a pentagon).",
    "gap_max_dev_deg": "2D only: the columns' angles sorted around the circle; the "
    "largest |gap - 360/n| between consecutive angles, in degrees (0 for a regular "
    "n-gon).",
    "gap_min_deg": "2D only: smallest angular gap between consecutive columns, degrees.",
    "gap_max_deg": "2D only: largest angular gap between consecutive columns, degrees.",
    "instances_regular": "2D only: fraction of trained instances whose gap_max_dev_deg "
    "is below 10 degrees with every column norm > 0.5.",
}


def sample(inst: int, n_samples: int, n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    on = torch.rand(inst, n_samples, n, generator=gen) < p
    return on * torch.rand(inst, n_samples, n, generator=gen)


def reconstruct(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    hidden = torch.einsum("ibn,imn->ibm", x, w)
    return torch.relu(torch.einsum("ibm,imn->ibn", hidden, w) + b[:, None, :])


def train(cfg: CisConfig, p: float, init_seed: int, data_seed: int, ctx, desc: str):
    """Train tms_n_instances models with feature probability p; return W, b, losses."""
    inst, n, m = cfg.tms_n_instances, cfg.tms_n_features, cfg.tms_n_dims
    g_init = torch.Generator().manual_seed(init_seed)
    std = math.sqrt(2.0 / (n + m))  # Xavier normal, as in the paper's code
    w = (torch.randn(inst, m, n, generator=g_init) * std).requires_grad_(True)
    b = torch.zeros(inst, n, requires_grad=True)
    importance = cfg.tms_importance_decay ** torch.arange(n, dtype=torch.float32)
    g_data = torch.Generator().manual_seed(data_seed)

    def loss_fn() -> torch.Tensor:
        x = sample(inst, cfg.tms_batch_size, n, p, g_data)
        return (importance * (x - reconstruct(x, w, b)) ** 2).mean((1, 2)).sum()

    curve = train_adam([w, b], loss_fn, steps=cfg.tms_steps, lr=cfg.tms_lr, ctx=ctx, desc=desc)
    with torch.no_grad():
        x = sample(inst, 20_000, n, p, torch.Generator().manual_seed(data_seed + 1))
        losses = (importance * (x - reconstruct(x, w, b)) ** 2).mean((1, 2))
    return w.detach(), b.detach(), losses, curve


def geometry(w: torch.Tensor) -> dict[str, float]:
    """Metrics of one instance's columns W (m x n)."""
    n = w.shape[1]
    norms = w.norm(dim=0)
    unit = w / norms.clamp(min=1e-12)
    cos = unit.T @ unit
    off = cos[~torch.eye(n, dtype=torch.bool)]
    out = {
        "n_represented": float((norms > 0.5).sum()),
        "norm_min": float(norms.min()),
        "norm_max": float(norms.max()),
        "dims_per_feature": float(w.shape[0] / w.pow(2).sum()),
        "max_cos": float(off.max()),
    }
    if w.shape[0] == 2:
        gaps = angular_gaps(w)
        out["gap_max_dev_deg"] = float((gaps - 360.0 / n).abs().max())
        out["gap_min_deg"] = float(gaps.min())
        out["gap_max_deg"] = float(gaps.max())
    return out


def angular_gaps(w: torch.Tensor) -> torch.Tensor:
    """Gaps (degrees) between consecutive column angles, sorted around the circle."""
    ang = torch.sort(torch.atan2(w[1], w[0])).values
    return torch.diff(torch.cat([ang, ang[:1] + 2 * math.pi])) * 180.0 / math.pi


def run(ctx, cfg: CisConfig) -> CisResult:
    from .. import figures

    gen = ctx.generator
    init_seed, data_seed = child_seed(gen), child_seed(gen)
    metrics: dict[str, float] = {}
    details: dict = {}
    best: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    tensors: dict[str, torch.Tensor] = {}
    for tag, p in (("sparse", cfg.tms_feature_prob), ("dense", 1.0)):
        w, b, losses, curve = train(cfg, p, init_seed, data_seed, ctx, desc=f"tms {tag}")
        k = int(losses.argmin())
        geo = geometry(w[k])
        prefix = "" if tag == "sparse" else "dense_"
        metrics[f"{prefix}loss"] = float(losses[k])
        metrics.update({f"{prefix}{key}": v for key, v in geo.items()})
        if cfg.tms_n_dims == 2:
            regular = [
                g["gap_max_dev_deg"] < 10 and g["norm_min"] > 0.5 for g in map(geometry, w)
            ]
            metrics[f"{prefix}instances_regular"] = sum(regular) / len(regular)
            details[f"{tag}_gaps_deg"] = angular_gaps(w[k]).tolist()
        details[f"{tag}_instance_losses"] = losses.tolist()
        details[f"{tag}_best_instance"] = k
        details[f"{tag}_loss_curve"] = curve
        details[f"{tag}_W"] = w[k].tolist()
        details[f"{tag}_b"] = b[k].tolist()
        best[tag] = (w[k], b[k])
        tensors.update({f"W_{tag}": w[k].clone(), f"b_{tag}": b[k].clone(),
                        f"W_all_{tag}": w, f"b_all_{tag}": b})

    importance = cfg.tms_importance_decay ** torch.arange(cfg.tms_n_features, dtype=torch.float32)
    tensors["importance"] = importance
    ctx.artifacts.save_tensors("tms_model", tensors, {
        "task": "tms", "forward": "x_hat = ReLU(W^T W x + b)", "seed": str(ctx.seed),
        "feature_prob_sparse": str(cfg.tms_feature_prob), "feature_prob_dense": "1.0",
    })
    ctx.artifacts.save_json("tms_circuits", {
        "description": "Ground truth: column i of W is feature i's direction; feature i "
        "has importance decay**i and is non-zero with probability feature_prob.",
        "n_features": cfg.tms_n_features,
        "n_dims": cfg.tms_n_dims,
        "importance": importance.tolist(),
        "feature_prob": {"sparse": cfg.tms_feature_prob, "dense": 1.0},
    })
    ctx.artifacts.save_figure("tms_columns", figures.tms_columns(best, metrics, cfg))
    defs = {k: DEFINITIONS[k.removeprefix("dense_")] + (" Dense control (p = 1)."
            if k.startswith("dense_") else "") for k in metrics}
    return make_result("tms", metrics, defs, details)
