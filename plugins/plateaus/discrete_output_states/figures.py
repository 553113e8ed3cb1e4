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
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
        for ax, ro in zip(axes, ("kl", "l2")):
            for name in pl["paths"]:
                v = np.sort(np.asarray(pl["sharpness"][ro][name]))
                ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post",
                        color=COLOURS[name], ls=STYLES.get(name, "-"), label=name)
            ax.axvline(2 if ro == "kl" else 1, color="gray", lw=0.8, ls=":")
            ax.set(xlabel=f"sharpness ({ro.upper()} read-out; dotted: smooth reference)",
                   ylabel="fraction of pairs",
                   title=f"sharpness, {ro.upper()} at {details['site']}")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        ctx.artifacts.save_figure("sharpness", fig)

        steps = np.asarray(pl["steps"])
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        for name in pl["paths"]:
            axes[0].plot(steps, pl["median_curve"]["kl"][name], color=COLOURS[name],
                         ls=STYLES.get(name, "-"), label=name)
        axes[0].axhline(pl["kl_threshold"], color="gray", lw=0.8, ls=":", label="kl_threshold")
        axes[0].set_yscale("symlog", linthresh=0.01)
        axes[0].set(xlabel="alpha", ylabel="median KL (nats)", title="KL along the path")
        axes[0].set_ylim(bottom=0)
        for ax, ro in zip(axes[1:], ("kl", "l2")):
            for name in pl["paths"]:
                ax.plot(steps, pl["median_normalised_curve"][ro][name], color=COLOURS[name],
                        ls=STYLES.get(name, "-"), label=name)
            ax.plot(steps, steps, color="gray", lw=0.8, ls=":", label="linear")
            ax.plot(steps, steps ** 2, color="gray", lw=0.8, ls="-.", label="quadratic")
            ax.set(xlabel="alpha", ylabel=f"median {ro.upper()}(alpha) / {ro.upper()}(1)",
                   title=f"normalised {ro.upper()}")
        axes[0].legend(fontsize=7)
        axes[2].legend(fontsize=7)
        fig.tight_layout()
        ctx.artifacts.save_figure("median_curves", fig)
