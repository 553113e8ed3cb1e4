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


# --------------------------------------------------------------------------- training checkpoints

CHECKPOINT = "stories-gpt2@step-0100"


@pytest.fixture(scope="module")
def checkpoint_subjects():
    from mi_ideas import load_subject

    return load_subject(f"zoo:{CHECKPOINT}"), load_subject(f"tl:zoo:{CHECKPOINT}")


def _heldout_rows(n_stories):
    # the first rows of the manifest's held-out set: heldout_seed stories, packed as in training
    from transformers import AutoTokenizer

    from mi_ideas import zoo
    from mi_ideas.data import stories
    from mi_ideas.zoo.build.lm import encode_texts, pack_rows

    man = zoo.manifest()
    tok = AutoTokenizer.from_pretrained(str(zoo.tokenizer_dir()), local_files_only=True)
    texts = [s.text for s in stories.generate_stories(n_stories, man["corpus"]["heldout_seed"])]
    return torch.as_tensor(pack_rows(encode_texts(tok, texts), man["entries"]["stories-gpt2"]["n_ctx"],
                                     tok.eos_token_id))


def _loss(subject, rows):
    logits = subject.forward(rows, logits=True).logits.float()
    return float(torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1)))


def test_zoo_checkpoint_spec_loads_that_checkpoint(subjects, checkpoint_subjects):
    from mi_ideas import zoo

    final = subjects[0]
    ck, ck_tl = checkpoint_subjects
    assert ck.backend == "nnsight" and ck_tl.backend == "transformer_lens"
    assert (ck.n_layers, ck.d_model, ck.d_vocab) == (final.n_layers, final.d_model, final.d_vocab)
    prompt = ck.tokenize(["Once upon a time, there was a kind girl named Mia. One sunny day, Mia"])
    a, b, c = ck.logprobs(prompt), ck_tl.logprobs(prompt), final.logprobs(prompt)
    assert a.dtype == torch.float32  # float16 weights, upcast on load
    assert torch.allclose(a, b, atol=1e-4)  # both back-ends load the same checkpoint
    assert (a - c).abs().max() > 0.5  # and it is not the final model
    # its held-out loss on the first held-out rows matches the manifest's (all rows) figure;
    # neighbouring checkpoints differ by far more than the tolerance
    rows = _heldout_rows(60)
    want = zoo.entry(CHECKPOINT)["metrics"]["heldout_loss"]
    got = _loss(ck, rows)
    neighbours = [c.heldout_loss for c in zoo.checkpoints() if c.name != CHECKPOINT]
    assert abs(got - want) < 0.1, (got, want)
    assert min(abs(got - n) for n in neighbours) > 0.2, (got, neighbours)
    assert _loss(final, rows) < got - 0.2
