"""Figures of sparsify-model (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any


def figures(result: Any) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result.metrics
    lams = result.details["lambdas"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    matched = m.get("reinit.mlp_out_scale", 1.0) != 1.0
    reinit = "re-initialised (scale-matched)" if matched else "re-initialised"
    for prefix, label in (("", "model"), ("reinit.", reinit)):
        if f"{prefix}lambda_0.ev" not in m:
            continue
        dens = [m[f"{prefix}lambda_{lam:g}.jacobian_density"] for lam in lams]
        ev = [m[f"{prefix}lambda_{lam:g}.ev"] for lam in lams]
        axes[0].plot(lams, dens, "o-", label=label)
        axes[1].plot(dens, ev, "o-", label=label)
        for lam, d, e in zip(lams, dens, ev):
            axes[1].annotate(f"{lam:g}", (d, e), fontsize=7)
    axes[0].set_xlabel("lambda (Jacobian L1)")
    axes[0].set_ylabel("Jacobian density")
    axes[0].set_xscale("symlog", linthresh=0.1)
    axes[1].set_xlabel("Jacobian density")
    axes[1].set_ylabel("EV of the MLP output")
    axes[0].legend()
    fig.tight_layout()
    return {"sweep": fig}
