"""The layernorm-removal idea end to end on the zoo model, with a small schedule.

Checks what must hold if the run is right: the exported stock Hugging Face directory
scores the held-out texts exactly as the LN-free model the run reports; the zoo SAE on
the original model reproduces the zoo manifest's numbers (so the SAE is applied at the
right site); the per-token tables account for every token; and a run killed after a
checkpoint and continued with ``mi-ideas resume`` ends with the uninterrupted run's numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import mi_ideas

SMALL = dict(steps=16, batch_rows=2, n_ctx=64, compare_schedules=["baroni"], eval_every=4,
             n_curve_texts=8, checkpoint_every=4, top_k=5)
DATA = "zoo:stories:16"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return mi_ideas.run("layernorm-removal", out=tmp_path_factory.mktemp("lnr"), quiet=True,
                        data=DATA, **SMALL)


def test_every_run_and_metric_is_there_and_defined(small_run):
    from mi_ideas_plugins.layernorm_removal import LayernormRemoval

    m = small_run.metrics
    assert set(m) == set(small_run.definitions)
    assert set(small_run.schedules) == {"control", "zoo", "baroni", "all-at-once", "all-at-once-last",
                                        "sae-loss"}
    assert small_run.schedules["all-at-once-last"]["removal_steps"]["ln2.0"] == \
        small_run.schedules["zoo"]["last_removal"]
    assert small_run.schedules["control"] is None
    assert m["ln_free_is_fully_removed"] == 1.0
    for h in LayernormRemoval.headlines(small_run):
        assert h.metric in m and (h.control is None or h.control in m)
    assert f"{m['ce_ln_free']:.3f}" in LayernormRemoval.answer(small_run)
    assert (Path(small_run.run_dir) / small_run.figures["loss_curves"]).is_file()


def test_the_exported_hf_directory_scores_the_held_out_texts_as_reported(small_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = small_run.metrics
    assert m["export_hf_max_abs_logit_diff"] < 1e-4
    assert m["export_tl_max_abs_logit_diff"] < 1e-4
    assert m["dla_max_abs_residual"] < 1e-4
    out = Path(small_run.run_dir) / "artifacts" / "ln_free_hf"
    model = AutoModelForCausalLM.from_pretrained(out).eval()   # plain transformers
    tok = AutoTokenizer.from_pretrained(out)
    texts = mi_ideas.load_dataset(DATA, seed=0).texts
    total, count = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = ([tok.eos_token_id] + tok(t, add_special_tokens=False)["input_ids"]
                   + [tok.eos_token_id])[:SMALL["n_ctx"]]
            x = torch.tensor([ids])
            lp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
            total += float(-lp.gather(-1, x[0, 1:, None]).sum())
            count += len(ids) - 1
    assert total / count == pytest.approx(m["ce_ln_free"], abs=1e-4)
    assert int(m["n_tokens"]) == count
    # the saved TransformerLens model (no LayerNorm) computes the same model
    from mi_ideas_plugins.layernorm_removal.model import load_tl_export

    tl = load_tl_export(small_run.run_dir)
    assert tl.cfg.normalization_type is None
    with torch.no_grad():
        assert (tl(x) - model(x).logits).abs().max() < 1e-4


def test_the_sae_on_the_original_model_reproduces_the_zoo_manifest(small_run):
    from mi_ideas import zoo

    want = zoo.entry("stories-gpt2-resid2-topk")["metrics"]
    m = small_run.metrics
    assert m["sae_ev_original"] == pytest.approx(want["explained_variance"], abs=0.02)
    assert m["sae_ce_recovered_original"] > 0.98


def test_the_per_token_tables_account_for_every_token(small_run):
    q1 = json.loads((Path(small_run.run_dir) / small_run.artifacts["per_token_tables"]).read_text())
    n = int(small_run.metrics["n_tokens"])
    assert sum(r["n_tokens"] for r in q1["by_category"]) == n
    assert sum(r["n_tokens"] for r in q1["by_position"]) == n
    # "end-of-text" is a group exactly when some scored target is the closing end-of-text
    # (rows are cut at n_ctx, so a story longer than that has none)
    from transformers import AutoTokenizer

    from mi_ideas import zoo

    tok = AutoTokenizer.from_pretrained(zoo.model_dir())
    closes = any(len(tok(t, add_special_tokens=False)["input_ids"]) + 2 <= SMALL["n_ctx"]
                 for t in mi_ideas.load_dataset(DATA, seed=0).texts)
    assert ("end-of-text" in {r["group"] for r in q1["by_category"]}) == closes
    diffs = [r["diff"] for r in q1["top_tokens"]]
    assert diffs == sorted(diffs, reverse=True) and len(diffs) == SMALL["top_k"]
    for r in q1["by_category"]:
        assert r["ci_low"] <= r["mean_diff"] <= r["ci_high"]


def test_a_killed_run_resumes_to_the_uninterrupted_numbers(small_run, tmp_path, monkeypatch):
    from mi_ideas.cli import main
    from mi_ideas.errors import RunError
    from mi_ideas.runs import load_run
    from mi_ideas_plugins.layernorm_removal import train

    def kill(name, step):
        if name == "zoo" and step == 8:
            raise RuntimeError("killed at step 8 of the zoo run")

    monkeypatch.setattr(train, "_after_checkpoint", kill)
    with pytest.raises((RunError, RuntimeError), match="killed at step 8"):
        mi_ideas.run("layernorm-removal", out=tmp_path, quiet=True, data=DATA, **SMALL)
    monkeypatch.setattr(train, "_after_checkpoint", None)
    (run_dir,) = (tmp_path / "layernorm-removal").iterdir()
    assert (run_dir / "checkpoints" / "train-zoo.safetensors").is_file()
    assert main(["resume", str(run_dir), "-q"]) == 0
    record = load_run(run_dir)
    assert record.provenance.status == "complete"
    assert "zoo: resumed at step 8" in (run_dir / "log.txt").read_text()
    got, want = record.result.metrics, small_run.metrics
    assert set(got) == set(want)
    timing = {k for k in want if "seconds" in k}
    for k in set(want) - timing:
        same = (math.isnan(got[k]) and math.isnan(want[k])) or got[k] == pytest.approx(want[k], abs=1e-6)
        assert same, (k, got[k], want[k])


def test_a_config_over_the_memory_budget_is_refused_before_anything_runs(tmp_path, monkeypatch):
    from mi_ideas.errors import ConfigError, UsageError

    monkeypatch.setenv("MI_IDEAS_MEMORY_BUDGET", "2GB")
    with pytest.raises(UsageError) as err:
        mi_ideas.run("layernorm-removal", out=tmp_path / "runs", quiet=True, data=DATA,
                     batch_rows=20000)
    assert not isinstance(err.value, ConfigError)
    assert "over the memory budget" in str(err.value) and "batch_rows" in str(err.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("values, model, match", [
    ({"steps": 20, "bos_step": 25}, None, "removes its last LayerNorm at step 25"),
    ({}, "tl:zoo:stories-gpt2", "fine-tunes a local Hugging Face GPT-2"),
])
def test_bad_schedules_and_models_are_refused_before_anything_is_written(tmp_path, values, model,
                                                                         match):
    from mi_ideas.errors import UsageError

    kwargs = {"model": model} if model else {}
    with pytest.raises(UsageError, match=match):
        mi_ideas.run("layernorm-removal", out=tmp_path / "runs", quiet=True, data=DATA,
                     **kwargs, **values)
    assert not (tmp_path / "runs").exists()
