"""Figures of ngram-baseline (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_figure(result: Any):
    """Held-out loss per n (modified KN and tokengrams' smoothing) against the model's."""
    plt = _plt()
    m, orders = result.metrics, result.details["orders"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(orders, [m[f"ngram_{n}.loss"] for n in orders], "o-", label="n-gram, modified KN")
    if f"ngram_{orders[0]}.loss_tokengrams" in m:
        ax.plot(orders, [m[f"ngram_{n}.loss_tokengrams"] for n in orders], "s--", alpha=0.7,
                label="n-gram, tokengrams smoothing (first rows only)")
        ax.plot(orders, [m[f"ngram_{n}.loss_kn_tokengrams_rows"] for n in orders], "^:",
                alpha=0.7, label="n-gram, modified KN (same rows)")
    ax.axhline(m["model.loss"], color="k", lw=1.5, label=f"model ({m['model.loss']:.3f})")
    ax.set_xticks(orders)
    ax.set_xlabel("n (n-gram order)")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title(f"{int(m['n_heldout_positions'])} held-out positions (tokengrams curves: the "
                 f"first rows' positions)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def position_figure(result: Any):
    """Loss by position in the context: model and each n-gram."""
    plt = _plt()
    bp, orders = result.details["by_position"], result.details["orders"]
    edges = bp["edges"]
    labels = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])]
    xs = range(len(labels))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for n in orders:
        ax.plot(xs, bp[f"ngram_{n}"], "o-", ms=3, lw=1, label=f"{n}-gram (KN)")
    ax.plot(xs, bp["model"], "k-", lw=2, label="model")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlabel("position t in the context (predicts t + 1)")
    ax.set_ylabel("loss (nats/token)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def checkpoint_figure(result: Any):
    """The model's loss across training checkpoints against each n-gram's."""
    plt = _plt()
    table, orders, m = result.details["checkpoints"], result.details["orders"], result.metrics
    known = all(r["tokens_seen"] == r["tokens_seen"] and r["tokens_seen"] > 0 for r in table)
    xs = [r["tokens_seen"] if known else r["step"] for r in table]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ys = [r["loss"] for r in table]
    ax.plot(xs, ys, "ko-", lw=2, label="model checkpoints")
    for n in orders:
        ax.axhline(m[f"ngram_{n}.loss"], lw=1, ls="--", color=f"C{n - 1}",
                   label=f"{n}-gram KN ({m[f'ngram_{n}.loss']:.2f})")
    if known and min(xs) > 0:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:.2g}M"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(xs)
    ax.set_xlabel("training tokens seen" if known else "checkpoint step")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("same held-out positions for every curve", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
