"""The Subject interface on both back-ends: positions, interventions, stats, generation."""

from __future__ import annotations

import pytest
import torch

from mi_ideas.errors import UsageError
from mi_ideas.subject import Intervention, StatsRequest
from tests.tiny_models import build_tiny

PROMPTS = ["the cat was red", "a dog ran to the big house", "one two"]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return build_tiny("gpt2", tmp_path_factory.mktemp("tiny") / "gpt2-tiny")


@pytest.fixture(scope="module", params=["nnsight", "tl"])
def subject(request, gpt2_dir):
    from mi_ideas import load_subject

    return load_subject(f"hf:{gpt2_dir}" if request.param == "nnsight" else f"tl:{gpt2_dir}")


def test_tokenize_left_pads_with_bos(subject):
    batch = subject.tokenize(PROMPTS)
    assert batch.input_ids.shape[0] == 3
    lengths = batch.attention_mask.sum(1)
    assert int(lengths.max()) == batch.input_ids.shape[1]
    for row, n in zip(batch.input_ids, lengths):
        assert row[-int(n)] == subject.tokenizer.bos_token_id  # BOS right after the padding
    assert batch.position_ids[1, -1] == int(lengths[1]) - 1


def test_positions_select_the_same_rows(subject):
    batch = subject.tokenize(PROMPTS)
    full = subject.activations(batch, ["resid_post.0"])["resid_post.0"]
    last = subject.activations(batch, ["resid_post.0"], positions="last")["resid_post.0"]
    some = subject.activations(batch, ["resid_post.0"], positions=[1, 2])["resid_post.0"]
    masked = subject.activations(batch, ["resid_post.0"], positions=batch.attention_mask.bool())["resid_post.0"]
    assert torch.equal(last, full[:, -1]) and torch.equal(some, full[:, [1, 2]])
    assert torch.equal(masked, full[batch.attention_mask.bool()])
    assert masked.shape == (int(batch.attention_mask.sum()), subject.d_model)


def test_activation_patching_replaces_the_whole_run(subject):
    # Replacing resid_pre.1 everywhere with another prompt's makes every later site and
    # the logits those of the other prompt: the intervention really replaces the stream.
    a, b = subject.tokenize(["the cat was red"]), subject.tokenize(["a dog ran home"])
    assert a.shape == b.shape
    clean_b = subject.forward(b, read=["resid_pre.1"], logits=True)
    patched = subject.forward(a, logits=True, interventions=[
        Intervention("resid_pre.1", "replace", clean_b.activations["resid_pre.1"][0])])
    # the first block's attention saw a's tokens, but resid_pre.1 is all that later blocks read
    assert torch.allclose(patched.logits, clean_b.logits, atol=1e-5)


def test_reads_are_copies_and_interventions_apply_before_reads(subject):
    batch = subject.tokenize(PROMPTS)
    v = torch.randn(subject.d_model, generator=torch.Generator().manual_seed(0))
    clean = subject.activations(batch, ["resid_post.0", "resid_pre.1"])
    out = subject.forward(batch, read=["resid_post.0", "resid_pre.1"],
                          interventions=[Intervention("resid_pre.1", "add", v, "last")])
    # resid_post.0 is the same tensor as resid_pre.1 in the model; the earlier read is unchanged
    assert torch.allclose(out.activations["resid_post.0"], clean["resid_post.0"])
    diff = out.activations["resid_pre.1"] - clean["resid_pre.1"]
    assert torch.allclose(diff[:, -1], v.expand(3, -1), atol=1e-5)
    assert diff[:, :-1].abs().max() == 0


def test_zero_and_mean_ablation(subject):
    batch = subject.tokenize(PROMPTS)
    mean = subject.activations(batch, ["mlp_out.0"])["mlp_out.0"].mean((0, 1))
    zero = subject.forward(batch, read=["mlp_out.0"], interventions=[
        Intervention("mlp_out.0", "ablate")]).activations["mlp_out.0"]
    meaned = subject.forward(batch, read=["mlp_out.0"], interventions=[
        Intervention("mlp_out.0", "ablate", mean, positions="last")]).activations["mlp_out.0"]
    assert zero.abs().max() == 0
    assert torch.allclose(meaned[:, -1], mean.expand(3, -1))


def test_derived_statistics(subject):
    batch = subject.tokenize(PROMPTS)
    clean = subject.forward(batch, read=["resid_post.1"], positions="last", logits=True)
    ref = clean.logits[:, -1].log_softmax(-1)
    final = clean.activations["resid_post.1"]
    s0 = subject.forward(batch, stats=StatsRequest(kl_reference=ref, topk=5, entropy=True,
                                                   final_norm=True, l2_reference=final)).stats
    assert s0["l2"].abs().max() < 1e-5
    assert s0["kl"].abs().max() < 1e-5  # the same run: no divergence
    assert torch.equal(s0["topk_ids"], ref.topk(5).indices)
    assert torch.allclose(s0["entropy"], -(ref.exp() * ref).sum(-1), atol=1e-5)
    assert torch.allclose(s0["final_norm"], clean.activations["resid_post.1"].norm(dim=-1), atol=1e-5)
    v = 5 * torch.randn(subject.d_model, generator=torch.Generator().manual_seed(1))
    s1 = subject.forward(batch, read=["resid_post.1"], positions="last", interventions=[
        Intervention("resid_pre.1", "add", v)], stats=StatsRequest(kl_reference=ref,
                                                                   l2_reference=final))
    assert (s1.stats["kl"] > 1e-3).all()
    assert torch.allclose(s1.stats["l2"], (s1.activations["resid_post.1"] - final).norm(dim=-1),
                          atol=1e-5)


def test_greedy_generation_matches_hugging_face(subject, gpt2_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(gpt2_dir)).eval()
    batch = subject.tokenize(["the cat"])
    ours = subject.generate(batch, max_new_tokens=5)
    with torch.no_grad():
        theirs = hf.generate(batch.input_ids, attention_mask=batch.attention_mask,
                             max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)
    steered = subject.generate(batch, max_new_tokens=5, interventions=[
        Intervention("resid_pre.1", "add", 30 * torch.randn(subject.d_model, generator=torch.Generator().manual_seed(2)))])
    assert not torch.equal(steered, ours)


def test_bad_sites_and_interventions_are_clear_errors(subject):
    with pytest.raises(UsageError, match="unknown site 'resid.1'"):
        subject.activations(PROMPTS, ["resid.1"])
    with pytest.raises(UsageError, match="has 2 blocks"):
        subject.activations(PROMPTS, ["resid_pre.7"])
    with pytest.raises(UsageError, match="needs a value"):
        Intervention("resid_pre.0", "add")
    assert subject.activations(PROMPTS, ["blocks.1.hook_resid_pre"]).keys() == {"blocks.1.hook_resid_pre"}


def test_backends_agree_on_every_site(gpt2_dir):
    from mi_ideas import load_subject

    a, b = load_subject(f"hf:{gpt2_dir}"), load_subject(f"tl:{gpt2_dir}")
    batch = a.tokenize(PROMPTS)
    mask = batch.attention_mask.bool()
    ra, rb = a.activations(batch, a.sites, positions=mask), b.activations(batch, b.sites, positions=mask)
    for site in a.sites:
        assert torch.allclose(ra[site], rb[site], atol=1e-4), site


def test_model_objects_are_accepted(gpt2_dir):
    from nnsight import TransformersModel
    from transformer_lens import HookedTransformer

    from mi_ideas.backends.nnsight_backend import ARCHITECTURES
    from mi_ideas.backends.tl_backend import build_from_hf_dir
    from mi_ideas import load_subject

    nn_model = TransformersModel(str(gpt2_dir), task="text-generation", dispatch=True,
                                 rename=ARCHITECTURES["gpt2"].rename)
    assert load_subject(nn_model).backend == "nnsight"
    # a user's model without mi-ideas's aliases is wrapped again, sharing the same weights
    plain = TransformersModel(str(gpt2_dir), task="text-generation", dispatch=True)
    wrapped = load_subject(plain)
    assert wrapped.model._module is plain._module
    batch = wrapped.tokenize(PROMPTS)
    with torch.no_grad():
        want = plain._module(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids).logits
    assert torch.allclose(wrapped.forward(batch, logits=True).logits, want, atol=1e-5)
    tl_model = build_from_hf_dir(gpt2_dir)
    assert isinstance(tl_model, HookedTransformer)
    assert load_subject(tl_model).backend == "transformer_lens"
    with pytest.raises(UsageError, match="TransformerLens models run locally only"):
        load_subject(tl_model, remote="ndif")
    with pytest.raises(UsageError, match="has no known prefix"):
        load_subject("gpt2")
    with pytest.raises(UsageError, match="cannot use a builtins.int"):
        load_subject(3)


@pytest.mark.parametrize("layer", [0, 1])
def test_starting_at_a_layer_equals_the_full_run(subject, layer):
    batch = subject.tokenize(PROMPTS)
    v = torch.randn(subject.d_model, generator=torch.Generator().manual_seed(3))
    site = f"resid_pre.{layer}"
    clean = subject.forward(batch, read=[site], logits=True)
    full = subject.forward(batch, read=["resid_post.1"], logits=True,
                           interventions=[Intervention(site, "add", v, "last")])
    resid = clean.activations[site].clone()
    resid[:, -1] += v
    started = subject.forward(batch, read=["resid_post.1"], logits=True,
                              start_at=site, start_resid=resid)
    assert torch.allclose(started.logits, full.logits, atol=1e-5)
    assert torch.allclose(started.activations["resid_post.1"], full.activations["resid_post.1"],
                          atol=1e-5)
    with pytest.raises(UsageError, match="come before resid_pre.1"):
        subject.forward(batch, read=["mlp_out.0"], start_at="resid_pre.1", start_resid=resid)
