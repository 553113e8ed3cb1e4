"""Figures of saes-vs-clustering (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any

LABELS = {"kmeans": "k-means (centroid)", "kmeans_scaled": "k-means x scalar (1-sparse)",
          "pca_kmeans": "PCA -> k-means", "sae": "TopK SAE (SAELens)",
          "random": "random directions"}


def ev_figure(details: dict[str, Any]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, curve in details["curves"].items():
        ks = sorted(int(k) for k in curve)
        evs = [curve[str(k)]["ev"] for k in ks]
        style = "o-" if len(ks) > 1 else "*"
        ax.plot(ks, evs, style, label=LABELS.get(method, f"{method} (given)"),
                markersize=6 if len(ks) > 1 else 12)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("dictionary size K")
    ax.set_ylabel("explained variance (held-out rows)")
    ax.set_title(f"{details['site']}: 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²")
    ax.axhline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def purity_figure(details: dict[str, Any]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(details["purity"].items())
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(items)), 4.2))
    xs = range(len(items))
    real = [v["purity"] for _, v in items]
    shuf = [v["purity_shuffled"] for _, v in items]
    ax.bar([x - 0.2 for x in xs], real, 0.4, label="top-context purity")
    ax.bar([x + 0.2 for x in xs], shuf, 0.4, label="shuffled labels", color="lightgrey")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{k} ({v['n_units']} units)" for k, v in items], fontsize=7,
                       rotation=55, ha="right")
    ax.set_ylim(0, 1.2)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("share of top contexts with the majority label", fontsize=8)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    return fig
