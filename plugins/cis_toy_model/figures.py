"""Figures of the three tasks (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LABELS = {"mlp": "trained MLP", "control": "linear control (no ReLU)",
          "construction": "Bernoulli construction"}
COLORS = {"mlp": "tab:blue", "control": "tab:red", "construction": "tab:green"}


def uand_per_gate(per_gate: dict, metrics: dict, cfg):
    """Histograms of per-gate recall and false-positive rate for the three models."""
    fig, (ax_r, ax_f) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0, 1, 21)
    for name, scores in per_gate.items():
        rec = scores["recall"].numpy()
        rec = rec[~np.isnan(rec)]
        label = f"{LABELS[name]} (mean {metrics[f'{name}_recall_mean']:.3f})"
        ax_r.hist(rec, bins=bins, alpha=0.5, color=COLORS[name], label=label)
        fpr = scores["fpr"].numpy()
        label = f"{LABELS[name]} (mean {metrics[f'{name}_fpr_mean']:.4f})"
        ax_f.hist(fpr, bins=np.linspace(0, max(0.05, float(fpr.max()) * 1.05), 21),
                  alpha=0.5, color=COLORS[name], label=label)
    ax_r.set(xlabel="recall per gate", ylabel="gates",
             title=f"U-AND: {int(metrics['n_gates'])} gates, {cfg.uand_n_neurons} neurons")
    ax_f.set(xlabel="false-positive rate per gate", ylabel="gates",
             title=f"{cfg.uand_n_features} features, {cfg.uand_n_active} active ({cfg.uand_input})")
    ax_r.legend(fontsize=8)
    ax_f.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cc_per_feature(per_feature: dict, metrics: dict, cfg):
    """Per-feature MSE of the trained model and the naive baseline, clean vs mixed labels."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    titles = {"clean": "clean labels (sigma = 0)",
              "mixing": f"mixed labels (sigma = {cfg.cc_mixing_scale:g})"}
    for ax, (tag, errs) in zip(axes, per_feature.items()):
        idx = np.arange(len(errs["trained"]))
        ax.plot(idx, errs["naive"], ".", color="tab:gray", label="naive baseline")
        ax.plot(idx, errs["trained"], ".", color="tab:blue", label="trained")
        ax.axvline(cfg.cc_n_neurons - 0.5, color="k", lw=0.5, ls=":")
        ax.set(xlabel="feature (left of dotted line: naive gives it a neuron)",
               title=f"{titles[tag]}: trained/naive = {metrics[f'ratio_{tag}']:.3f}")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("MSE per feature")
    fig.suptitle(f"Compressed computation: {cfg.cc_n_features} ReLUs, {cfg.cc_n_neurons} "
                 f"neurons, p = {cfg.cc_feature_prob:g}", fontsize=10)
    fig.tight_layout()
    return fig


def tms_columns(best: dict, metrics: dict, cfg):
    """The feature columns W_i (2D: arrows; otherwise the Gram matrix W^T W)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    titles = {"sparse": f"sparse (p = {cfg.tms_feature_prob:g})", "dense": "dense control (p = 1)"}
    for ax, (tag, (w, _b)) in zip(axes, best.items()):
        w = w.numpy()
        prefix = "" if tag == "sparse" else "dense_"
        if w.shape[0] == 2:
            t = np.linspace(0, 2 * np.pi, 200)
            ax.plot(np.cos(t), np.sin(t), color="0.85", lw=1)
            for i in range(w.shape[1]):
                ax.annotate("", xy=(w[0, i], w[1, i]), xytext=(0, 0),
                            arrowprops=dict(arrowstyle="->", color=f"C{i % 10}", lw=2))
                ax.text(1.1 * w[0, i], 1.1 * w[1, i], str(i), ha="center", va="center")
            lim = max(1.3, 1.25 * float(np.abs(w).max()))
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
            extra = f", max gap dev {metrics[f'{prefix}gap_max_dev_deg']:.1f}°"
        else:
            im = ax.imshow(w.T @ w, cmap="RdBu_r", vmin=-1.5, vmax=1.5)
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set(xlabel="feature", ylabel="feature")
            extra = " (W^T W)"
        ax.set_title(f"{titles[tag]}: {int(metrics[f'{prefix}n_represented'])} of "
                     f"{w.shape[1]} represented{extra}", fontsize=9)
    fig.suptitle(f"TMS: {cfg.tms_n_features} features in {cfg.tms_n_dims} dimensions",
                 fontsize=10)
    fig.tight_layout()
    return fig
