"""Figures of activation-plateaus: median curves with IQR bands, sharpness, per layer."""

from __future__ import annotations

from typing import Any


def save_all(ctx: Any, details: dict, sharp: dict, crossings: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = details.get("curves", {})
    if curves:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for fam, c in curves.items():
            for ax, key in zip(axes, ("l2", "kl")):
                line, = ax.plot(c["steps"], c[key]["median"], label=fam)
                ax.fill_between(c["steps"], c[key]["q25"], c[key]["q75"], alpha=0.2,
                                color=line.get_color())
        axes[0].set(xlabel="α (interpolation x → target)", ylabel="L2(final resid) / L2 at α=1",
                    title="normalised L2 read-out (median, IQR)")
        axes[1].set(xlabel="α", ylabel="KL (nats)", title="KL of next token (median, IQR)")
        axes[0].plot([0, 1], [0, 1], "k:", lw=1, label="linear response")
        axes[0].legend(fontsize=8)
        ctx.artifacts.save_figure("curves", fig)
    if sharp:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist([v.numpy() for v in sharp.values()], bins=30, label=list(sharp), histtype="step")
        ax.axvline(1, color="k", ls=":", lw=1)
        ax.set(xlabel="sharpness (L2 read-out)", ylabel="paths", title="sharpness by target type")
        ax.legend(fontsize=8)
        ctx.artifacts.save_figure("sharpness", fig)
    if crossings:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.boxplot([v.numpy() for v in crossings.values()], tick_labels=list(crossings))
        ax.set(ylabel="first step with KL > threshold", title="absolute steps: plateau length")
        ax.tick_params(axis="x", rotation=30)
        ctx.artifacts.save_figure("crossings", fig)
    rows = details.get("per_layer", [])
    if rows:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        layers = [r["layer"] for r in rows]
        ax[0].plot(layers, [r["real_sharpness"] for r in rows], "o-")
        ax[0].set(xlabel="layer L (resid_pre.L)", ylabel="median sharpness", title="real → real")
        ax[1].plot(layers, [r["real_crossing"] for r in rows], "o-", label="real directions")
        ax[1].plot(layers, [r["isotropic_crossing"] for r in rows], "o-", label="isotropic")
        ax[1].set(xlabel="layer L", ylabel="median crossing step", title="plateau length")
        ax[1].legend(fontsize=8)
        ctx.artifacts.save_figure("per_layer", fig)
