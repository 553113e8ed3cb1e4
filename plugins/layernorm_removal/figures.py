"""Figures of the layernorm-removal idea (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any


def loss_curves_figure(curves: dict[str, Any], runs: dict[str, Any], main: str):
    """Held-out loss against step for every run; a marker where a run becomes LN-free."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, c in curves.items():
        if "eval_step" not in c:
            continue
        style = "--" if name == "control" else "-"
        line, = ax.plot(c["eval_step"], c["eval_loss"], style, label=name)
        sch = runs[name].schedule if name in runs else None
        if sch is not None:
            ax.axvline(sch["last_removal"], color=line.get_color(), lw=0.6, alpha=0.5)
    if "original" in curves:
        base = curves["original"]["eval_loss"]
        ax.axhline(base, color="grey", lw=0.8, ls=":", label="original")
        # a removal spike can be 10x the loss; keep the recovery readable
        ax.set_ylim(bottom=0.9 * base, top=max(2.5 * base, base + 0.5))
    ax.set_xlabel("step")
    ax.set_ylabel("held-out loss (nats)")
    ax.set_title(f"LayerNorm removal (main schedule: {main}); thin lines: last removal")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
