"""Subjects through the loopback NDIF server equal the local run; one request per batch."""

from __future__ import annotations

import pytest
import torch

from mi_ideas.subject import Intervention, StatsRequest

PROMPTS = ["the cat was red", "a dog ran to the big house", "one two"]


@pytest.fixture(scope="module")
def local(ndif_model_dir):
    from mi_ideas.models import load_subject

    return load_subject(f"hf:{ndif_model_dir}")


@pytest.fixture
def remote(ndif_model_dir, ndif_server, ndif_config):
    from mi_ideas.models import load_subject

    ndif_config.APP.REMOTE_LOGGING = False
    return load_subject(f"hf:{ndif_model_dir}", remote=ndif_server.url)


def test_remote_harvest_interventions_and_stats_equal_local(local, remote, ndif_server):
    batch = local.tokenize(PROMPTS)
    v = torch.randn(local.d_model, generator=torch.Generator().manual_seed(0))
    ivs = [Intervention("resid_pre.1", "add", v, "last"), Intervention("mlp_out.0", "ablate")]
    ref = local.forward(batch, logits=True).logits[:, -1].log_softmax(-1)
    stats = StatsRequest(kl_reference=ref, topk=3, final_norm=True, entropy=True)
    before = ndif_server.stats()["requests"]
    got = remote.forward(batch, read=local.sites, interventions=ivs, stats=stats)
    assert ndif_server.stats()["requests"] == before + 1  # one request for the whole batch
    want = local.forward(batch, read=local.sites, interventions=ivs, stats=stats)
    for site in local.sites:
        assert torch.allclose(got.activations[site], want.activations[site], atol=1e-5), site
    for key in want.stats:
        assert torch.allclose(got.stats[key].float(), want.stats[key].float(), atol=1e-5), key
    assert remote.remote and got.logits is None  # only the statistics came back


def test_rehearsal_equals_local(ndif_model_dir, local):
    from mi_ideas.models import load_subject

    rehearsal = load_subject(f"hf:{ndif_model_dir}", remote="local")
    batch = local.tokenize(PROMPTS)
    a = rehearsal.forward(batch, read=["resid_post.1"], logits=True)
    b = local.forward(batch, read=["resid_post.1"], logits=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.activations["resid_post.1"], b.activations["resid_post.1"], atol=1e-5)
