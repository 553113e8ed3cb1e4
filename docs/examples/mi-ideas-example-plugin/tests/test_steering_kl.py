"""Tests of the model-using example idea, on the embedded zoo model (a GPT-2 with LayerNorm).

Each check would fail if the idea's code were wrong: the planted checks (a zero vector and
the LayerNorm-invisible all-ones direction move nothing), the harvested mean direction
recomputed independently, the treatment against its norm-matched control, and nnsight's
remote rehearsal giving the local numbers.
"""

from __future__ import annotations

import pytest

import mi_ideas

SMALL = dict(n_prompts=8, batch_size=4, lengths=[1.0, 2.0], n_random=3)


def test_declares_a_model_data_and_remote(mi_ideas_host):
    cls = mi_ideas_host.ideas["example-steering-kl"]
    assert cls.uses_model and cls.uses_data and cls.remote
    assert (cls.default_model, cls.default_data) == ("zoo:stories-gpt2", "zoo:stories:64")
    assert mi_ideas_host.plugin_of("example-steering-kl").name == "example"


def test_planted_checks_and_the_mean_direction_against_its_control(run_idea):
    record = run_idea("example-steering-kl", **SMALL)
    m, curves = record.result.metrics, record.result.details["kl_curves"]
    assert set(m) == set(record.result.definitions)
    # Planted: adding nothing changes nothing; LayerNorm cannot see the all-ones direction.
    assert m["kl_at_zero"] == pytest.approx(0.0, abs=1e-6)
    assert abs(m["kl_ones"]) < 1e-5 and max(map(abs, curves["ones"])) < 1e-5
    # The steering does something, more the longer the vector.
    assert m["kl_random"] > 0.1
    for name in ("random", "mean_direction"):
        assert curves[name][0] == pytest.approx(0.0, abs=1e-6)
        assert curves[name] == sorted(curves[name]), name
    # The finding on the zoo model: the mean direction moves the output more than a random
    # direction of the same norm (about 2x at length 2; seeds 0-3 give 1.7-3.0).
    assert m["kl_ratio_mean_vs_random"] > 1.3
    assert m["n_rows"] > 1000 and 0 < m["mean_norm_fraction"] < 1
    # ctx.log went to log.txt in the run directory.
    assert "resid_pre.2" in (record.path / "log.txt").read_text()


def test_the_mean_direction_is_the_mean_of_the_datasets_token_activations(run_idea):
    """Recompute the mean at resid_pre.2 with subject.activations (every real token but BOS)."""
    import torch

    record = run_idea("example-steering-kl", **SMALL)
    saved = record.load_artifact("steering_kl")["dir_mean_direction"][0]

    subject = mi_ideas.load_subject("zoo:stories-gpt2")
    texts = mi_ideas.load_dataset("zoo:stories:64", seed=0).texts
    rows = []
    for start in range(0, len(texts), 16):
        batch = subject.tokenize(texts[start:start + 16], max_length=32)
        mask = batch.attention_mask.bool().clone()
        mask[torch.arange(len(batch)), mask.float().argmax(1)] = False  # drop BOS
        rows.append(subject.activations(batch, ["resid_pre.2"], positions=mask)["resid_pre.2"])
    x = torch.cat(rows)
    assert len(x) == record.result.metrics["n_rows"]
    assert torch.nn.functional.cosine_similarity(saved, x.mean(0), dim=0) > 0.9999
    assert record.result.metrics["activation_norm"] == pytest.approx(float(x.norm(dim=1).mean()), rel=1e-4)


def test_remote_rehearsal_gives_the_local_numbers(mi_ideas_host, tmp_path, monkeypatch):
    local = mi_ideas.run("example-steering-kl", out=tmp_path, quiet=True, **SMALL)
    monkeypatch.setenv("MI_IDEAS_CACHE", str(tmp_path / "fresh-cache"))  # harvest again, remotely
    remote = mi_ideas.run("example-steering-kl", out=tmp_path, quiet=True, remote="local", **SMALL)
    assert remote.provenance.model["remote"] == "local"
    assert remote.metrics.keys() == local.metrics.keys()
    for key, value in local.metrics.items():
        assert remote.metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_harvest_without_uses_data_is_refused_when_the_idea_registers():
    from mi_ideas import hookimpl
    from mi_ideas.host import Host
    from mi_ideas_example.steering_kl import SteeringKL

    class NoData(SteeringKL):
        name = "example-no-data"
        uses_data = False

        def run(self, ctx, config):
            return ctx.harvest(["resid_pre.2"])

    class Plugin:
        @hookimpl
        def mi_ideas_register_ideas(self, register):
            register(NoData)

    host = Host(load_entrypoints=False, strict=False)
    host.register_plugin(Plugin(), name="no-data")
    assert "example-no-data" not in host.ideas
    info = host.plugins["no-data"]
    assert info.status == "failed" and "uses_data = True" in info.error
