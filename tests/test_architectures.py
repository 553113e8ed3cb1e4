"""Architecture support: GPT-2, GPT-NeoX (Pythia), Llama, Mistral, Qwen2, Qwen3, Gemma-2.

Every check runs on a tiny random-weight model built locally from its transformers config
(``tests/tiny_models.py``), and each would fail if the site mapping were wrong:

- ground truth comes from plain PyTorch hooks on the Hugging Face modules themselves (no
  nnsight), so the nnsight back-end's ``rename=`` aliases and its choice of module
  input / output per site are checked independently;
- interventions are compared with the same edit made by a PyTorch hook;
- TransformerLens, where it can convert the architecture offline, must agree with nnsight.

docs/models-support.md is the support matrix these tests check.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from mi_ideas.errors import UsageError
from tests.tiny_models import ARCH_NAMES, build_tiny

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the cat is on the red car and the dog", "a dog", "paris is in france"]
ATOL = 1e-5
TL_ATOL = 1e-4
PARALLEL = {"gpt_neox"}  # Pythia-style: attention and MLP both read resid_pre
#: architectures TransformerLens 3.x converts offline from a local directory
TL_CONVERTS = {"gpt2", "gpt_neox", "gpt_neox_sequential", "llama", "mistral", "qwen2", "qwen3"}
INTERVENE_KINDS = ("resid_pre", "attn_out", "mlp_in", "mlp_out", "resid_post")

# Where each site lives in the *Hugging Face* module tree, written out here independently
# of mi_ideas.backends.nnsight_backend.ARCHITECTURES: (blocks, final norm, {kind: (module
# in a block, "in" | "out")}). mlp_in is taken as the output of the norm before the MLP
# (what the MLP sees), resid_mid as that norm's input; block input / output are
# resid_pre / resid_post.
_LLAMA_HF = ("model.layers", "model.norm", {
    "attn_out": ("self_attn", "out"), "resid_mid": ("post_attention_layernorm", "in"),
    "mlp_in": ("post_attention_layernorm", "out"), "mlp_out": ("mlp", "out")})
HF_SITES: dict[str, tuple[str, str, dict[str, tuple[str, str]]]] = {
    "gpt2": ("transformer.h", "transformer.ln_f", {
        "attn_out": ("attn", "out"), "resid_mid": ("ln_2", "in"),
        "mlp_in": ("ln_2", "out"), "mlp_out": ("mlp", "out")}),
    "gpt_neox": ("gpt_neox.layers", "gpt_neox.final_layer_norm", {
        "attn_out": ("attention", "out"), "resid_mid": ("post_attention_layernorm", "in"),
        "mlp_in": ("post_attention_layernorm", "out"), "mlp_out": ("mlp", "out")}),
    "llama": _LLAMA_HF,
    "mistral": _LLAMA_HF,
    "qwen2": _LLAMA_HF,
    "qwen3": _LLAMA_HF,
    # Gemma-2 normalises each sublayer's output before adding it to the residual stream.
    "gemma2": ("model.layers", "model.norm", {
        "attn_out": ("post_attention_layernorm", "out"),
        "resid_mid": ("pre_feedforward_layernorm", "in"),
        "mlp_in": ("pre_feedforward_layernorm", "out"),
        "mlp_out": ("post_feedforward_layernorm", "out")}),
}


# -- fixtures: one tiny model of each architecture per session --------------------------


class Tiny:
    """Builds and caches, per architecture: the directory, nnsight subject, HF model, TL."""

    def __init__(self, factory: pytest.TempPathFactory):
        self.factory = factory
        self.cache: dict[tuple[str, str], Any] = {}

    def _get(self, kind: str, name: str, make):
        key = (kind, name)
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def dir(self, name: str) -> Path:
        # Neutral directory names: TransformerLens guesses architectures from paths that
        # contain "llama" / "gemma" (see docs/models-support.md).
        return self._get("dir", name, lambda: build_tiny(name, self.factory.mktemp("tiny")))

    def subject(self, name: str):
        from mi_ideas.backends.nnsight_backend import load_nnsight

        return self._get("nnsight", name, lambda: load_nnsight(self.dir(name)))

    def hf(self, name: str):
        from transformers import AutoModelForCausalLM

        def make():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return AutoModelForCausalLM.from_pretrained(str(self.dir(name))).eval()

        return self._get("hf", name, make)

    def tl(self, name: str):
        from mi_ideas.backends.tl_backend import load_tl

        return self._get("tl", name, lambda: load_tl(self.dir(name)))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    return Tiny(tmp_path_factory)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(params=ARCH_NAMES)
def arch(request) -> str:
    return request.param


def _batch(subject):
    batch = subject.tokenize(TEXTS)
    assert not batch.attention_mask.all(), "the test batch must be left-padded"
    return batch


# -- ground truth from PyTorch hooks on the Hugging Face model ----------------------------


def _hf_layout(hf) -> tuple[list, Any, list[dict[str, tuple[Any, str]]]]:
    blocks_path, final_path, per_block = HF_SITES[hf.config.model_type]
    blocks = list(hf.get_submodule(blocks_path))
    layout = [{kind: (block.get_submodule(mod), where) for kind, (mod, where) in per_block.items()}
              for block in blocks]
    for block, sites in zip(blocks, layout):
        sites["resid_pre"] = (block, "in")
        sites["resid_post"] = (block, "out")
    return blocks, hf.get_submodule(final_path), layout


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _hf_run(hf, batch, edits: dict[tuple[Any, str], Any] | None = None):
    """HF forward with hooks: returns (captures keyed by (module, where), logits).

    ``edits`` maps (module, where) to a function applied to that tensor in the forward.
    """
    edits = {(id(m), w): f for (m, w), f in (edits or {}).items()}
    blocks, final, layout = _hf_layout(hf)
    places = {(id(m), w): (m, w) for sites in layout for m, w in sites.values()}
    places[(id(final), "out")] = (final, "out")
    captured: dict[tuple[int, str], torch.Tensor] = {}
    handles = []

    def pre_hook(key):
        def hook(module, args, kwargs):
            if args:
                x = args[0]
            else:
                x = kwargs["hidden_states"]
            if key in edits:
                x = edits[key](x)
                if args:
                    args = (x, *args[1:])
                else:
                    kwargs = {**kwargs, "hidden_states": x}
            captured[key] = x.detach().clone()
            return args, kwargs
        return hook

    def post_hook(key):
        def hook(module, args, output):
            x = _first(output)
            if key in edits:
                x = edits[key](x)
                output = (x, *output[1:]) if isinstance(output, tuple) else x
            captured[key] = x.detach().clone()
            return output
        return hook

    try:
        for key, (module, where) in places.items():
            if where == "in":
                handles.append(module.register_forward_pre_hook(pre_hook(key), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(post_hook(key)))
        with torch.no_grad():
            out = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids)
    finally:
        for h in handles:
            h.remove()
    return captured, out.logits


def _hf_sites(hf, batch, parallel: bool) -> dict[str, torch.Tensor]:
    captured, logits = _hf_run(hf, batch)
    blocks, final, layout = _hf_layout(hf)
    sites = {}
    for layer, places in enumerate(layout):
        for kind, (module, where) in places.items():
            if kind == "resid_mid" and parallel:
                continue
            sites[f"{kind}.{layer}"] = captured[(id(module), where)]
    sites["ln_final"] = captured[(id(final), "out")]
    sites["logits"] = logits
    return sites


def _assert_close(a, b, mask, atol, what):
    a, b = a[mask].float(), b[mask].float()
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    err = (a - b).abs().max().item()
    assert err <= atol, f"{what}: max abs difference {err:.3g} > {atol}"


# -- loading and the renaming check -------------------------------------------------------


def test_load_and_check_renaming(arch, tiny):
    s = tiny.subject(arch)
    parallel = arch in PARALLEL
    assert (s.n_layers, s.d_model, s.d_vocab) == (2, 32, 100)
    assert s.parallel_residual is parallel
    assert ("resid_mid.0" in s.sites) is (not parallel)
    m = s.model
    assert len(m.layers) == 2
    for name in ("attn", "mlp", "ln_1", "ln_2"):
        assert hasattr(m.layers[1], name), name
    assert hasattr(m, "ln_final") and hasattr(m, "unembed") and hasattr(m, "embed")
    s.check_renaming()  # runs every site and checks the widths


def test_renaming_check_catches_a_wrong_table(tiny, monkeypatch):
    from mi_ideas.backends import nnsight_backend as nb

    broken = {k: v for k, v in nb.ARCHITECTURES["llama"].rename.items() if k != "model.layers"}
    monkeypatch.setitem(nb.ARCHITECTURES, "llama", nb.Architecture(broken))
    with pytest.raises(UsageError, match="renaming check failed.*no 'layers' alias"):
        nb.load_nnsight(tiny.dir("llama"))


def test_unsupported_architecture_is_a_usage_error(tiny):
    from mi_ideas.backends.nnsight_backend import ARCHITECTURES, load_nnsight

    with pytest.raises(UsageError) as info:
        load_nnsight(tiny.dir("opt"))
    msg = str(info.value)
    assert "'opt'" in msg
    for name in ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma2",
                 *ARCHITECTURES):
        assert name in msg


# -- reads: every site against PyTorch hooks on the HF model ------------------------------


def test_sites_match_hf_hooks(arch, tiny):
    s, hf = tiny.subject(arch), tiny.hf(arch)
    batch = _batch(s)
    truth = _hf_sites(hf, batch, parallel=arch in PARALLEL)
    assert set(truth) == set(s.sites)
    got = s.forward(batch, read=s.sites).activations
    mask = batch.attention_mask.bool()
    for site in s.sites:
        _assert_close(got[site], truth[site], mask, ATOL, f"{arch} {site}")
    # resid_pre.1 is resid_post.0, and mlp_in is not the raw residual stream.
    _assert_close(got["resid_pre.1"], got["resid_post.0"], mask, 0.0, "resid_pre.1 vs resid_post.0")
    assert not torch.allclose(got["mlp_in.0"][mask], got["resid_pre.0"][mask], atol=1e-2)


def test_logits_match_hf(arch, tiny):
    s, hf = tiny.subject(arch), tiny.hf(arch)
    batch = _batch(s)
    with torch.no_grad():
        want = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                  position_ids=batch.position_ids).logits
    out = s.forward(batch, logits=True, read=["logits"])
    mask = batch.attention_mask.bool()
    _assert_close(out.logits, want, mask, ATOL, f"{arch} logits")
    _assert_close(out.activations["logits"], want, mask, ATOL, f"{arch} logits site")
    # The last real token of every row, unpadded, gives the same logits as in the batch.
    for i, text in enumerate(TEXTS):
        one = s.forward(s.tokenize(text), logits=True).logits[0, -1]
        assert (one - out.logits[i, -1]).abs().max().item() <= ATOL


def test_residual_decomposition(arch, tiny):
    s = tiny.subject(arch)
    batch = _batch(s)
    acts = s.forward(batch, read=s.sites).activations
    mask = batch.attention_mask.bool()
    for layer in range(s.n_layers):
        a = {k: acts[f"{k}.{layer}"] for k in
             ("resid_pre", "attn_out", "mlp_out", "resid_post")}
        if s.parallel_residual:
            _assert_close(a["resid_post"], a["resid_pre"] + a["attn_out"] + a["mlp_out"], mask, ATOL,
                   f"{arch} parallel resid_post.{layer}")
        else:
            mid = acts[f"resid_mid.{layer}"]
            _assert_close(mid, a["resid_pre"] + a["attn_out"], mask, ATOL, f"{arch} resid_mid.{layer}")
            _assert_close(a["resid_post"], mid + a["mlp_out"], mask, ATOL, f"{arch} resid_post.{layer}")
    if s.parallel_residual:
        for name in ("resid_mid.0", "blocks.1.hook_resid_mid", "blocks.0.hook_mlp_in"):
            with pytest.raises(UsageError, match="parallel attention and MLP.*no resid_mid"):
                s.forward(batch, read=[name])


# -- interventions: the same edit made by a PyTorch hook ----------------------------------


@pytest.mark.parametrize("kind", INTERVENE_KINDS + ("ln_final",))
def test_add_intervention_matches_hf_hook(arch, kind, tiny):
    from mi_ideas.subject import Intervention

    s, hf = tiny.subject(arch), tiny.hf(arch)
    batch = _batch(s)
    site = "ln_final" if kind == "ln_final" else f"{kind}.1"
    v = torch.randn(s.d_model, generator=torch.Generator().manual_seed(7))
    base = s.forward(batch, logits=True).logits
    out = s.forward(batch, logits=True, interventions=[Intervention(site, "add", v)],
                    read=["resid_post.0"])
    blocks, final, layout = _hf_layout(hf)
    place = (final, "out") if kind == "ln_final" else layout[1][kind]
    _, want = _hf_run(hf, batch, edits={place: lambda x: x + v})
    mask = batch.attention_mask.bool()
    _assert_close(out.logits, want, mask, ATOL, f"{arch} add at {site}")
    assert (out.logits - base)[mask].abs().max() > 1e-2, f"add at {site} did not change logits"
    # a read before the intervention point is unaffected by it
    clean = s.forward(batch, read=["resid_post.0"]).activations["resid_post.0"]
    assert torch.equal(out.activations["resid_post.0"], clean)


def test_last_position_intervention_changes_only_last_logits(arch, tiny):
    from mi_ideas.subject import Intervention

    s = tiny.subject(arch)
    batch = _batch(s)
    v = torch.randn(s.d_model, generator=torch.Generator().manual_seed(8))
    base = s.forward(batch, logits=True).logits
    iv = Intervention(f"resid_post.{s.n_layers - 1}", "add", v, positions="last")
    out = s.forward(batch, logits=True, interventions=[iv]).logits
    assert torch.allclose(out[:, :-1], base[:, :-1], atol=1e-6, rtol=0)
    assert ((out[:, -1] - base[:, -1]).abs().amax(-1) > 1e-2).all()


def test_resid_mid_intervention_is_a_usage_error(tiny):
    from mi_ideas.subject import Intervention

    s = tiny.subject("llama")
    with pytest.raises(UsageError, match="not intervene on it"):
        s.forward("a b", interventions=[Intervention("resid_mid.0", "ablate")])


# -- TransformerLens ------------------------------------------------------------------------

TL_ARCHS = sorted(TL_CONVERTS)
TL_SEQUENTIAL = sorted(TL_CONVERTS - {"gpt_neox"})  # Pythia-style blocks have no resid_mid


@pytest.mark.parametrize("arch", TL_ARCHS)
def test_transformer_lens_agrees_with_nnsight(arch, tiny):
    tl, s = tiny.tl(arch), tiny.subject(arch)
    assert tl.sites == s.sites
    assert tl.parallel_residual is s.parallel_residual
    batch = _batch(s)
    want = s.forward(batch, read=s.sites).activations
    got = tl.forward(batch, read=s.sites).activations
    mask = batch.attention_mask.bool()
    for site in s.sites:
        _assert_close(got[site], want[site], mask, TL_ATOL, f"{arch} TL vs nnsight {site}")


@pytest.mark.parametrize("arch", TL_ARCHS)
def test_transformer_lens_logits_and_interventions_agree(arch, tiny):
    from mi_ideas.subject import Intervention

    tl, s = tiny.tl(arch), tiny.subject(arch)
    batch = _batch(s)
    gen = torch.Generator().manual_seed(9)
    v = [torch.randn(s.d_model, generator=gen) for _ in range(5)]
    # one edit at every kind of site, each enough to move the logits on its own
    ivs = [Intervention("resid_pre.0", "add", v[0]), Intervention("attn_out.0", "ablate"),
           Intervention("mlp_in.1", "add", v[1]), Intervention("mlp_out.1", "add", v[2]),
           Intervention("resid_post.1", "add", v[3], positions="last"),
           Intervention("ln_final", "add", v[4], positions=[0, 1])]
    mask = batch.attention_mask.bool()
    for interventions in ((), ivs):
        want = s.forward(batch, logits=True, interventions=interventions).logits
        got = tl.forward(batch, logits=True, interventions=interventions).logits
        _assert_close(got, want, mask, TL_ATOL, f"{arch} TL logits ({len(interventions)} edits)")


@pytest.mark.parametrize("arch", TL_SEQUENTIAL)
def test_transformer_lens_resid_mid_intervention(arch, tiny):
    """TL can edit resid_mid (nnsight cannot); adding there equals adding to attn_out."""
    from mi_ideas.subject import Intervention

    tl, s = tiny.tl(arch), tiny.subject(arch)
    assert not s.parallel_residual
    batch = _batch(s)
    v = torch.randn(s.d_model, generator=torch.Generator().manual_seed(10))
    got = tl.forward(batch, logits=True, interventions=[Intervention("resid_mid.0", "add", v)])
    want = s.forward(batch, logits=True, interventions=[Intervention("attn_out.0", "add", v)])
    _assert_close(got.logits, want.logits, batch.attention_mask.bool(), TL_ATOL, f"{arch} resid_mid")


def test_transformer_lens_ignores_the_directory_name(tiny, tmp_path):
    import shutil

    from mi_ideas.backends.tl_backend import load_tl

    named = shutil.copytree(tiny.dir("qwen2"), tmp_path / "my-llama-finetune")
    tl, s = load_tl(named), tiny.subject("qwen2")
    batch = _batch(s)
    _assert_close(tl.forward(batch, logits=True).logits, s.forward(batch, logits=True).logits,
           batch.attention_mask.bool(), TL_ATOL, "qwen2 in a directory named *llama*")


@pytest.mark.parametrize("name", sorted(set(ARCH_NAMES) - TL_CONVERTS))
def test_transformer_lens_refuses_clearly(name, tiny):
    from mi_ideas.backends.tl_backend import load_tl

    with pytest.raises(UsageError, match=rf"TransformerLens could not convert the '{name}'.*"
                                         r"Use the nnsight back-end"):
        load_tl(tiny.dir(name))


# -- the support matrix -----------------------------------------------------------------------


def test_support_matrix_lists_every_architecture():
    from mi_ideas.backends.nnsight_backend import ARCHITECTURES

    text = (ROOT / "docs" / "models-support.md").read_text()
    assert "tests/test_architectures.py" in text
    rows = set(re.findall(r"^\| `([a-z0-9_]+)`", text, re.M))
    assert set(ARCHITECTURES) <= rows, f"missing from the matrix: {set(ARCHITECTURES) - rows}"
