"""activation-plateaus on the zoo model: the symmetry checks of the radial option, the
controls, the renamed families, the switches, and the verdicts' wording.

Planted plateaus (the ground truth the onset metrics stand on) are in
tests/test_ap_planted.py; this file runs the idea on the zoo model and its SAE.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIRS = ["dir_isotropic", "dir_cov", "dir_sae_latent", "dir_sae_inactive", "dir_real_diff"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import mi_ideas
    from mi_ideas.host import Host

    # One run serves the radial-symmetry, control and bases assertions.
    return mi_ideas.run(
        "activation-plateaus", out=tmp_path_factory.mktemp("runs"), quiet=True, host=Host(),
        n_prompts=20, n_pool=150, n_steps=20,
        families=["toward_real", "toward_iso_sample", *DIRS], layers=[],
    )


def _small(tmp_path, **values):
    import mi_ideas

    base = dict(n_prompts=10, n_pool=60, n_steps=8, step_modes=["absolute"], layers=[],
                steering=False, sae_reconstruction=False, reinit_control=False,
                compare_bases=False)
    return mi_ideas.run("activation-plateaus", out=tmp_path, quiet=True, **{**base, **values})


def test_after_projection_no_family_has_a_radial_component(result):
    m = result.metrics
    for fam in DIRS:
        assert abs(m[f"{fam}.cos_x_mean"]) < 0.05, fam
        assert m[f"{fam}.cos_x_std"] < 0.05, fam
    for base in ("real", "cov_sample", "sae_synthetic"):
        assert abs(m[f"bases.{base}.dir_isotropic.cos_x_mean"]) < 0.05
    # the steering vector and its controls get the same treatment
    for name in ("steering", "steering.dir_isotropic", "steering.dir_real_diff"):
        assert abs(m[f"{name}.cos_x_mean"]) < 0.05, name
    assert "cmp.sae_recon.kl.vs.dir_isotropic.p_wilcoxon" in m
    # target paths are not projected: unit(t − x) towards an isotropic sample points at the
    # pool mean, and the result says so next to its numbers
    assert m["toward_iso_sample.cos_x_mean"] < -0.3
    for fam in ("toward_real", "toward_iso_sample", *DIRS):
        assert result.definitions[f"{fam}.cos_x_mean"]


def test_kept_sae_directions_have_opposite_radial_signs(tmp_path):
    plus = _small(tmp_path, families=["dir_sae_latent"], radial="keep", sae_sign="plus")
    minus = _small(tmp_path, families=["dir_sae_latent"], radial="keep", sae_sign="minus")
    cp, cm = plus.metrics["dir_sae_latent.cos_x_mean"], minus.metrics["dir_sae_latent.cos_x_mean"]
    assert cp > 0.1 and cm < -0.1 and cp == pytest.approx(-cm, rel=1e-5)


def test_match_gives_every_family_the_same_cosines(tmp_path):
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    r = _small(tmp_path, families=["dir_isotropic", "dir_sae_latent"], radial="match",
               sae_sign="plus", n_paths=4)
    art = {k: load_file(str(Path(r.run_dir) / v)) for k, v in r.artifacts.items()}
    pooled = art["radial_target_cos"]["cos_x"]
    # raw: isotropic ≈ 0, +w_i ≈ +0.4; the pooled reference cosines hold both
    assert abs(float(art["absolute_dir_isotropic"]["raw_cos_x"].mean())) < 0.05
    assert float(art["absolute_dir_sae_latent"]["raw_cos_x"].mean()) > 0.2
    for fam in ("dir_isotropic", "dir_sae_latent"):
        c = art[f"absolute_{fam}"]["cos_x"].flatten()
        # every matched cosine is one of the pooled reference cosines
        assert float((c[:, None] - pooled[None]).abs().min(1).values.max()) < 1e-4, fam
    assert r.metrics["dir_isotropic.cos_x_mean"] > 0.08  # moved off 0 towards the pool


def test_the_reinitialised_model_has_no_plateau(result):
    m = result.metrics
    # a random network responds smoothly: JS starts quadratically and no path is step-like
    assert m["reinit.toward_real.step_like_fraction"] <= 0.1
    assert 1.6 < m["reinit.toward_real.loglog_slope_js_median"] < 2.5
    assert m["reinit.toward_real.onset50_js_median"] > 0.5


def test_real_bases_sit_deeper_in_their_plateaus_than_gaussian_bases(result):
    m = result.metrics
    # the finding that survived the review (Giglemiani et al.), at the prompt level: paired
    # over prompts, Gaussian bases cross sooner, with the 95% interval below zero
    assert m["cmp.bases.dir_isotropic.cov_sample.vs.real.ci_high"] < 0
    assert m["cmp.bases.dir_isotropic.cov_sample.vs.real.n_units"] == 20
    assert result.details["comparisons"]["cmp.bases.dir_isotropic.cov_sample.vs.real"][
        "test"] == "wilcoxon"


def test_old_family_names_are_refused_with_what_they_were():
    from mi_ideas.config import build_config
    from mi_ideas.errors import ConfigError
    from mi_ideas_plugins.plateaus.activation_plateaus import ActivationPlateaus

    with pytest.raises(ConfigError) as err:
        build_config(ActivationPlateaus.Config, values={"families": ["real", "isotropic"]},
                     idea="activation-plateaus")
    msg = str(err.value)
    assert "toward_real" in msg and "toward_iso_sample" in msg and "dir_isotropic" in msg
    assert "pool mean" in msg


def test_preset_validates_and_is_smaller():
    from mi_ideas_plugins.plateaus.activation_plateaus import ActivationPlateaus as A

    quick = A.Config(**A.presets["quick"])
    default = A.Config()
    assert quick.n_prompts < default.n_prompts and quick.n_steps < default.n_steps
    assert quick.radial == default.radial and quick.kl_threshold == default.kl_threshold


def test_answer_says_no_difference_when_the_test_says_so():
    from mi_ideas import IdeaResult
    from mi_ideas_plugins.plateaus.activation_plateaus import ActivationPlateaus as A

    def result(diff, lo, hi, p):
        r = IdeaResult()
        pre = "cmp.bases.dir_isotropic.cov_sample.vs.real"
        for k, v in (("mean_diff", diff), ("ci_low", lo), ("ci_high", hi), ("p_wilcoxon", p),
                     ("n_units", 40)):
            r.add(f"{pre}.{k}", v, "planted")
        return r

    assert A.answer(result(-3.0, -4.0, -2.0, 1e-4)).startswith(
        "paths from Gaussian bases cross the KL threshold sooner than paths from real bases")
    assert A.answer(result(-0.5, -1.5, 0.4, 0.3)).startswith(
        "no difference between paths from Gaussian bases and paths from real bases")
    # a small p with an interval that still covers 0 is not a verdict either
    assert A.answer(result(-0.5, -1.5, 0.1, 0.04)).startswith("no difference")
    heads = A.headlines(result(-3.0, -4.0, -2.0, 1e-4))
    assert 3 <= len(heads) <= 5 and all(h.control for h in heads)


def test_grokking_and_e2e_switches_report_under_their_prefixes(tmp_path):
    r = _small(tmp_path, families=["toward_real"], step_modes=["relative"], n_prompts=4,
               n_pool=30, grokking=True, grokking_steps=40, e2e_sae=True, e2e_steps=10,
               data="zoo:stories:120")
    m = r.metrics
    assert {"grokking.final_test_acc", "grokking.no_wd.final_test_acc",
            "grokking.final.onset50", "grokking.no_wd.final.bunching"} <= set(m)
    assert {"e2e.e2e.spliced_kl", "e2e.mse.spliced_kl", "e2e.n_plateaus"} <= set(m)
    g = r.details["grokking"]
    assert len(g["grokking"]["train_acc"]) == len(g["grokking"]["step"]) >= 2
    assert all(r.definitions[k] for k in m)
    assert "grokking" in r.figures


def test_importing_the_plugin_is_cheap():
    code = ("import sys, mi_ideas_plugins.plateaus, mi_ideas_plugins.plateaus.activation_plateaus;"
            "print(sorted({'torch', 'numpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sweeps_share_one_plan_and_never_download_distributions(tmp_path, monkeypatch):
    """The relative (JS / TV) and absolute sweeps of every family run as one plan on the
    last-position engine, in chunks of rows_per_forward, and no model call asks for the
    next-token distribution (top-k over the vocabulary) or for logits of the sweep rows."""
    import math

    from mi_ideas.subject import Subject

    calls = {"last_token": [], "forward_topk": [], "forward_logits_rows": []}
    fast, full = Subject.forward_last_token, Subject.forward

    def spy_fast(self, cache, rows, site, x, *, stats=None, logits=False):
        calls["last_token"].append((len(x), bool(stats is not None and stats.js)))
        assert not logits
        return fast(self, cache, rows, site, x, stats=stats, logits=logits)

    def spy_full(self, inputs, **kw):
        stats = kw.get("stats")
        if stats is not None:
            calls["forward_topk"].append(stats.topk)
        return full(self, inputs, **kw)

    monkeypatch.setattr(Subject, "forward_last_token", spy_fast)
    monkeypatch.setattr(Subject, "forward", spy_full)
    R, n, m, s = 64, 6, 2, 8
    _small(tmp_path, n_prompts=n, n_pool=40, n_steps=s, n_paths=m, rows_per_forward=R,
           step_modes=["relative", "absolute"], families=["toward_real", "dir_isotropic"])
    assert max(calls["forward_topk"], default=0) == 0
    rows = n * m * s * 3  # toward_real relative + absolute, dir_isotropic absolute
    sweep_calls = [c for c in calls["last_token"] if c[0] > 4]  # not the engine's check rows
    assert len(sweep_calls) == math.ceil(rows / R)  # one plan: no half-empty forwards
    assert any(js for _, js in sweep_calls)  # JS asked of the engine, not computed here
