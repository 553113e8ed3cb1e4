"""The peak memory of an activation-plateaus run, from its config (no torch).

What :mod:`.run` allocates, by phase (sizes in float32 unless noted; n = n_prompts,
P = n_pool, T = prompt_tokens, m = n_paths, s = n_steps, R = rows_per_forward):

- all run long: the pool's last-position activations at ``site`` and every layer site
  (P·d each) and their Gaussian fit (P·d + 3·d²; two float64 copies while it is fitted);
  the clean run of the references (residual stream n·T·d, log-probs n·d_vocab);
- a forward over the pool (chunks of 256 prompts) or over all n references at once
  (:func:`..common.sweep.clean_run`, :func:`..common.sweep.rebase`, the SAE splice);
- a sweep (:func:`..common.sweep.sweep`): the path points of every (prompt, path, step)
  row at once, n·m·s·d (twice while built; three times for the ``real_arc`` slerp), the
  row-to-prompt index (int64), the read-outs and their statistics (~6·n·m·s), and one
  batched forward of min(R, n·m·s) rows;
- a relative-step sweep also holds, per batch, the whole next-token distribution of its
  rows (for JS and TV: :mod:`.readouts`), about 8 floats per (row, vocabulary entry);
- the SAE families: the SAE codes of n·m real activations, twice (codes and
  swapped codes), and the pool's codes for the firing frequencies (dictionary width
  assumed 32·d_model);
- the re-initialised control: a fresh float32 copy of the model, then the same sweep.
"""

from __future__ import annotations

from typing import Any

from mi_ideas import MemoryItem

from ..common import memory as M
from .config import SAE_FAMILIES, PlateauConfig


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

    def sweep(kind_factor: int) -> list[MemoryItem]:
        rows = n * m * s
        return [
            M.tensor(f"path points of every (prompt, path, step) row, x{kind_factor} while "
                     f"built", rows * d * kind_factor, ("n_prompts", "n_paths", "n_steps")),
            M.tensor("row-to-prompt index (int64)", rows, ("n_prompts", "n_paths", "n_steps"),
                     M.I64),
            M.tensor("KL and L2 read-outs and their statistics", 6 * rows,
                     ("n_prompts", "n_paths", "n_steps")),
            M.tensor("targets / directions", 3 * n * m * d, ("n_prompts", "n_paths")),
            M.forward(f"one batched forward of {min(R, rows)} rows", subject, min(R, rows), T,
                      ("rows_per_forward", "prompt_tokens")),
            M.tensor("the bounded read-outs of one batch: the whole next-token distribution "
                     "(log-probs, int64 ids, the scattered copy, the reference and the JS "
                     "mixture)", min(R, rows) * vocab * 8, ("rows_per_forward",)),
            M.tensor("residual stream of one batch", min(R, rows) * T * d,
                     ("rows_per_forward", "prompt_tokens")),
        ]

    arc = relative and "toward_real_arc" in config.families
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
        "sweep": sweep(3 if arc else 2),
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
            *sweep(2),
        ]
    return M.peak(persistent, phases)
