"""Generation with interventions: the cached paths (nnsight's one ``generate`` trace,
TransformerLens's own cached ``generate``) give exactly the tokens of the reference that
re-runs the whole sequence for every token, on a tiny model and on the zoo; a remote batch
is one request and equals the local run; EOS is an ordinary token."""

from __future__ import annotations

import pytest
import torch

from mi_ideas.errors import UsageError
from mi_ideas.subject import Batch, Intervention

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["the cat was red", "a dog ran to the big house", "one two"]
ZOO_PROMPTS = ["Mia found a red ball.", "Tom was very sad and", "Once"]
N = 8


@pytest.fixture(scope="module")
def subjects(local, ndif_model_dir):
    """nnsight and TransformerLens subjects of the tiny GPT-2 (``local``: conftest's) and of
    the zoo model."""
    from mi_ideas import load_subject

    return {"tiny": (local, load_subject(f"tl:{ndif_model_dir}")),
            "zoo": (load_subject("zoo:stories-gpt2"), load_subject("tl:zoo:stories-gpt2"))}


def _vector(subject, batch, site, times, seed):
    """A seeded direction ``times`` the mean norm of the residual stream at ``site``."""
    x = subject.activations(batch, [site], positions="last")[site]
    v = torch.randn(subject.d_model, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * times * float(x.norm(dim=-1).mean())


def _rerun_at(subject, batch, n, site, v, which):
    """The re-run reference with the add only at the prompt's positions (``which="prompt"``)
    or only at generated ones (``"new"``): what a cached path that applied the intervention
    only to the prefill, or only to the new tokens, would compute."""
    width = batch.shape[1]
    ids, mask = batch.input_ids, batch.attention_mask
    for _ in range(n):
        where = torch.zeros(ids.shape, dtype=torch.bool)
        if which == "prompt":
            where[:, :width] = True
        else:
            where[:, width:] = True
        ivs = [Intervention(site, "add", v, positions=where)] if where.any() else []
        logits = subject.forward(Batch(ids, mask), interventions=ivs, logits=True).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return ids


@pytest.mark.parametrize("model", ["tiny", "zoo"])
def test_cached_greedy_steered_tokens_equal_the_rerun_and_both_backends(subjects, model):
    nn, tl = subjects[model]
    batch = nn.tokenize(PROMPTS if model == "tiny" else ZOO_PROMPTS)
    site = f"resid_pre.{nn.n_layers // 2}"
    v = _vector(nn, batch, site, 1.5, seed=0)
    steer = [Intervention(site, "add", v)]
    plain = nn.generate(batch, max_new_tokens=N)
    want = nn._generate_rerun(batch, max_new_tokens=N, interventions=steer)
    for s in (nn, tl):
        got = s.generate(batch, max_new_tokens=N, interventions=steer)
        assert got.shape == (len(batch), batch.shape[1] + N)
        assert torch.equal(got[:, :batch.shape[1]], batch.input_ids)
        assert torch.equal(got, want), s.backend
        assert torch.equal(s.generate(batch, max_new_tokens=N), plain), s.backend
    assert torch.equal(tl._generate_rerun(batch, max_new_tokens=N, interventions=steer), want)
    # the steering matters, and only "at every position, every step" gives these tokens:
    # applying it to the prompt only, or to the generated tokens only, gives others
    assert not torch.equal(want, plain)
    for which in ("prompt", "new"):
        assert not torch.equal(_rerun_at(nn, batch, N, site, v, which), want), which


def test_every_kind_of_intervention_and_per_row_values_equal_the_rerun(subjects):
    nn, tl = subjects["tiny"]
    batch = nn.tokenize(PROMPTS)
    per_row = torch.stack([_vector(nn, batch, "resid_post.0", t, seed=i)
                           for i, t in enumerate((0.5, 1.0, 2.0))])  # (batch, d)
    ivs = [Intervention("resid_post.0", "add", per_row),
           Intervention("mlp_in.1", "add", _vector(nn, batch, "mlp_in.1", 1.0, seed=5)),
           Intervention("attn_out.1", "ablate"),
           Intervention("ln_final", "add", _vector(nn, batch, "ln_final", 0.5, seed=6))]
    for s in (nn, tl):
        want = s._generate_rerun(batch, max_new_tokens=N, interventions=ivs)
        assert torch.equal(s.generate(batch, max_new_tokens=N, interventions=ivs), want), s.backend
        mean = s.activations(batch, ["mlp_out.0"])["mlp_out.0"].mean((0, 1))
        replace = [Intervention("mlp_out.0", "replace", mean)]
        assert torch.equal(s.generate(batch, max_new_tokens=N, interventions=replace),
                           s._generate_rerun(batch, max_new_tokens=N, interventions=replace))
    assert torch.equal(nn.generate(batch, max_new_tokens=N, interventions=ivs),
                       tl.generate(batch, max_new_tokens=N, interventions=ivs))


def test_steered_generation_equals_hugging_face_generate_with_a_forward_hook(ndif_model_dir,
                                                                            subjects):
    # an independent implementation: plain HF generate, a pre-hook adding v to block L's input
    from transformers import AutoModelForCausalLM

    nn, _ = subjects["tiny"]
    hf = AutoModelForCausalLM.from_pretrained(str(ndif_model_dir)).eval()
    batch = nn.tokenize(PROMPTS)
    v = _vector(nn, batch, "resid_pre.1", 1.5, seed=0)

    def add(module, args, kwargs):
        return (args[0] + v, *args[1:]), kwargs

    handle = hf.transformer.h[1].register_forward_pre_hook(add, with_kwargs=True)
    try:
        with torch.no_grad():
            theirs = hf.generate(batch.input_ids, attention_mask=batch.attention_mask,
                                 max_new_tokens=N, min_new_tokens=N, do_sample=False,
                                 pad_token_id=nn.pad_token_id)
    finally:
        handle.remove()
    ours = nn.generate(batch, max_new_tokens=N,
                       interventions=[Intervention("resid_pre.1", "add", v)])
    # HF's min_new_tokens suppresses EOS; no EOS is the argmax here, so that changes nothing
    assert not (ours[:, batch.shape[1]:] == nn.tokenizer.eos_token_id).any()
    assert torch.equal(ours, theirs)


def test_sampling_is_seeded_and_the_same_on_every_path(subjects):
    nn, tl = subjects["zoo"]
    batch = nn.tokenize(ZOO_PROMPTS)
    steer = [Intervention("resid_pre.2", "add", _vector(nn, batch, "resid_pre.2", 0.5, seed=1))]
    kw = dict(max_new_tokens=N, interventions=steer, do_sample=True, temperature=1.5)
    a = nn.generate(batch, seed=11, **kw)
    torch.manual_seed(0)  # the global random state plays no part
    assert torch.equal(nn.generate(batch, seed=11, **kw), a)
    assert torch.equal(nn._generate_rerun(batch, seed=11, **kw), a)
    assert torch.equal(tl.generate(batch, seed=11, **kw), a)
    assert not torch.equal(nn.generate(batch, seed=12, **kw), a)
    greedy = nn.generate(batch, max_new_tokens=N, interventions=steer)
    assert not torch.equal(greedy, a)  # temperature 1.5 sampling is not the argmax


def test_eos_is_an_ordinary_token_and_stop_at_eos_pads_after_it(subjects):
    # plant EOS as the argmax everywhere: a large push along its unembedding at ln_final
    nn, tl = subjects["tiny"]
    tok = nn.tokenizer
    assert tok.eos_token_id != nn.pad_token_id  # the tiny model tells them apart
    batch = nn.tokenize(PROMPTS)
    w = nn.model.unembed.weight[tok.eos_token_id].detach()
    push = [Intervention("ln_final", "add", 50 * w / w.norm())]
    want = nn._generate_rerun(batch, max_new_tokens=4, interventions=push)
    assert (want[:, batch.shape[1]:] == tok.eos_token_id).all()  # neither suppressed ...
    for s in (nn, tl):
        got = s.generate(batch, max_new_tokens=4, interventions=push)
        assert torch.equal(got, want), s.backend  # ... nor a reason to stop
        stopped = s.generate(batch, max_new_tokens=4, interventions=push, stop_at_eos=True)
        assert stopped.shape == got.shape
        assert (stopped[:, batch.shape[1]] == tok.eos_token_id).all()
        assert (stopped[:, batch.shape[1] + 1:] == nn.pad_token_id).all()
    # stop_at_eos changes nothing before the first EOS
    plain = nn.generate(batch, max_new_tokens=N)
    if not (plain[:, batch.shape[1]:] == tok.eos_token_id).any():
        assert torch.equal(nn.generate(batch, max_new_tokens=N, stop_at_eos=True), plain)


def test_bad_generation_arguments_are_clear_errors(subjects):
    nn, tl = subjects["tiny"]
    batch = nn.tokenize(PROMPTS)
    v = torch.ones(nn.d_model)
    for s in (nn, tl):
        with pytest.raises(UsageError, match="positions='all'"):
            s.generate(batch, max_new_tokens=2,
                       interventions=[Intervention("resid_pre.1", "add", v, "last")])
        with pytest.raises(UsageError, match="one vector per row"):
            s.generate(batch, max_new_tokens=2, interventions=[
                Intervention("resid_pre.1", "add", torch.ones(3, 5, nn.d_model))])
        with pytest.raises(UsageError, match="non-negative integer"):
            s.generate(batch, max_new_tokens=-1)
        assert torch.equal(s.generate(batch, max_new_tokens=0), batch.input_ids)


def test_remote_generation_is_one_request_and_equals_local(local, remote, ndif_server):
    batch = local.tokenize(PROMPTS)
    steer = [Intervention("resid_pre.1", "add", _vector(local, batch, "resid_pre.1", 1.5, seed=0))]
    for kw in (dict(), dict(do_sample=True, temperature=1.2, seed=4)):
        want = local.generate(batch, max_new_tokens=N, interventions=steer, **kw)
        before = ndif_server.stats()["requests"]
        got = remote.generate(batch, max_new_tokens=N, interventions=steer, **kw)
        assert ndif_server.stats()["requests"] == before + 1  # the whole batch, every step
        assert torch.equal(got, want), kw
    # a server-side failure is the one-paragraph remote error, as for forward
    from mi_ideas.errors import RemoteRunError

    ndif_server.set_mode("error", description="RuntimeError: the GPU caught fire")
    with pytest.raises(RemoteRunError, match="the GPU caught fire"):
        remote.generate(batch, max_new_tokens=2, interventions=steer)
