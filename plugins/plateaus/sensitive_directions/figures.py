"""Figures of the sensitive-directions idea (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any

COLOURS = {
    "dir_sae_latent": "tab:red", "dir_sae_inactive": "tab:orange", "dir_sae_dead": "tab:brown",
    "dir_real_diff": "tab:pink", "toward_real": "tab:blue", "dir_pca": "tab:cyan",
    "dir_cov": "black", "toward_cov_sample": "tab:purple", "dir_isotropic": "tab:gray",
    "dir_sae_error": "tab:green", "optimised": "tab:olive",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_figure(details: dict, x_norm: float, threshold: float) -> Any:
    """Median KL against t / median ||x|| per family, with the interquartile band."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    t = np.asarray(details["steps"]) / x_norm
    for f in details["families"]:
        c = details["curves"][f]
        lo, med, hi = (np.clip(np.asarray(c[k]), 1e-9, None) for k in ("q25", "median", "q75"))
        col = COLOURS.get(f)
        ax.plot(t[1:], med[1:], color=col, label=f, lw=2 if f in ("dir_sae_latent", "dir_cov") else 1.2)
        ax.fill_between(t[1:], lo[1:], hi[1:], color=col, alpha=0.12)
    ax.axhline(threshold, color="k", ls=":", lw=1, label=f"threshold {threshold:g}")
    ax.set_yscale("log")
    ax.set_xlabel("perturbation length t / median ||x||")
    ax.set_ylabel("KL(clean || perturbed) [nats]")
    ax.set_title(f"KL along x + t d at {details['site']}, radial={details.get('radial')} "
                 "(median, IQR band)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig


def sensitivity_figure(t_cross: dict, curv: dict, kl_err: dict, x_norm: float) -> Any:
    """ECDF of t_cross, and box plots of curvature and of KL at t = ||x - x_hat||."""
    import numpy as np

    plt = _plt()
    names = list(t_cross)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    ax = axes[0]
    for f in names:
        v = np.sort(t_cross[f].reshape(-1).numpy()) / x_norm
        y = np.arange(1, len(v) + 1) / len(v)
        finite = np.isfinite(v)
        ax.step(v[finite], y[finite], where="post", color=COLOURS.get(f), label=f)
    ax.set_xlabel("t_cross / median ||x||")
    ax.set_ylabel("fraction of paths crossed")
    ax.set_title("crossing length (ECDF; never-crossed paths stay below 1)")
    ax.legend(fontsize=7)
    for ax, data, label in ((axes[1], curv, "curvature KL(t_s)/t_s^2"),
                            (axes[2], kl_err, "KL at t = ||x - x_hat||")):
        vals = [np.clip(data[f].reshape(-1).numpy(), 1e-12, None) for f in names]
        box = ax.boxplot(vals, orientation="horizontal", patch_artist=True, showfliers=False)
        for patch, f in zip(box["boxes"], names):
            patch.set_facecolor(COLOURS.get(f, "white"))
            patch.set_alpha(0.5)
        ax.set_yticks(range(1, len(names) + 1), names, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(label)
    axes[1].set_title("small-step sensitivity")
    axes[2].set_title("Gurnee: equal-length perturbations")
    fig.tight_layout()
    return fig


def optimised_figure(opt: dict) -> Any:
    """Max |cos| with the SAE decoder: optimised directions against random controls."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    bins = [i / 40 for i in range(41)]
    for key, label, col in (("max_cos_sae", "optimised", "tab:olive"),
                            ("max_cos_dir_cov_control", "dir_cov (control)", "black"),
                            ("max_cos_dir_isotropic_control", "dir_isotropic (control)",
                             "tab:gray")):
        if key in opt:
            ax.hist(opt[key], bins=bins, density=True, alpha=0.5, color=col, label=label)
    ax.set_xlabel("max_i |cos(d, w_i)| over alive SAE decoder rows")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig
