"""Figures of linear-representation (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any


def figures(result: Any) -> dict[str, Any]:
    """``additivity`` (per site: additive R² of the model, the re-initialised model and
    shuffled labels, with each slot's share stacked) and ``ladder`` (projection on the
    concept direction per level, per concept, at the headline site)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m, d = result.metrics, result.details
    sites, slots = d["sites"], d["slots"]
    out = {}
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(sites), 3.6))
    x = np.arange(len(sites))
    bottom = np.zeros(len(sites))
    for slot in slots:
        v = np.array([m[f"{s}.share.{slot}"] for s in sites])
        ax.bar(x - 0.27, v, 0.26, bottom=bottom, label=f"model: {slot} share")
        bottom += v
    re = [m.get(f"reinit.{s}.additive_r2", np.nan) for s in sites]
    ax.bar(x, re, 0.26, color="0.6", label="re-initialised: additive R²")
    ax.bar(x + 0.27, [m[f"shuffled.{s}.additive_r2"] for s in sites], 0.26, color="0.85",
           label="shuffled labels: additive R²")
    ax.axhline(m["shuffled.additive_r2_chance"], color="k", lw=0.8, ls=":",
               label="shuffled: expected R²")
    ax.set_xticks(x, sites)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("variance explained by the additive fit")
    ax.set_title(f"additivity of {m['n_cells']:.0f} cells ({' x '.join(slots)})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out["additivity"] = fig
    site = d.get("headline_site")
    lad = (d.get("ladder") or {}).get(site)
    if lad:
        levels, concepts = d["ladder_levels"], d["ladder_concepts"]
        proj = np.array(lad["projection"])  # (L, C)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for c, name in enumerate(concepts):
            axes[0].plot(range(1, len(levels) + 1), proj[:, c], marker="o", label=name)
        axes[0].set_xticks(range(1, len(levels) + 1), levels)
        axes[0].set_ylabel("projection on the concept direction")
        axes[0].set_title(f"{site}: concept-specific part by level")
        axes[0].legend(fontsize=7, ncol=2)
        for key, label in (("spearman", "Spearman ρ"), ("diff_cosine", "step cosine of the concept's part")):
            axes[1].plot(sites, [m[f"{s}.intensity.{key}"] for s in sites], marker="o",
                         label=f"model: {label}")
            rv = [m.get(f"reinit.{s}.intensity.{key}", np.nan) for s in sites]
            axes[1].plot(sites, rv, marker="x", ls="--", label=f"re-initialised: {label}")
        axes[1].axhline(0, color="k", lw=0.6)
        axes[1].set_ylim(-1.05, 1.05)
        axes[1].set_title("ladder scores per site")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        out["ladder"] = fig
    return out
