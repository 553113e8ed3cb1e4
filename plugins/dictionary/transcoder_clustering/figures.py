"""Figures of transcoder-clustering (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any


def figures(result: Any, cfg: Any) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, Any] = {}
    planted = [(s, "" if s == "toy" else f"{s}.") for s in ("toy", "uand") if s in result.details]
    if planted:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        methods = ["coact", "decoder_cos", "shuffled"]
        width = 0.8 / len(planted)
        for i, (src, p) in enumerate(planted):
            vals = [result.metrics[f"{p}{m}.ari"] for m in methods]
            per_seed = result.details[src]["per_seed"]
            ax.bar([j + i * width for j in range(3)], vals, width, label=src)
            for j, m in enumerate(methods):
                ax.scatter([j + i * width] * len(per_seed), [s[m][0] for s in per_seed], s=8, c="k")
        ax.set_xticks([j + width * (len(planted) - 1) / 2 for j in range(3)],
                      ["co-activation", "decoder cosine", "shuffled (null)"])
        ax.set_ylabel("ARI vs planted modules")
        ax.axhline(0, c="grey", lw=0.5)
        ax.legend()
        ax.set_title(f"{cfg.affinity} affinity, {cfg.method} clustering (dots: seeds)")
        out["ari"] = fig
    if "model" in result.details and result.details["model"]["clusters"]:
        # clusters active on fewer than top_contexts tokens are not scored (purity None)
        cl = [c for c in result.details["model"]["clusters"] if c["purity"] is not None]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.scatter([c["size"] for c in cl], [c["purity"] for c in cl], s=12)
        ax.axhline(result.metrics["model.purity_shuffled"], c="r", ls="--", label="shuffled labels")
        ax.set_xscale("log")
        ax.set_xlabel("cluster size (latents)")
        ax.set_ylabel(f"concept purity of top {cfg.top_contexts} tokens")
        ax.legend()
        out["model_purity"] = fig
    return out
