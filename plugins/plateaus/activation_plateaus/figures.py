"""Figures of activation-plateaus: median JS curves with IQR bands, crossings per prompt,
per layer, and the grokking run."""

from __future__ import annotations

from typing import Any


def save_all(ctx: Any, details: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = details.get("curves", {})
    if curves:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for fam, c in curves.items():
            for ax, key in zip(axes, ("js", "kl")):
                line, = ax.plot(c["steps"], c[key]["median"], label=fam)
                ax.fill_between(c["steps"], c[key]["q25"], c[key]["q75"], alpha=0.2,
                                color=line.get_color())
        axes[0].set(xlabel="α (interpolation x → target)", ylabel="JS(α) / JS(1)",
                    title="normalised JS read-out (median, IQR)")
        axes[0].plot([0, 1], [0, 1], "k:", lw=1, label="linear")
        axes[1].set(xlabel="α", ylabel="KL (nats)", title="KL of next token (median, IQR)")
        axes[0].legend(fontsize=7)
        ctx.artifacts.save_figure("curves", fig)
    crossings = details.get("crossings_per_prompt", {})
    if crossings:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.boxplot(list(crossings.values()), tick_labels=list(crossings))
        ax.set(ylabel="first step with KL > threshold\n(median per prompt)",
               title=f"absolute steps (radial={details.get('radial')})")
        ax.tick_params(axis="x", rotation=35, labelsize=7)
        ctx.artifacts.save_figure("crossings", fig)
    rows = details.get("per_layer", [])
    if rows and "toward_real_crossing" in rows[0]:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        layers = [r["layer"] for r in rows]
        if "onset50_js_median" in rows[0]:
            ax[0].plot(layers, [r["onset10_js_median"] for r in rows], "o-", label="onset-10%")
            ax[0].plot(layers, [r["onset50_js_median"] for r in rows], "o-", label="onset-50%")
            ax[0].legend(fontsize=8)
        ax[0].set(xlabel="layer L (resid_pre.L)", ylabel="α (median)",
                  title="toward_real onsets (JS)")
        ax[1].plot(layers, [r["toward_real_crossing"] for r in rows], "o-", label="toward_real")
        ax[1].plot(layers, [r["dir_isotropic_crossing"] for r in rows], "o-",
                   label="dir_isotropic")
        ax[1].set(xlabel="layer L", ylabel="median crossing step", title="plateau length")
        ax[1].legend(fontsize=8)
        ctx.artifacts.save_figure("per_layer", fig)
    grok = details.get("grokking")
    if grok:
        fig, ax = plt.subplots(1, 3, figsize=(14, 3.5))
        for tag, r in grok.items():
            ls = "-" if tag == "grokking" else "--"
            who = "weight decay" if tag == "grokking" else "no weight decay"
            ax[0].plot(r["step"], r["train_acc"], ls, label=f"train ({who})")
            ax[0].plot(r["step"], r["test_acc"], ls, label=f"test ({who})")
            ax[1].plot(r["step"], r["onset10"], ls, label=f"onset-10% ({who})")
            ax[1].plot(r["step"], r["onset50"], ls, label=f"onset-50% ({who})")
            ax[2].plot(r["step"], r["bunching"], ls, label=f"bunching ({who})")
            ax[2].plot(r["step"], r["bunching_shuffled"], ls, label=f"shuffled ({who})")
        ax[0].set(xlabel="step", ylabel="accuracy", title="modular addition")
        ax[1].set(xlabel="step", ylabel="α (median)", title="JS onset along real→real paths")
        ax[2].set(xlabel="step", ylabel="ratio", title="ReLU-crossing bunching")
        for a in ax:
            a.legend(fontsize=6)
        ctx.artifacts.save_figure("grokking", fig)
