"""Tests of the cis-toy-model idea: each one checks a claim the idea's results rest on.

Small sizes and fixed seeds; the whole file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from pydantic import ValidationError

from mi_ideas import RunContext
from mi_ideas_plugins.cis_toy_model import CisToyModel, mi_ideas_register_ideas
from mi_ideas_plugins.cis_toy_model.config import CisConfig


def run(tmp_path, seed=0, **overrides):
    ctx = RunContext(seed=seed, run_dir=tmp_path, quiet=True)
    return CisToyModel().run(ctx, CisConfig(**overrides))


def test_registers_the_idea_and_every_metric_has_a_definition(tmp_path):
    registered = []
    mi_ideas_register_ideas(registered.append)
    assert registered == [CisToyModel]
    assert CisToyModel.name == "cis-toy-model" and CisToyModel.size == "medium"
    assert all(t in CisToyModel.description() for t in ("u-and", "compressed-computation", "tms"))
    result = run(tmp_path, task="tms", tms_steps=20, tms_n_instances=2)
    assert result.metrics and set(result.metrics) == set(result.definitions)
    assert all(isinstance(v, float) for v in result.metrics.values())


def test_importing_the_plugin_does_not_import_heavy_libraries():
    code = (
        "import sys, mi_ideas_plugins.cis_toy_model as p; p.CisToyModel.Config(); "
        "print(sorted(m for m in ('torch', 'numpy', 'matplotlib', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_trained_uand_computes_the_ands_and_the_linear_control_cannot(tmp_path):
    r = run(
        tmp_path,
        uand_n_features=12,
        uand_n_neurons=48,
        uand_steps=1000,
        uand_batch_size=256,
        uand_construction_neurons=200,
    )
    m = r.metrics
    assert m["n_gates"] == 66 and m["n_neurons"] < m["n_gates"]  # superposition: fewer neurons
    assert m["eval_inputs"] == math.comb(12, 3)  # every input enumerated
    # Trained MLP: high recall at a low false-positive rate, from a linear readout.
    assert m["mlp_recall_mean"] >= 0.9
    assert m["mlp_fpr_mean"] <= 0.02 and m["mlp_fpr_one_active"] <= 0.05
    assert m["mlp_mse"] < 0.5 * m["zero_mse"]
    # Same architecture without the ReLU, same parameters, same training: fails clearly.
    assert m["control_n_params"] == m["mlp_n_params"]
    assert m["control_recall_mean"] <= 0.2
    assert m["mlp_minus_control_recall"] >= 0.7
    assert m["control_readout_on_mean"] < 0.5 < m["mlp_readout_on_mean"]
    assert m["control_mse"] > 1.5 * m["mlp_mse"]
    # The hand-built construction on the same task (200 neurons, p = 0.25).
    assert m["construction_recall_mean"] >= 0.99
    assert m["construction_fpr_mean"] <= 0.05

    # Artifacts: weights and ground-truth labels agree with the config.
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / r.artifacts["uand_mlp"]))
    assert weights["W_in"].shape == (48, 12) and weights["W_out"].shape == (66, 48)
    assert weights["gates"].shape == (66, 2)
    circuits = json.loads((tmp_path / r.artifacts["uand_circuits"]).read_text())
    assert circuits["gates"] == weights["gates"].tolist()
    assert all(len(n) > 0 for n in circuits["construction_neurons"])
    assert (tmp_path / r.figures["uand_per_gate"]).stat().st_size > 0


def test_bernoulli_construction_at_the_reference_size():
    """100 features, 3 active, 4,950 gates, 200 neurons: recall 1 at a few % false positives."""
    import torch

    from mi_ideas_plugins.cis_toy_model.tasks import uand

    cfg = CisConfig(uand_n_features=100, uand_n_neurons=200, uand_eval_samples=2000)
    gen = torch.Generator().manual_seed(0)
    gates = uand.choose_gates(100, None, gen)
    x, enumerated = uand.eval_inputs(cfg, gen)
    assert len(gates) == 4950 and not enumerated

    forward, built, n_shared = uand.construction(cfg, gates, gen)
    scores = uand.evaluate(forward, x, gates, cfg.uand_construction_threshold - 1e-6)
    m = uand.summarise("c", scores)
    assert (n_shared > 0).all()
    assert m["c_recall_mean"] == 1.0
    assert m["c_fpr_mean"] < 0.01 and m["c_fpr_one_active"] < 0.03

    # Too sparse wiring leaves gates without a shared neuron: the metric does catch it.
    sparse = CisConfig(uand_n_features=100, uand_n_neurons=200, uand_construction_p=0.05)
    forward, _, n_shared = uand.construction(sparse, gates, gen)
    scores = uand.evaluate(forward, x, gates, 1 - 1e-6)
    assert (n_shared == 0).float().mean() > 0.5
    assert uand.summarise("c", scores)["c_recall_mean"] < 0.6


def test_compressed_computation_gain_comes_from_the_mixing_term(tmp_path):
    r = run(
        tmp_path,
        task="compressed-computation",
        cc_steps=400,
        cc_lr=1e-2,
        cc_batch_size=512,
        cc_eval_samples=50_000,
    )
    m = r.metrics
    # The evaluation is right: the naive model's clean MSE matches p (n - h) / (6 n).
    assert m["naive_mse_clean"] == pytest.approx(m["naive_mse_clean_analytic"], rel=0.05)
    # With the embedding's mixing term in the labels, the trained model beats naive ...
    assert m["ratio_mixing"] < 0.85
    assert m["ratio_mixing_vs_naive_clean"] < 0.93
    # ... and with clean labels it does not: the control.
    assert m["ratio_clean"] > 0.95
    # The mixed-label model's neurons read the top eigenvectors of the mixing matrix.
    assert m["mixing_subspace_frac_mixing"] > m["mixing_subspace_frac_clean"] + 0.2
    assert set(r.artifacts) == {"cc_models", "cc_circuits"}


def test_tms_puts_five_features_on_a_pentagon_and_the_dense_control_does_not(tmp_path):
    r = run(tmp_path, task="tms", tms_steps=1000, tms_n_instances=4)
    m = r.metrics
    assert m["n_represented"] == 5
    gaps = r.details["sparse_gaps_deg"]
    assert len(gaps) == 5 and all(abs(g - 72.0) < 3.0 for g in gaps)
    assert m["gap_max_dev_deg"] < 3.0
    assert 0.9 < m["norm_min"] <= m["norm_max"] < 1.3
    assert m["max_cos"] == pytest.approx(math.cos(math.radians(72)), abs=0.05)
    # Superposition: 2.5 features per dimension sparse, 1 dense (p = 1).
    assert m["dims_per_feature"] < 0.45
    assert m["dense_dims_per_feature"] > 0.9
    assert m["dense_gap_max_dev_deg"] > 20


def test_same_seed_same_numbers_and_different_seed_different_numbers(tmp_path):
    kw = dict(task="tms", tms_steps=50, tms_n_instances=2)
    a = run(tmp_path / "a", seed=1, **kw).metrics
    b = run(tmp_path / "b", seed=1, **kw).metrics
    c = run(tmp_path / "c", seed=2, **kw).metrics
    assert a == b
    assert a["loss"] != c["loss"]


@pytest.mark.parametrize(
    "bad",
    [
        {"task": "xor"},
        {"uand_n_neurons": 0},
        {"uand_construction_p": 1.5},
        {"tms_feature_prob": 0.0},
        {"cc_mixing_scale": -0.1},
        {"uand_n_active": 30, "uand_n_features": 20},
        {"uand_n_gates": 1000, "uand_n_features": 20},
        {"cc_n_neurons": 200},
        {"uand_n_neuronz": 10},
    ],
)
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValidationError):
        CisConfig(**bad)


def test_config_is_frozen_and_documented():
    cfg = CisConfig()
    with pytest.raises(ValidationError):
        cfg.task = "tms"
    assert all(f.description for f in CisConfig.model_fields.values())


def test_memory_estimate_refuses_an_exploding_config_before_any_work(tmp_path):
    import mi_ideas
    from mi_ideas.errors import UsageError
    from mi_ideas_plugins.cis_toy_model.config import CisConfig
    from mi_ideas_plugins.cis_toy_model.idea import CisToyModel

    for task in ("u-and", "compressed-computation", "tms"):
        items = CisToyModel.estimate_memory(CisConfig(task=task))
        assert 0 < sum(i.bytes for i in items) < 2**30  # the defaults are small
    # 2000 features: ~2M gates; one training batch's read-out alone is 512 x 2M floats
    big = CisConfig(uand_n_features=2000)
    total = sum(i.bytes for i in CisToyModel.estimate_memory(big))
    assert total >= 512 * (2000 * 1999 // 2) * 4
    with pytest.raises(UsageError, match=r"GiB at its peak.*Lower .*uand_n_gates"):
        mi_ideas.run("cis-toy-model", uand_n_features=2000, memory_budget="4GB", out=tmp_path,
                     quiet=True)
    assert not (tmp_path / "cis-toy-model").exists()
