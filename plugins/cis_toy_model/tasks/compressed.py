"""Compressed computation (Braun et al. 2025, arXiv 2501.14926) and its control
(Bhagat, Molas-Medina, Giglemiani & Heimersheim 2025, "Compressed computation is
(probably) not computation in superposition").

n features x_i ~ U[-1, 1] with probability p (else 0) are written into a residual
stream r = x W_E (W_E: fixed random n x d_embed, unit-norm rows); one MLP of h ReLU
neurons reads and writes the residual; the output is read with W_E^T:

    y_hat = (r + ReLU(r W_in + b) W_out) W_E^T = x (I + M) + MLP(x),

where M = W_E W_E^T - I is the embedding's mixing matrix. The residual path therefore
hands every output a small mixture of the other features. Labels:

    y = x (I + M) + ReLU(x) - sigma * x M_hat,   M_hat = M / std(offdiag M),

so the MLP's job is ReLU(x) - sigma M_hat x. sigma = std(offdiag M) (about
1/sqrt(d_embed)) gives the original labels y = x + ReLU(x); sigma = 0 gives clean labels
(the MLP only has to compute the ReLUs). Bhagat et al. found that the trained model beats
the naive baseline (h neurons compute ReLU of h features exactly, the rest get only the
residual path) only because of the mixing term: the ratio is about 1 with clean labels.
Both models are trained here, from the same initialisation and on the same batches.
"""

from __future__ import annotations

import math

import torch

from ..config import CisConfig
from ..result import CisResult, make_result
from .common import child_seed, train_adam

DEFINITIONS = {
    "mse_clean": "Trained model, clean labels (sigma = 0): mean over held-out samples and "
    "features of (y_hat - y)^2.",
    "naive_mse_clean": "Naive baseline (neuron k computes ReLU(x_k) for the first "
    "n_neurons features, the rest get only the residual path), clean labels: same MSE.",
    "ratio_clean": "mse_clean / naive_mse_clean: the control; about 1 means no gain over "
    "one-neuron-per-feature, i.e. no computation in superposition.",
    "mse_mixing": "Trained model, labels with the mixing term at scale sigma: same MSE.",
    "naive_mse_mixing": "Naive baseline on the same mixed labels: same MSE.",
    "ratio_mixing": "mse_mixing / naive_mse_mixing (same labels for both).",
    "ratio_mixing_vs_naive_clean": "mse_mixing / naive_mse_clean: the trained model on "
    "the noisier mixed task against the naive model on the clean task (below 1 means the "
    "mixing term lowers the achievable loss).",
    "mixing_scale": "sigma: off-diagonal std of the mixing term in the labels.",
    "natural_mixing_scale": "Off-diagonal std of W_E W_E^T - I for this embedding (sigma "
    "at which the labels are exactly x + ReLU(x), as in Braun et al.).",
    "naive_mse_clean_analytic": "p (n - h) / (6 n): the naive baseline's expected clean "
    "MSE (E[ReLU(u)^2] = 1/6 for u ~ U[-1, 1]), a check of the evaluation.",
    "mixing_subspace_frac_mixing": "Fraction of the squared norm of the trained (mixed-"
    "label) MLP's effective input directions W_E W_in lying in the span of the top "
    "n_neurons eigenvectors of the label mixing matrix -M_hat (chance: n_neurons / n).",
    "mixing_subspace_frac_clean": "The same fraction for the clean-label model (control).",
}


def embedding(cfg: CisConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """W_E (unit-norm rows), the normalised mixing matrix M_hat and its natural scale."""
    n = cfg.cc_n_features
    w_e = torch.randn(n, cfg.cc_d_embed, generator=gen)
    w_e = w_e / w_e.norm(dim=1, keepdim=True)
    mix = w_e @ w_e.T - torch.eye(n)
    natural = float(mix[~torch.eye(n, dtype=torch.bool)].std())
    return w_e, mix / natural, natural


def sample(n_samples: int, cfg: CisConfig, gen: torch.Generator) -> torch.Tensor:
    on = torch.rand(n_samples, cfg.cc_n_features, generator=gen) < cfg.cc_feature_prob
    return on * (2 * torch.rand(n_samples, cfg.cc_n_features, generator=gen) - 1)


def train(cfg: CisConfig, w_e, m_hat, sigma: float, init_seed: int, data_seed: int, ctx):
    """Train the residual MLP for labels with mixing scale sigma; return a predict fn."""
    d, h = cfg.cc_d_embed, cfg.cc_n_neurons
    g_init = torch.Generator().manual_seed(init_seed)
    params = {
        "W_in": (torch.randn(d, h, generator=g_init) / math.sqrt(d)).requires_grad_(True),
        "b_in": torch.zeros(h, requires_grad=True),
        "W_out": (torch.randn(h, d, generator=g_init) / math.sqrt(h)).requires_grad_(True),
    }
    resid = w_e @ w_e.T  # x -> x W_E W_E^T, the residual path read out

    def predict(x: torch.Tensor) -> torch.Tensor:
        # Same function (and gradients) as ((x W_E) + MLP(x W_E)) W_E^T, associated so
        # the per-sample cost is n*h rather than n*d_embed.
        w_in_eff = w_e @ params["W_in"]
        w_out_eff = params["W_out"] @ w_e.T
        return x @ resid + torch.relu(x @ w_in_eff + params["b_in"]) @ w_out_eff

    g_data = torch.Generator().manual_seed(data_seed)

    def loss_fn() -> torch.Tensor:
        x = sample(cfg.cc_batch_size, cfg, g_data)
        return ((predict(x) - labels(x, resid, m_hat, sigma)) ** 2).mean()

    curve = train_adam(list(params.values()), loss_fn, steps=cfg.cc_steps, lr=cfg.cc_lr,
                       ctx=ctx, desc=f"compressed computation (sigma={sigma:g})")
    return predict, {k: v.detach() for k, v in params.items()}, curve


def labels(x, resid, m_hat, sigma: float) -> torch.Tensor:
    return x @ resid + torch.relu(x) - sigma * (x @ m_hat)


def naive(x, resid, h: int) -> torch.Tensor:
    out = x @ resid
    out[:, :h] += torch.relu(x[:, :h])
    return out


def subspace_fraction(w_in_eff: torch.Tensor, m_hat: torch.Tensor, h: int) -> float:
    """Share of ||W_in_eff||^2 in the top-h eigenvectors of -M_hat (the label mixing)."""
    _, vecs = torch.linalg.eigh(-m_hat)  # ascending eigenvalues
    top = vecs[:, -h:]
    return float((top.T @ w_in_eff).pow(2).sum() / w_in_eff.pow(2).sum())


def run(ctx, cfg: CisConfig) -> CisResult:
    from .. import figures

    gen = ctx.generator
    n, h, p = cfg.cc_n_features, cfg.cc_n_neurons, cfg.cc_feature_prob
    w_e, m_hat, natural = embedding(cfg, gen)
    resid = w_e @ w_e.T
    init_seed, data_seed = child_seed(gen), child_seed(gen)
    x_eval = sample(cfg.cc_eval_samples, cfg, torch.Generator().manual_seed(child_seed(gen)))
    ctx.log(f"compressed computation: {n} features, {h} neurons, d_embed {cfg.cc_d_embed}, "
            f"natural mixing scale {natural:.4f}, sigma {cfg.cc_mixing_scale}")

    metrics: dict[str, float] = {}
    details: dict = {"naive_features": list(range(h))}
    per_feature: dict[str, dict[str, list[float]]] = {}
    weights: dict[str, torch.Tensor] = {"W_E": w_e, "M_hat": m_hat}
    for tag, sigma in (("clean", 0.0), ("mixing", cfg.cc_mixing_scale)):
        predict, params, curve = train(cfg, w_e, m_hat, sigma, init_seed, data_seed, ctx)
        with torch.no_grad():
            y = labels(x_eval, resid, m_hat, sigma)
            err_trained = (predict(x_eval) - y).pow(2).mean(0)
            err_naive = (naive(x_eval, resid, h) - y).pow(2).mean(0)
        metrics[f"mse_{tag}"] = float(err_trained.mean())
        metrics[f"naive_mse_{tag}"] = float(err_naive.mean())
        metrics[f"ratio_{tag}"] = metrics[f"mse_{tag}"] / metrics[f"naive_mse_{tag}"]
        metrics[f"mixing_subspace_frac_{tag}"] = subspace_fraction(w_e @ params["W_in"], m_hat, h)
        per_feature[tag] = {"trained": err_trained.tolist(), "naive": err_naive.tolist()}
        details[f"loss_curve_{tag}"] = curve
        weights.update({f"{k}_{tag}": v for k, v in params.items()})
    metrics["ratio_mixing_vs_naive_clean"] = metrics["mse_mixing"] / metrics["naive_mse_clean"]
    metrics["mixing_scale"] = cfg.cc_mixing_scale
    metrics["natural_mixing_scale"] = natural
    metrics["naive_mse_clean_analytic"] = p * (n - h) / (6 * n)
    details["per_feature_mse"] = per_feature

    meta = {"task": "compressed-computation", "mixing_scale": str(cfg.cc_mixing_scale),
            "seed": str(ctx.seed),
            "forward": "y_hat = (x W_E + ReLU(x W_E W_in + b_in) W_out) W_E^T"}
    ctx.artifacts.save_tensors("cc_models", weights, meta)
    ctx.artifacts.save_json("cc_circuits", {
        "description": "Ground truth: output i should equal x_i + ReLU(x_i) plus the "
        "residual mixing (x M)_i, minus sigma (x M_hat)_i for the mixed-label model; "
        "the naive baseline gives neuron k to feature k for k < n_neurons.",
        "targets": "y = x (W_E W_E^T) + ReLU(x) - sigma * x M_hat",
        "mixing_scale_by_model": {"clean": 0.0, "mixing": cfg.cc_mixing_scale},
        "naive_features": list(range(h)),
    })
    ctx.artifacts.save_figure("cc_per_feature_mse", figures.cc_per_feature(per_feature, metrics, cfg))
    return make_result("compressed-computation", metrics, DEFINITIONS, details)
