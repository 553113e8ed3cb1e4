"""The embedded zoo model through both back-ends, offline: same sites, logits, interventions."""

from __future__ import annotations

import pytest
import torch

from mi_ideas.subject import Intervention, StatsRequest


@pytest.fixture(scope="module")
def subjects():
    from mi_ideas import load_subject

    return load_subject("zoo:stories-gpt2"), load_subject("tl:zoo:stories-gpt2")


@pytest.fixture(scope="module")
def batch(subjects):
    from mi_ideas import load_dataset

    texts = [t[:200] for t in load_dataset("zoo:stories:4", seed=3).texts]
    texts += load_dataset("template:furniture_grid").texts[:3]
    return subjects[0].tokenize(texts, max_length=64)


def test_zoo_loads_offline_through_both_backends(subjects):
    nn, tl = subjects
    assert (nn.backend, tl.backend) == ("nnsight", "transformer_lens")
    assert (nn.n_layers, nn.d_model, nn.d_vocab) == (tl.n_layers, tl.d_model, tl.d_vocab)
    assert nn.sites == tl.sites and len(nn.sites) == 6 * nn.n_layers + 2


def test_backends_agree_at_every_site_and_on_logits(subjects, batch):
    nn, tl = subjects
    mask = batch.attention_mask.bool()
    a = nn.forward(batch, read=nn.sites, positions=mask)
    b = tl.forward(batch, read=tl.sites, positions=mask)
    for site in nn.sites:
        assert torch.allclose(a.activations[site], b.activations[site], atol=1e-4), site


def test_backends_agree_on_an_intervention(subjects, batch):
    nn, tl = subjects
    clean = nn.logprobs(batch)
    v = torch.randn(nn.d_model, generator=torch.Generator().manual_seed(0))
    ivs = [Intervention("resid_pre.2", "add", 3 * v / v.norm(), positions="last"),
           Intervention("mlp_out.1", "ablate")]
    request = StatsRequest(kl_reference=clean, topk=5)
    a = nn.forward(batch, interventions=ivs, stats=request, logits=True)
    b = tl.forward(batch, interventions=ivs, stats=request, logits=True)
    mask = batch.attention_mask.bool()  # padded positions are not part of any text
    assert torch.allclose(a.logits[mask], b.logits[mask], atol=1e-4)
    assert torch.allclose(a.stats["kl"], b.stats["kl"], atol=1e-5)
    assert a.stats["kl"].mean() > 1e-2  # the intervention did something
    assert torch.equal(a.stats["topk_ids"], b.stats["topk_ids"])
