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
    # direction of the same norm (2.6x at seed 0; seeds 0-3 give 2.0-2.8).
    assert m["kl_ratio_mean_vs_random"] > 1.3
    assert m["n_rows"] > 1000 and 0 < m["mean_norm_fraction"] < 1
    # ctx.log went to log.txt in the run directory.
    assert "resid_pre.2" in (record.path / "log.txt").read_text()


def test_direction_and_kl_recomputed_independently(run_idea):
    """Recompute the mean at resid_pre.2 with subject.activations (every real token but BOS),
    and one steered KL by hand from log-probabilities."""
    import torch

    from mi_ideas.subject import Intervention

    record = run_idea("example-steering-kl", **SMALL)
    saved = record.load_artifact("steering_kl")
    direction = saved["dir_mean_direction"][0]

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
    assert torch.nn.functional.cosine_similarity(direction, x.mean(0), dim=0) > 0.9999
    unit = float(x.norm(dim=1).mean())
    assert record.result.metrics["activation_norm"] == pytest.approx(unit, rel=1e-4)

    # KL(clean || steered) at the last token of the first 4 prompts, mean direction, length 2.
    batch = subject.tokenize(texts[:4], max_length=32)
    clean = subject.logprobs(batch)
    steered = subject.logprobs(batch, interventions=[
        Intervention("resid_pre.2", "add", 2.0 * unit * direction)])
    by_hand = (clean.exp() * (clean - steered)).sum(-1)
    assert torch.allclose(saved["kl_mean_direction"][-1, 0, :4], by_hand, rtol=1e-3, atol=1e-5)


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


def test_the_code_shown_in_writing_a_plugin_is_this_code():
    """docs/writing-a-plugin.md shows this idea's config and class body; they must be copies."""
    import re
    from pathlib import Path

    import mi_ideas_example.steering_kl as module

    doc = Path(__file__).resolve().parents[3] / "writing-a-plugin.md"
    if not doc.is_file():
        pytest.skip("the example package was copied out of the mi-ideas repository")
    source = Path(module.__file__).read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    shown = [b for b in blocks if "SteeringKLConfig" in b]
    assert len(shown) == 2
    for block in shown:
        assert block in source, block.splitlines()[0]
