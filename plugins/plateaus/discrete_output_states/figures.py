"""Figures of the discrete-output-states idea, drawn from the result's ``details``."""

from __future__ import annotations

from typing import Any

COLOURS = {"within": "tab:blue", "across": "tab:red", "within_far": "tab:purple",
           "null_within": "tab:gray", "null_across": "black"}
STYLES = {"null_within": ":", "null_across": "--"}


def make_figures(ctx: Any, details: dict, cfg: Any) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    ks = details["k_selection"]
    ncol = 2 if ks["gap"] else 1
    fig, axes = plt.subplots(1, ncol, figsize=(4.2 * ncol, 3.2), squeeze=False)
    ax = axes[0, 0]
    ax.plot(ks["ks"], ks["silhouette"], "o-", ms=3)
    ax.axhline(cfg.min_silhouette, color="gray", ls=":", lw=1, label="min_silhouette")
    if ks["k"] >= 2:
        ax.axvline(ks["k"], color="tab:red", lw=1, label=f"chosen k = {ks['k']}")
    ax.set(xlabel="k", ylabel="mean silhouette", title=f"{ks['representation']} clustering")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    if ks["gap"]:
        ax = axes[0, 1]
        ax.errorbar(ks["gap_ks"], ks["gap"], yerr=ks["gap_s"], fmt="o-", ms=3, capsize=2)
        ax.axvline(ks["k"], color="tab:red", lw=1,
                   label=f"chosen k = {ks['k']} ({ks['criterion']})")
        ax.set(xlabel="k", ylabel="Gap(k) ± s(k)", title="gap statistic")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.artifacts.save_figure("k_selection", fig)

    if "probes" in details:
        rows = details["probes"]
        x = np.arange(len(rows))
        fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(rows) + 1.5), 3.2))
        ax.plot(x, [r["accuracy"] for r in rows], "o-", label="probe (held out)")
        ax.errorbar(x, [r["shuffled"] for r in rows], yerr=[r["shuffled_std"] for r in rows],
                    fmt="s--", color="gray", ms=3, capsize=2, label="shuffled-label control")
        ax.axhline(rows[0]["majority"], color="gray", ls=":", lw=1, label="majority class")
        ax.set_xticks(x, [r["site"] for r in rows], rotation=30, fontsize=7)
        ax.set(ylim=(0, 1.05), ylabel="accuracy",
               title=f"predicting the output state (k = {ks['k']})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        ctx.artifacts.save_figure("probe_accuracy", fig)

    if "plateaus" in details:
        pl = details["plateaus"]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        panels = (("sharpness_kl", "KL sharpness (dotted: 2, smooth)", 2.0),
                  ("onset10_js", "onset-10% of JS (alpha)", None),
                  ("jump_js", "jump width onset50 - onset10 (JS)", pl["jump_max"]))
        for ax, (metric, label, ref) in zip(axes, panels):
            for name in pl["paths"]:
                v = np.asarray(pl["per_path"][metric][name], dtype=float)
                v = np.sort(v[np.isfinite(v)])
                if len(v):
                    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post",
                            color=COLOURS[name], ls=STYLES.get(name, "-"), label=name)
            if ref is not None:
                ax.axvline(ref, color="gray", lw=0.8, ls=":")
            ax.set(xlabel=label, ylabel="fraction of kept paths")
        axes[0].set_title(f"max-slope sharpness at {details['site']}", fontsize=9)
        axes[1].set_title("where JS starts to rise", fontsize=9)
        axes[2].set_title(f"step-like if < {pl['jump_max']} (dotted)", fontsize=9)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        ctx.artifacts.save_figure("sharpness", fig)

        steps = np.asarray(pl["steps"])
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
        for name in pl["paths"]:
            axes[0].plot(steps, pl["median_curve"]["kl"][name], color=COLOURS[name],
                         ls=STYLES.get(name, "-"), label=name)
            axes[1].plot(steps, pl["median_normalised_curve"]["js"][name], color=COLOURS[name],
                         ls=STYLES.get(name, "-"), label=name)
        axes[0].axhline(pl["kl_threshold"], color="gray", lw=0.8, ls=":", label="kl_threshold")
        axes[0].set_yscale("symlog", linthresh=0.01)
        axes[0].set(xlabel="alpha", ylabel="median KL (nats)", title="KL along the path")
        axes[0].set_ylim(bottom=0)
        for power, ls in ((2, "-."), (3, "--")):
            axes[1].plot(steps, steps ** power, color="gray", lw=0.8, ls=ls,
                         label=f"alpha^{power}")
        axes[1].set(xlabel="alpha", ylabel="median JS(alpha) / JS(1)",
                    title="normalised JS (paths above the floor)")
        axes[0].legend(fontsize=7)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        ctx.artifacts.save_figure("median_curves", fig)
