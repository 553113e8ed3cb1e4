"""The peak memory of an activation-plateaus run, from its config (no torch).

What :mod:`.run` allocates, by phase (sizes in float32 unless noted; n = n_prompts,
P = n_pool, T = prompt_tokens, m = n_paths, s = n_steps, R = rows_per_forward):

- all run long: the pool's last-position activations at ``site`` and every layer site
  (P·d each) and their Gaussian fit (P·d + 3·d²; two float64 copies while it is fitted);
  the clean run of the references (residual stream n·T·d, log-probs n·d_vocab);
- a forward over the pool (chunks of 256 prompts) or over all n references at once
  (:func:`..common.sweep.clean_run`, :func:`..common.sweep.rebase`, the SAE splice);
- the main plan (:class:`..common.sweep.SweepPlan`: every family's relative and absolute
  sweeps: one per target family and step mode, n·m·s rows each): what the engine holds
  (:func:`..common.memory.sweep_engine`: the prefix cache of the n prompts, per chunk of R
  rows the gathered cache, the chunk's points and its logits — never every path point; or
  the full-forward fallback's chunk, whichever is larger), the read-outs of every row (KL,
  L2, JS, TV: computed next to the model), every family's targets / directions and the per-path statistics;
- the SAE families: the SAE codes of n·m real activations, twice (codes and
  swapped codes), and the pool's codes for the firing frequencies (dictionary width
  assumed 32·d_model);
- the re-initialised control: a fresh float32 copy of the model, then the same sweep.
"""

from __future__ import annotations

from typing import Any

from mi_ideas import MemoryItem

from ..common import memory as M
from .config import SAE_FAMILIES, TARGET_FAMILIES, PlateauConfig


def _layer(config: PlateauConfig) -> int:
    """The smallest block the run's sweeps perturb (the longest prefix cache)."""
    layers = list(config.layers)
    try:
        layers.append(int(str(config.site).rsplit(".", 1)[1]))
    except (IndexError, ValueError):
        layers.append(0)
    return max(0, min(layers))


def estimate(config: PlateauConfig, subject: Any) -> list[MemoryItem] | None:
    if subject is None:
        return None
    d, _, vocab = M.dims(subject)
    n, P, T = config.n_prompts, config.n_pool, config.prompt_tokens
    m, s, R = config.n_paths, config.n_steps, config.rows_per_forward
    d_sae = M.SAE_EXPANSION * d
    n_sites = len({config.site, *(f"resid_pre.{layer}" for layer in config.layers)})
    relative = "relative" in config.step_modes

    persistent = [
        M.tensor(f"pool activations at {n_sites} site(s) and their Gaussian fit",
                 P * d * (n_sites + 1) + 3 * d * d, ("n_pool", "layers")),
        M.tensor("clean run of the references (residual stream at every position, "
                 "log-probs)", n * T * d + n * vocab + n * d, ("n_prompts", "prompt_tokens")),
    ]

    n_target = sum(f in TARGET_FAMILIES for f in config.families)
    # the main plan: a relative sweep per target family, an absolute one per family
    n_parts = ((n_target if relative else 0)
               + (len(config.families) if "absolute" in config.step_modes else 0))
    layer = _layer(config)

    def sweep(n_parts: int) -> list[MemoryItem]:
        rows = n_parts * n * m * s
        return [
            *M.sweep_engine(subject, n_prompts=n, seq=T, layer=layer, rows=rows, R=R,
                            n_readouts=4, fields=("rows_per_forward",)),
            M.tensor("per-path statistics of the read-outs (onsets, fits, crossings)",
                     6 * rows, ("n_prompts", "n_paths", "n_steps")),
            M.tensor(f"targets / directions of {n_parts} sweeps", 3 * n_parts * n * m * d,
                     ("n_prompts", "n_paths", "families")),
        ]

    phases: dict[str, list[MemoryItem]] = {
        "pool forward": [
            M.forward("forward of 256 pool prompts", subject, min(P, 256), T, ("prompt_tokens",)),
            M.tensor("pool activations before concatenation", P * d * n_sites,
                     ("n_pool", "layers")),
        ],
        "pool fit": [
            M.tensor("float64 copies of the pool activations (Gaussian fit)", 2 * P * d,
                     ("n_pool",), M.F64),
        ],
        "forward of all references": [
            M.forward(f"one forward of the {n} references", subject, n, T,
                      ("n_prompts", "prompt_tokens")),
        ],
        "sweep": sweep(max(1, n_parts)),
    }
    if any(f in SAE_FAMILIES for f in config.families):
        phases["SAE codes"] = [
            M.tensor(f"SAE codes of the pool (firing frequencies; width assumed {d_sae})",
                     2 * P * d_sae, ("n_pool",)),
            M.tensor(f"SAE codes of the sae_synthetic bases (width assumed {d_sae})",
                     2 * n * m * d_sae + 2 * n * m * d, ("n_prompts", "n_paths")),
        ]
    if config.reinit_control and relative and M.runs_here(subject):
        phases["re-initialised control"] = [
            M.model_copy("re-initialised copy of the model", subject),
            M.tensor("its pool activations and clean run", 2 * P * d + n * T * d + n * vocab,
                     ("n_pool", "n_prompts", "prompt_tokens")),
            *sweep(1),
        ]
    return M.peak(persistent, phases)
