"""The peak memory of a sensitive-directions run, from its config (no torch).

What :mod:`.run` allocates, by phase (float32 unless noted; n = n_prompts, T =
prompt_tokens, M = the paths of every family, n_paths each (one for sae_error and
optimised), S = n_steps + 2 lengths, R = rows_per_forward, N = the pool's tokens):

- all run long: the pool activations (N·d, twice: the harvest's tensor and the fit's
  copy), the clean run (residual stream n·T·d, log-probs n·d_vocab) and every family's
  directions (n·M·d);
- the harvest of the pool (batches of 32 texts of prompt_tokens tokens, so N ≤
  (prompt_tokens − 1) · pool_stories, and no more stories than the dataset has after the prompts; up to
  256 MiB of rows before a shard is written), then the Gaussian fit
  (two float64 copies, 2·N·d) and the latent frequencies (chunks of 4096 rows of SAE
  codes; dictionary width assumed 32·d_model);
- one forward of all n references;
- the sweep (:func:`..common.sweep.sweep`): what the engine holds
  (:func:`..common.memory.sweep_engine`: the prefix cache of the n prompts and, per chunk
  of R rows, the gathered cache, the chunk's points and logits — never every path point;
  or the full-forward fallback's chunk, whichever is larger), the read-outs with their
  statistics and artifacts (~6·n·M·S), the concatenated and the length-matched
  directions (2·n·M·d);
- ``optimise``: a forward with autograd of n·opt_restarts rows (local models only).
"""

from __future__ import annotations

from typing import Any

from mi_ideas import MemoryItem

from ..common import memory as M
from .config import SensitiveDirectionsConfig

#: the harvest's limits (``mi_ideas.harvest.harvest_to_cache`` defaults)
HARVEST_TOKENS = 128
HARVEST_BATCH = 32
HARVEST_BUFFER = 256 * 2**20


def _layer(config: SensitiveDirectionsConfig) -> int:
    """The block the sweep perturbs (resid_pre.L; 0 where the site does not say)."""
    try:
        return max(0, int(str(getattr(config, "site", "")).rsplit(".", 1)[1]))
    except (IndexError, ValueError):
        return 0


def estimate(config: SensitiveDirectionsConfig, subject: Any, dataset: Any = None
             ) -> list[MemoryItem] | None:
    if subject is None:
        return None
    d, _, vocab = M.dims(subject)
    n, T, R = config.n_prompts, config.prompt_tokens, config.rows_per_forward
    S = config.n_steps + 2
    paths = sum(1 if f == "dir_sae_error" else config.n_paths for f in config.families)
    paths += 1 if config.optimise else 0
    stories = config.pool_stories
    if dataset is not None:  # the pool is at most the texts after the prompts
        stories = max(1, min(stories, len(dataset) - n))
    N = stories * (T - 1)  # positions 1 .. prompt_tokens - 1 of each pool text
    d_sae = M.SAE_EXPANSION * d
    rows = n * paths * S
    sweep_fields = ("n_prompts", "n_paths", "n_steps", "families")

    persistent = [
        M.tensor(f"pool activations (up to {N} tokens), twice", 2 * N * d, ("pool_stories",)),
        M.tensor("clean run of the references (residual stream at every position, log-probs)",
                 n * T * d + n * vocab + n * d, ("n_prompts", "prompt_tokens")),
        M.tensor(f"directions of every family ({paths} per prompt)", n * paths * d,
                 ("n_prompts", "n_paths", "families")),
    ]
    phases: dict[str, list[MemoryItem]] = {
        "pool harvest": [
            M.forward(f"forward of {HARVEST_BATCH} pool texts", subject, HARVEST_BATCH,
                      T, ("prompt_tokens",)),
            MemoryItem("harvest buffer before a shard is written",
                       min(N * d * M.F32, HARVEST_BUFFER), ("pool_stories",)),
        ],
        "pool fit": [
            M.tensor("float64 copies of the pool activations", 2 * N * d, ("pool_stories",),
                     M.F64),
            M.tensor(f"SAE codes of 4096 pool tokens (width assumed {d_sae})",
                     2 * min(N, 4096) * d_sae, ()),
        ],
        "forward of all references": [
            M.forward(f"one forward of the {n} references", subject, n, T,
                      ("n_prompts", "prompt_tokens")),
        ],
        "sweep": [
            *M.sweep_engine(subject, n_prompts=n, seq=T, layer=_layer(config), rows=rows, R=R,
                            fields=("rows_per_forward",)),
            M.tensor("KL and L2 statistics and artifacts", 6 * rows, sweep_fields),
            M.tensor("concatenated and length-matched directions", 2 * n * paths * d,
                     ("n_prompts", "n_paths", "families")),
        ],
    }
    if config.optimise and M.runs_here(subject):
        k = n * config.opt_restarts
        phases["optimise"] = [
            M.forward(f"forward with autograd of {k} rows (prompts x restarts)", subject, k, T,
                      ("n_prompts", "opt_restarts", "prompt_tokens"), grad=True),
        ]
    return M.peak(persistent, phases)
