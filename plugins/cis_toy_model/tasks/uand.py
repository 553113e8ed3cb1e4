"""U-AND: compute many pairwise ANDs of sparse boolean features with few ReLU neurons.

Hänni, Mendel, Vaintrob & Chan 2024 (arXiv 2408.05451). Three models answer the same
task, each a map from the m boolean inputs to one real readout per gate (i, j) whose
target is AND(x_i, x_j) in {0, 1}:

* the trained MLP: readout = W_out ReLU(W_in x + b_in) + b_out, with fewer hidden
  neurons than gates, trained with MSE on the 0/1 targets;
* the linear control: the same architecture and parameter count with the ReLU removed,
  trained identically, so its readout is a linear function of x. A thresholded linear
  classifier *can* separate one AND (x_i + x_j > 1.5), so the task is framed as the
  paper frames it: the AND's *value* must be linearly readable. The best linear readout
  of the value (least squares) stays far below 0.5 on the rare positives, so at the
  fixed threshold its recall collapses;
* the hand-built construction: W ~ Bernoulli(p) (neurons x features), bias -1, so a
  neuron fires iff >= 2 of its inputs are on; gate (i, j) reads the mean activation of
  the neurons connected to both i and j.
"""

from __future__ import annotations

from math import comb

import torch

from ..config import CisConfig
from ..result import CisResult, make_result
from .common import child_seed, nan_to_none, train_adam, uniform_init

DEFINITIONS = {
    "n_gates": "Number of AND gates (feature pairs) the models must compute.",
    "n_neurons": "Hidden ReLU neurons of the trained MLP.",
    "gates_per_neuron": "n_gates / n_neurons (> 1 means more ANDs than neurons).",
    "eval_inputs": "Number of evaluation inputs (every input when enumerated).",
    "mlp_recall_mean": "Trained MLP: mean over gates of recall = P(readout >= threshold | "
    "both inputs on), on the evaluation inputs.",
    "mlp_recall_min": "Trained MLP: lowest per-gate recall.",
    "mlp_fpr_mean": "Trained MLP: mean over gates of false-positive rate = P(readout >= "
    "threshold | AND is 0).",
    "mlp_fpr_one_active": "Trained MLP: false-positive rate over the hard negatives, "
    "(input, gate) pairs with exactly one of the gate's two inputs on (pooled).",
    "mlp_mse": "Trained MLP: mean squared error of the readouts against the 0/1 AND "
    "values, averaged over inputs and gates.",
    "mlp_n_params": "Trained MLP: number of parameters.",
    "mlp_readout_on_mean": "Trained MLP: mean readout over (input, gate) pairs whose AND "
    "is 1 (the target value there is 1).",
    "control_recall_mean": "Linear control (same MLP with the ReLU removed, trained "
    "identically): mean per-gate recall at the same threshold.",
    "control_recall_min": "Linear control: lowest per-gate recall.",
    "control_fpr_mean": "Linear control: mean per-gate false-positive rate.",
    "control_fpr_one_active": "Linear control: false-positive rate on hard negatives.",
    "control_mse": "Linear control: MSE of the readouts against the 0/1 AND values.",
    "control_n_params": "Linear control: number of parameters (equal to the MLP's).",
    "control_readout_on_mean": "Linear control: mean readout where the AND is 1 (target "
    "1); a linear function of x stays far below 1 there.",
    "zero_mse": "MSE of the all-zero predictor (the fraction of (input, gate) pairs whose "
    "AND is 1): the trivial baseline for mlp_mse and control_mse.",
    "mlp_minus_control_recall": "mlp_recall_mean - control_recall_mean.",
    "construction_neurons": "Hand-built construction: number of neurons.",
    "construction_recall_mean": "Hand-built construction (W ~ Bernoulli(p), bias -1, "
    "readout = mean activation of neurons wired to both inputs, on iff >= "
    "construction threshold): mean per-gate recall.",
    "construction_recall_min": "Hand-built construction: lowest per-gate recall.",
    "construction_fpr_mean": "Hand-built construction: mean per-gate false-positive rate.",
    "construction_fpr_one_active": "Hand-built construction: false-positive rate on hard "
    "negatives (exactly one of the gate's inputs on).",
    "construction_uncovered_gates": "Hand-built construction: fraction of gates with no "
    "neuron wired to both inputs (these can never fire).",
}


def choose_gates(m: int, n_gates: int | None, gen: torch.Generator) -> torch.Tensor:
    """The gates as a (G, 2) tensor of feature pairs i < j (all pairs when n_gates is None)."""
    pairs = torch.combinations(torch.arange(m), 2)
    if n_gates is None or n_gates == len(pairs):
        return pairs
    keep = torch.randperm(len(pairs), generator=gen)[:n_gates].sort().values
    return pairs[keep]


def sample_inputs(n: int, cfg: CisConfig, gen: torch.Generator) -> torch.Tensor:
    """n boolean inputs (float 0/1), exactly or on average uand_n_active features on."""
    m, s = cfg.uand_n_features, cfg.uand_n_active
    if cfg.uand_input == "bernoulli":
        return (torch.rand(n, m, generator=gen) < s / m).float()
    on = torch.rand(n, m, generator=gen).argsort(dim=1)[:, :s]
    return torch.zeros(n, m).scatter_(1, on, 1.0)


def eval_inputs(cfg: CisConfig, gen: torch.Generator) -> tuple[torch.Tensor, bool]:
    """Every input when there are few enough (exact inputs), else a sample."""
    m, s = cfg.uand_n_features, cfg.uand_n_active
    if cfg.uand_input == "exact" and comb(m, s) <= cfg.uand_eval_samples:
        on = torch.combinations(torch.arange(m), s)
        return torch.zeros(len(on), m).scatter_(1, on, 1.0), True
    return sample_inputs(cfg.uand_eval_samples, cfg, gen), False


def and_targets(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    return x.index_select(1, gates[:, 0]) * x.index_select(1, gates[:, 1])


@torch.no_grad()
def evaluate(forward, x: torch.Tensor, gates: torch.Tensor, threshold: float,
             chunk: int = 1024) -> dict:
    """Per-gate recall and false-positive rate of ``forward(x) >= threshold``, the readout's
    MSE against the 0/1 AND values and its mean where the AND is 1 (chunked over inputs)."""
    n_gates = len(gates)
    tp, pos, fp, neg = (torch.zeros(n_gates) for _ in range(4))
    fp_one = n_one = sq_err = on_sum = 0.0
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        readout = forward(xb)
        target = and_targets(xb, gates) > 0
        pred = readout >= threshold
        tp += (pred & target).sum(0)
        pos += target.sum(0)
        fp += (pred & ~target).sum(0)
        neg += (~target).sum(0)
        one = (xb.index_select(1, gates[:, 0]) + xb.index_select(1, gates[:, 1])) == 1
        fp_one += float((pred & one).sum())
        n_one += float(one.sum())
        sq_err += float((readout - target.float()).pow(2).sum())
        on_sum += float(readout[target].sum())
    recall = torch.where(pos > 0, tp / pos.clamp(min=1), torch.full_like(tp, float("nan")))
    return {
        "recall": recall,
        "fpr": fp / neg.clamp(min=1),
        "fpr_one_active": fp_one / max(n_one, 1.0),
        "mse": sq_err / (len(x) * n_gates),
        "readout_on_mean": on_sum / max(float(pos.sum()), 1.0),
        "positive_rate": float(pos.sum()) / (len(x) * n_gates),
    }


def summarise(prefix: str, scores: dict) -> dict[str, float]:
    rec = scores["recall"]
    rec = rec[~torch.isnan(rec)]
    return {
        f"{prefix}_recall_mean": float(rec.mean()) if len(rec) else float("nan"),
        f"{prefix}_recall_min": float(rec.min()) if len(rec) else float("nan"),
        f"{prefix}_fpr_mean": float(scores["fpr"].mean()),
        f"{prefix}_fpr_one_active": scores["fpr_one_active"],
    }


def train_model(cfg: CisConfig, gates, relu: bool, init_seed: int, data_seed: int, ctx):
    """Train the MLP (relu=True) or its linear control (relu=False) with MSE."""
    m, d, n_gates = cfg.uand_n_features, cfg.uand_n_neurons, len(gates)
    g_init = torch.Generator().manual_seed(init_seed)
    params = {
        "W_in": uniform_init((d, m), m, g_init),
        "b_in": uniform_init((d,), m, g_init),
        "W_out": uniform_init((n_gates, d), d, g_init),
        "b_out": uniform_init((n_gates,), d, g_init),
    }
    act = torch.relu if relu else (lambda h: h)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return act(x @ params["W_in"].T + params["b_in"]) @ params["W_out"].T + params["b_out"]

    g_data = torch.Generator().manual_seed(data_seed)

    def loss_fn() -> torch.Tensor:
        x = sample_inputs(cfg.uand_batch_size, cfg, g_data)
        return ((forward(x) - and_targets(x, gates)) ** 2).mean()

    desc = "u-and MLP" if relu else "u-and linear control"
    curve = train_adam(list(params.values()), loss_fn, steps=cfg.uand_steps, lr=cfg.uand_lr,
                       ctx=ctx, desc=desc)
    return forward, {k: v.detach() for k, v in params.items()}, curve


def construction(cfg: CisConfig, gates: torch.Tensor, gen: torch.Generator):
    """The hand-built network: connectivity, readout matrix and forward function."""
    d = cfg.uand_construction_neurons or cfg.uand_n_neurons
    wiring = (torch.rand(d, cfg.uand_n_features, generator=gen) < cfg.uand_construction_p).float()
    shared = wiring[:, gates[:, 0]] * wiring[:, gates[:, 1]]  # (d, G): wired to both
    n_shared = shared.sum(0)
    readout = (shared / n_shared.clamp(min=1)).T  # (G, d): mean over shared neurons

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ wiring.T - 1.0) @ readout.T

    return forward, {"W": wiring, "b": -torch.ones(d), "readout": readout}, n_shared


def run(ctx, cfg: CisConfig) -> CisResult:
    from .. import figures

    gen = ctx.generator
    gates = choose_gates(cfg.uand_n_features, cfg.uand_n_gates, gen)
    init_seed, data_seed = child_seed(gen), child_seed(gen)
    x_eval, enumerated = eval_inputs(cfg, gen)
    ctx.log(f"u-and: {cfg.uand_n_features} features, {len(gates)} gates, "
            f"{cfg.uand_n_neurons} neurons, {len(x_eval)} eval inputs")

    metrics: dict[str, float] = {
        "n_gates": float(len(gates)),
        "n_neurons": float(cfg.uand_n_neurons),
        "gates_per_neuron": len(gates) / cfg.uand_n_neurons,
        "eval_inputs": float(len(x_eval)),
    }
    details: dict = {"gates": gates.tolist(), "eval_inputs_enumerated": enumerated}
    per_gate: dict[str, dict] = {}
    trained: dict[str, dict] = {}

    # Same init seed and same batches for the MLP and its control: only the ReLU differs.
    for name, relu in (("mlp", True), ("control", False)):
        forward, params, curve = train_model(cfg, gates, relu, init_seed, data_seed, ctx)
        scores = evaluate(forward, x_eval, gates, cfg.uand_threshold)
        metrics.update(summarise(name, scores))
        metrics[f"{name}_mse"] = scores["mse"]
        metrics[f"{name}_readout_on_mean"] = scores["readout_on_mean"]
        metrics[f"{name}_n_params"] = float(sum(p.numel() for p in params.values()))
        per_gate[name] = scores
        trained[name] = params
        details[f"{name}_loss_curve"] = curve
    metrics["zero_mse"] = per_gate["mlp"]["positive_rate"]  # all-zero predictor's MSE
    metrics["mlp_minus_control_recall"] = metrics["mlp_recall_mean"] - metrics["control_recall_mean"]

    forward, built, n_shared = construction(cfg, gates, torch.Generator().manual_seed(child_seed(gen)))
    scores = evaluate(forward, x_eval, gates, cfg.uand_construction_threshold - 1e-6)
    metrics.update(summarise("construction", scores))
    metrics["construction_neurons"] = float(built["W"].shape[0])
    metrics["construction_uncovered_gates"] = float((n_shared == 0).float().mean())
    per_gate["construction"] = scores

    for name, scores in per_gate.items():
        details[f"{name}_recall_per_gate"] = nan_to_none(scores["recall"].tolist())
        details[f"{name}_fpr_per_gate"] = scores["fpr"].tolist()
    details["construction_neurons_per_gate"] = n_shared.tolist()

    art = ctx.artifacts
    meta = {"task": "u-and", "n_features": str(cfg.uand_n_features), "seed": str(ctx.seed)}
    art.save_tensors("uand_mlp", {**trained["mlp"], "gates": gates}, {**meta, "model": "mlp"})
    art.save_tensors("uand_linear_control", {**trained["control"], "gates": gates},
                     {**meta, "model": "linear control (no ReLU)"})
    art.save_tensors("uand_construction", {**built, "gates": gates},
                     {**meta, "model": "hand-built Bernoulli construction"})
    art.save_json("uand_circuits", {
        "description": "Ground truth: output k of every model is AND(x_i, x_j) for gates[k] "
        "= [i, j]; construction_neurons[k] lists the construction's neurons wired to both.",
        "n_features": cfg.uand_n_features,
        "gates": gates.tolist(),
        "construction_neurons": [
            torch.nonzero(built["readout"][k]).flatten().tolist() for k in range(len(gates))
        ],
    })
    art.save_figure("uand_per_gate", figures.uand_per_gate(per_gate, metrics, cfg))

    return make_result("u-and", metrics, DEFINITIONS, details)
