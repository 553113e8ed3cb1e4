"""The peak memory of a discrete-output-states run, from its config (no torch).

n is the number of prompts used, min(max_prompts, the dataset's size), and T the longest
prompt in tokens (the padded width of the clean forward), from the run's dataset (the
first :data:`SAMPLE` texts are tokenized); without a dataset, n = max_prompts and T =
:data:`PROMPT_TOKENS` (the zoo's template families have 15–37). What :mod:`.run` and
:mod:`.cluster` allocate, by phase:

- all run long: the clean run (residual stream n·T·d, log-probs n·d_vocab) and the
  last-position activations at every probed site (n·d each);
- one forward of all n prompts (twice: the clean run and the probed sites);
- clustering: float64 copies of the n × d_vocab representation (features, k-means'
  centred copy, the gap statistic's SVD factors and uniform references, about 8 in
  all), the n × n silhouette distances; ``js``: the pairwise Jensen–Shannon distances,
  computed 64 rows at a time over n × d_vocab (about 4 float64 temporaries of
  64 · n · d_vocab); the Hellinger distances between centres (k_max² · d_vocab, twice);
- probes: float64 copies of one site's activations;
- the pair sweep (:func:`..common.sweep.sweep` on the full-forward engine, KL, L2, JS and
  TV computed next to the model): what the engine holds per chunk
  (:func:`..common.memory.sweep_engine`: the points of one chunk, never of every row; the
  residual stream and one forward of min(rows_per_forward, rows) rows), the four read-outs
  of every row, the pairs' paths (n_pairs · 5 · d) and the per-path onset statistics.
"""

from __future__ import annotations

from typing import Any

from mi_ideas import MemoryItem

from ..common import memory as M
from .config import DiscreteOutputStatesConfig

#: prompt length assumed (tokens, BOS included); the zoo's templates have 15–37, and the
#: forward items scale with it
PROMPT_TOKENS = 32
N_PATHS = 5  # run.PATHS: within, across, within_far, null_within, null_across
#: texts tokenized to find the longest prompt
SAMPLE = 8192


def _layer(config: DiscreteOutputStatesConfig, n_layers: int) -> int:
    """The block the pair paths perturb (resid_pre.L), 0 where it cannot be read here."""
    try:
        return int(str(config.site).rsplit(".", 1)[1]) % max(1, n_layers)
    except (IndexError, ValueError):
        return 0


def prompt_sizes(config: DiscreteOutputStatesConfig, subject: Any, dataset: Any
                 ) -> tuple[int, int, str]:
    """(prompts used, longest prompt in tokens, how T was found)."""
    if dataset is None or not len(dataset):
        return config.max_prompts, PROMPT_TOKENS, f"prompts assumed <= {PROMPT_TOKENS} tokens"
    texts = list(dataset.texts[:SAMPLE])
    width = int(subject.tokenize(texts).input_ids.shape[1])
    return min(config.max_prompts, len(dataset)), width, f"prompts of <= {width} tokens"


def estimate(config: DiscreteOutputStatesConfig, subject: Any, dataset: Any = None
             ) -> list[MemoryItem] | None:
    if subject is None:
        return None
    d, n_layers, vocab = M.dims(subject)
    n, T, how = prompt_sizes(config, subject, dataset)
    R = config.rows_per_forward
    n_sites = len(config.probe_sites) if config.probe_sites is not None else n_layers + 1
    rows = config.n_pairs * N_PATHS * config.n_steps
    sweep_fields = ("n_pairs", "n_steps")

    persistent = [
        M.tensor(f"clean run of {n} prompts (residual stream at every position, "
                 f"log-probs; {how})",
                 n * T * d + 2 * n * vocab + n * d, ("max_prompts",)),
        M.tensor(f"last-position activations at {n_sites} probed site(s)", n * d * n_sites,
                 ("max_prompts", "probe_sites")),
    ]
    clustering = [
        M.tensor("float64 copies of the n x d_vocab representation (features, k-means, "
                 "gap-statistic SVD and references)", 8 * n * vocab, ("max_prompts",), M.F64),
        M.tensor("silhouette distances (n x n)", 2 * n * n, ("max_prompts",), M.F64),
        M.tensor("Hellinger distances between cluster centres", 2 * config.k_max ** 2 * vocab,
                 ("k_max",), M.F64),
    ]
    if config.representation == "js":
        clustering.append(M.tensor(
            "Jensen-Shannon distances: float64 temporaries of 64 rows x n x d_vocab",
            4 * min(64, n) * n * vocab + n * n, ("max_prompts",), M.F64))
    phases: dict[str, list[MemoryItem]] = {
        "forward of all prompts": [
            M.forward(f"one forward of {n} prompts ({how})", subject, n, T,
                      ("max_prompts",)),
        ],
        "clustering": clustering,
        "probes": [
            M.tensor("float64 copies of one site's activations", 4 * n * d, ("max_prompts",),
                     M.F64),
        ],
        "pair sweep": [
            M.tensor("the pairs' paths (targets) and their clean run's residual stream",
                     config.n_pairs * N_PATHS * d + config.n_pairs * T * d, ("n_pairs",)),
            *M.sweep_engine(subject, n_prompts=config.n_pairs, seq=T,
                            layer=_layer(config, n_layers), rows=rows, R=R, n_readouts=4,
                            fields=("rows_per_forward",), full_only=True,
                            row_fields=sweep_fields),
            M.tensor("the per-path onset statistics and normalised curves", 8 * rows,
                     sweep_fields),
        ],
    }
    return M.peak(persistent, phases)
