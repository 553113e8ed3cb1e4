"""The built-in and example ideas' headline numbers and answer sentences.

Headlines must name metrics the idea really computes (else the page silently falls back),
and each answer must say what planted numbers say, including "no effect" where there is
none."""

from __future__ import annotations

import pytest

from mi_ideas import IdeaResult
from mi_ideas_plugins.cis_toy_model.idea import CisToyModel
from mi_ideas_plugins.cis_toy_model.result import CisResult


def _metric_names(task: str) -> set[str]:
    from mi_ideas_plugins.cis_toy_model.tasks import compressed, tms, uand

    if task == "u-and":
        return set(uand.DEFINITIONS)
    if task == "compressed-computation":
        return set(compressed.DEFINITIONS)
    return set(tms.DEFINITIONS) | {f"dense_{k}" for k in tms.DEFINITIONS}


def _cis(task: str, **metrics: float) -> CisResult:
    return CisResult(task=task, metrics=metrics, definitions={k: "d" for k in metrics},
                     details={"sparse_W": [[0.0] * 5] * 2} if task == "tms" else {})


@pytest.mark.parametrize("task", ["u-and", "compressed-computation", "tms"])
def test_cis_headlines_name_metrics_each_task_computes(task):
    names = _metric_names(task)
    heads = CisToyModel.headlines(_cis(task))
    assert 3 <= len(heads) <= 5
    for h in heads:
        assert h.metric in names and (h.control is None or h.control in names), h


def test_cis_uand_answer_follows_the_numbers():
    good = _cis("u-and", mlp_recall_mean=0.97, control_recall_mean=0.41, mlp_fpr_mean=0.004,
                gates_per_neuron=1.48)
    assert CisToyModel.answer(good) == (
        "The MLP computes 1.48 AND gates per neuron: mean gate recall 97% against 41% for the "
        "linear control, at a false-positive rate of 0.4%.")
    none = _cis("u-and", mlp_recall_mean=0.45, control_recall_mean=0.41, mlp_fpr_mean=0.004,
                gates_per_neuron=1.48)
    assert CisToyModel.answer(none).startswith("No computation in superposition shown")
    noisy = _cis("u-and", mlp_recall_mean=0.9, control_recall_mean=0.4, mlp_fpr_mean=0.3,
                 gates_per_neuron=2)
    assert "does not compute them cleanly" in CisToyModel.answer(noisy)


def test_cis_compressed_answer_separates_label_noise_from_computation():
    def ans(mixing, clean):
        return CisToyModel.answer(_cis("compressed-computation", ratio_mixing=mixing, ratio_clean=clean))

    assert "only when the labels carry the mixing term" in ans(0.8, 1.0)
    assert "not from computation in superposition" in ans(0.8, 1.0)
    assert ans(1.0, 1.01).startswith("No gain over the naive baseline")
    assert "even with clean labels" in ans(0.8, 0.85)


def test_cis_tms_answer_follows_the_geometry():
    base = dict(dims_per_feature=0.4, norm_min=1.0, dense_n_represented=2)
    pentagon = _cis("tms", n_represented=5, gap_max_dev_deg=0.5, **base)
    assert CisToyModel.answer(pentagon) == (
        "With sparse features the model stores 5 features in 2 dimensions in superposition "
        "(0.40 dimensions per feature), as a regular polygon (largest angular-gap deviation "
        "0.5 degrees), against 2 with dense features (the control).")
    skewed = _cis("tms", n_represented=5, gap_max_dev_deg=40.0, **base)
    assert "not as a regular polygon" in CisToyModel.answer(skewed)
    none = _cis("tms", n_represented=2, gap_max_dev_deg=40.0, **base)
    assert CisToyModel.answer(none).startswith("No superposition shown: 2 features")
    assert CisToyModel.answer(_cis("tms")) == ""  # a result without the numbers: no claim


def test_example_ideas_answers_follow_the_numbers():
    from mi_ideas_example import RandomDirections, SteeringKL

    def result(**m):
        return IdeaResult(metrics=m, definitions={k: "d" for k in m})

    r = result(mean_abs_cos=0.2, theory_mean_abs_cos=0.1, max_abs_cos=0.6)
    assert "2.00x the large-d theory" in RandomDirections.answer(r)
    same = result(kl_mean_direction=1.0, kl_random=0.9, kl_ratio_mean_vs_random=1.0 / 0.9,
                  kl_ones=0.0, kl_at_zero=0.0)
    assert "no clear difference" in SteeringKL.answer(same)
    more = result(kl_mean_direction=4.0, kl_random=1.0, kl_ratio_mean_vs_random=4.0,
                  kl_ones=0.0, kl_at_zero=0.0)
    assert "moves the next-token distribution more than random" in SteeringKL.answer(more)
    for idea, res in ((RandomDirections, r), (SteeringKL, more)):
        for h in idea.headlines(res):
            assert h.metric in res.metrics and (h.control is None or h.control in res.metrics)


def test_a_real_tms_run_page_leads_with_the_named_headlines(run_idea):
    record = run_idea("cis-toy-model", task="tms", tms_steps=30, tms_n_instances=2)
    page = (record.path / "report.html").read_text()
    assert "names no headline numbers" not in page
    assert "features represented: sparse vs dense" in page
    assert CisToyModel.answer(record.result) in page and CisToyModel.answer(record.result)
