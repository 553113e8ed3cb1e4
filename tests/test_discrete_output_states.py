"""Tests of the discrete-output-states idea: each checks a claim its results rest on.

Planted-state toys for the clustering and the choice of k (with no-structure controls),
the probe against its shuffled-label control on the zoo model, and one small end-to-end
run through the host. Fixed seeds; the file runs in well under a minute.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mi_ideas_plugins.plateaus.discrete_output_states.config import DiscreteOutputStatesConfig


def planted(k: int, n_per: int = 20, vocab: int = 200, noise: float = 0.6, seed: int = 0):
    """Log-prob rows from ``k`` planted output states: each row's logits are its state's
    random logits plus Gaussian noise (``k = 0``: pure noise, no states at all)."""
    rng = np.random.default_rng(seed)
    if k == 0:
        y = np.zeros(n_per * 3, dtype=int)
        logits = rng.normal(0, 3.0, (len(y), vocab))
    else:
        y = np.repeat(np.arange(k), n_per)
        logits = rng.normal(0, 3.0, (k, vocab))[y] + rng.normal(0, noise, (len(y), vocab))
    lp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return lp, y


def test_importing_the_idea_does_not_import_heavy_libraries():
    code = (
        "import sys; from mi_ideas_plugins.plateaus.discrete_output_states import "
        "DiscreteOutputStates as I; I.Config(); "
        "print(sorted(m for m in ('torch', 'numpy', 'matplotlib', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("k_true", [3, 5])
@pytest.mark.parametrize("representation,criterion", [
    ("hellinger", "silhouette"), ("hellinger", "gap"), ("logprob", "silhouette"),
    ("js", "silhouette"),
])
def test_recovers_the_planted_number_of_output_states(k_true, representation, criterion):
    from sklearn.metrics import adjusted_rand_score

    from mi_ideas_plugins.plateaus.discrete_output_states.cluster import select_k

    lp, y = planted(k_true, seed=k_true)
    sel = select_k(lp, k_max=8, representation=representation, criterion=criterion,
                   n_init=4, n_refs=4)
    assert sel.k == k_true
    assert adjusted_rand_score(y, sel.labels) > 0.99
    assert sel.best_silhouette > 0.5


@pytest.mark.parametrize("criterion", ["silhouette", "gap"])
@pytest.mark.parametrize("k_true", [0, 1])
def test_no_structure_is_not_claimed(k_true, criterion):
    """Pure noise (k_true = 0) or one state plus noise (1): the answer is k = 1."""
    from mi_ideas_plugins.plateaus.discrete_output_states.cluster import select_k

    lp, _ = planted(k_true, n_per=60 if k_true else 20, seed=11)
    sel = select_k(lp, k_max=8, criterion=criterion, n_init=4, n_refs=4)
    assert sel.k == 1
    assert np.all(sel.labels == 0)
    assert sel.best_silhouette < 0.25  # what k-means finds in noise is no structure


def test_pairs_respect_the_partitions():
    from mi_ideas_plugins.plateaus.discrete_output_states.run import make_pairs

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 5)
    null = rng.permutation(labels)
    p = make_pairs(labels, null, 40, rng)
    ref = p["ref"]
    assert np.all(p["within"] != ref) and np.all(p["null_within"] != ref)
    assert np.all(labels[p["within"]] == labels[ref])
    assert np.all(labels[p["across"]] != labels[ref])
    assert np.all(null[p["null_within"]] == null[ref])
    assert np.all(null[p["null_across"]] != null[ref])


@pytest.fixture(scope="module")
def zoo():
    import torch

    from mi_ideas import load_dataset
    from mi_ideas import load_subject

    torch.set_num_threads(1)
    return load_subject("zoo:stories-gpt2"), load_dataset


def test_probe_beats_its_shuffled_label_control_on_the_zoo_model(zoo):
    from mi_ideas_plugins.plateaus.discrete_output_states.cluster import probe_accuracy, select_k

    subject, load_dataset = zoo
    ds = load_dataset("template:person_adjective")
    out = subject.forward(ds.texts, read=["resid_pre.0", "resid_post.1"], positions="last",
                          logits=True)
    lp = out.logits[:, -1].float().log_softmax(-1).numpy()
    sel = select_k(lp, k_min=8, k_max=13, n_init=3, n_refs=2)
    assert sel.k >= 8  # the trait decides the continuation: many states, not one
    chance = 1 / sel.k
    after = probe_accuracy(out.activations["resid_post.1"].numpy(), sel.labels, n_shuffles=2)
    assert after.accuracy >= 0.9
    assert after.shuffled_mean <= after.majority + 0.1  # the control is near chance
    assert after.accuracy > after.shuffled_mean + 0.6
    # At resid_pre.0 the last position holds only the name token's embedding, which
    # carries nothing about the trait: the probe itself falls to chance there.
    before = probe_accuracy(out.activations["resid_pre.0"].numpy(), sel.labels, n_shuffles=1)
    assert before.accuracy <= before.majority + 0.1 <= chance + 0.2


def test_a_family_with_one_output_state_gives_k_1_on_the_zoo_model(zoo):
    """emotion_event ends "<name> felt": the next token is an intensity word with a nearly
    fixed distribution whatever the event, so no discrete states may be claimed."""
    from mi_ideas_plugins.plateaus.discrete_output_states.cluster import select_k

    subject, load_dataset = zoo
    ds = load_dataset("template:emotion_event")
    lp = subject.logprobs(ds.texts).numpy()
    assert select_k(lp, k_max=8, n_init=3, n_refs=2).k == 1



def test_runs_end_to_end_on_the_zoo(run_idea, mi_ideas_host):
    assert mi_ideas_host.plugin_of("discrete-output-states").name == "plateaus"
    record = run_idea("discrete-output-states", k_max=13, kmeans_restarts=3, gap_references=2,
                      probe_sites=["resid_pre.0", "resid_post.1"], probe_shuffles=1,
                      n_pairs=24, n_steps=9)
    assert record.provenance.status == "complete"
    r = record.result
    m = r.metrics
    assert set(m) == set(r.definitions) and all(isinstance(v, float) for v in m.values())
    assert r.k == m["k"] >= 8 and m["ami_trait"] > 0.8 and abs(m["ami_name"]) < 0.3
    assert m["probe_acc_resid_post_1"] > m["probe_shuffled_resid_post_1"] + 0.6
    for path in ("within", "across", "within_far", "null_within", "null_across"):
        for metric in ("sharpness_kl", "sharpness_l2", "onset10_js", "jump_js"):
            v = m[f"{path}.{metric}_median"]
            assert math.isnan(v) or v > 0
        assert m[f"{path}.n_excluded_kl"] <= m[f"{path}.n_excluded_js"] + 24
    # Same-cluster pairs never leave their output state; other-cluster pairs (nearly) always
    # do, and patching the last position alone carries most of the partner's output state.
    assert m["frac_crossing_within"] == 0 and m["frac_crossing_across"] >= 0.9
    assert m["endpoint_transfer_across"] > 0.5
    # The verdict follows from its interval, and the answer from the verdict and the test.
    lo, hi = m["across.jump_js_ci_low"], m["across.jump_js_ci_high"]
    assert lo <= m["across.jump_js_median"] <= hi
    assert m["plateau_like"] == (1.0 if hi < 0.15 else 0.0 if lo > 0.15 else 0.5)
    answer = mi_ideas_host.ideas["discrete-output-states"].answer(r)
    assert ("NOT plateau-like" in answer) == (m["plateau_like"] == 0.0)
    p = m["cmp.jump_js.across_vs_within_far.wilcoxon_p"]
    assert ("no difference from distance-matched" in answer) == (p >= 0.05)
    # the null partition (random clusters of the real sizes) must show no difference
    assert m["cmp.jump_js.null_across_vs_null_within.ci_low"] < 0 \
        < m["cmp.jump_js.null_across_vs_null_within.ci_high"]
    run_dir = Path(r.run_dir)
    for rel in (*r.artifacts.values(), *r.figures.values()):
        assert (run_dir / rel).is_file()
    assert {"k_selection", "probe_accuracy", "sharpness", "median_curves"} <= set(r.figures)
    clusters = json.loads((run_dir / r.artifacts["clusters"]).read_text())
    assert len(clusters["prompts"]) == m["n_prompts"] == 96


def test_config_rejects_contradictions():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DiscreteOutputStatesConfig(k_min=5, k_max=3)
    with pytest.raises(ValidationError):
        DiscreteOutputStatesConfig(representation="js", criterion="gap")
    fields = DiscreteOutputStatesConfig.model_fields
    assert all(f.description for f in fields.values())
