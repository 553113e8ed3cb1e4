"""Figures of steering-vs-prompting (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any

SCORES = ("concept", "fluency", "relevance", "harmonic")


def save_figures(ctx: Any, result: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = result.details
    words = d["concepts"]
    ncols = min(3, len(words))
    nrows = -(-len(words) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(words):]:
        ax.axis("off")
    for ax, w in zip(axes.flat, words):
        sweep = d["sweep"][w]
        cs = [float(c) for c in sweep]
        for kind in SCORES:
            ax.plot(cs, [sweep[c][kind] for c in sweep], marker="o", label=kind,
                    lw=2.2 if kind == "harmonic" else 1.2)
        ax.axvline(d["chosen"][w], color="grey", ls="--", lw=1, label="chosen")
        ax.set_xlabel("coefficient (× mean activation norm)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{w!r} at {d['site']} (first split)")
    for row in axes:
        row[0].set_ylabel("mean score")
    axes.flat[len(words) - 1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    ctx.artifacts.save_figure("score_vs_coefficient", fig)

    summary = d["summary"]
    conds = [c for c in ("unsteered", "ignore_only", "prompting", "prompting.ignore", "steering",
                         "steering.ignore", "control") if c in summary]
    fig, axes = plt.subplots(1, len(SCORES), figsize=(3.2 * len(SCORES), 3.4), sharey=True)
    for ax, kind in zip(axes, SCORES):
        means = [summary[c][kind]["mean"] for c in conds]
        lo = [summary[c][kind]["mean"] - summary[c][kind]["ci_low"] for c in conds]
        hi = [summary[c][kind]["ci_high"] - summary[c][kind]["mean"] for c in conds]
        ax.barh(range(len(conds)), means, xerr=[lo, hi], color="tab:blue", alpha=0.8)
        ax.set_yticks(range(len(conds)), conds, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_title(kind)
    axes[0].invert_yaxis()
    fig.suptitle("second split: mean score per method (95% bootstrap intervals over prompts)",
                 fontsize=9)
    fig.tight_layout()
    ctx.artifacts.save_figure("methods", fig)
