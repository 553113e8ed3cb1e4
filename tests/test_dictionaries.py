"""Dictionaries by spec come back as SAELens's own objects, mapped to standard sites."""

from __future__ import annotations

import pytest
import torch

from mi_ideas import load_dictionary
from mi_ideas.dictionaries import output_site_of, site_of
from mi_ideas.errors import UsageError
from tests.tiny_models import build_tiny


def _save_sae(path, hook_name="blocks.1.hook_resid_pre", d_in=32, transcoder=False):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import Transcoder, TranscoderConfig

    meta = SAEMetadata(hook_name=hook_name, model_name="tiny")
    if transcoder:
        meta.hook_name_out = "blocks.1.hook_mlp_out"
        sae = Transcoder(TranscoderConfig(d_in=d_in, d_sae=64, d_out=d_in, metadata=meta,
                                          apply_b_dec_to_input=False))
    else:
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=64, metadata=meta))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(generator=torch.Generator().manual_seed(0))
    sae.save_model(str(path))
    return sae


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from mi_ideas import load_subject

    return load_subject(f"hf:{build_tiny('gpt2', tmp_path_factory.mktemp('d') / 'gpt2-tiny')}")


def test_local_directory_loads_as_the_saelens_class(tmp_path, subject):
    from sae_lens import StandardSAE

    original = _save_sae(tmp_path / "sae")
    sae = load_dictionary(str(tmp_path / "sae"), subject)
    assert isinstance(sae, StandardSAE)
    assert site_of(sae) == "resid_pre.1"
    x = subject.activations("the cat", [site_of(sae)])[site_of(sae)]
    assert torch.allclose(sae(x), original(x))  # same weights: SAELens's forward still works


def test_transcoder_maps_both_sites(tmp_path, subject):
    from sae_lens.saes.transcoder import Transcoder

    _save_sae(tmp_path / "tc", hook_name="blocks.1.hook_mlp_in", transcoder=True)
    tc = load_dictionary(str(tmp_path / "tc"), subject)
    assert isinstance(tc, Transcoder)
    assert (site_of(tc), output_site_of(tc)) == ("resid_mid.1", "mlp_out.1")


def test_width_mismatch_and_missing_metadata_are_clear(tmp_path, subject):
    _save_sae(tmp_path / "wide", d_in=48)
    with pytest.raises(UsageError, match="d_in=48, but .* has d_model=32"):
        load_dictionary(str(tmp_path / "wide"), subject)
    _save_sae(tmp_path / "nohook", hook_name=None)
    with pytest.raises(UsageError, match="no cfg.metadata.hook_name"):
        load_dictionary(str(tmp_path / "nohook"), subject)
    with pytest.raises(UsageError, match="not a SAELens dictionary directory"):
        load_dictionary(str(tmp_path), subject)
    with pytest.raises(UsageError, match="should be saelens:RELEASE/SAE_ID"):
        load_dictionary("saelens:gpt2-small-res-jb")


# -- EleutherAI sparsify checkpoints ----------------------------------------------------
#
# The tests write checkpoints in sparsify's own format (SparseCoder.save_to_disk in
# github.com/EleutherAI/sparsify, sparsify/sparse_coder.py: cfg.json = the config fields
# plus d_in; sae.safetensors = encoder.weight, encoder.bias, W_dec, b_dec[, W_skip]) and
# check the SAELens object against sparsify's math, written out below from that source.

SPARSIFY_CFG = dict(activation="topk", expansion_factor=32, normalize_decoder=True,
                    num_latents=64, k=4, multi_topk=False, skip_connection=False,
                    transcode=False)


def _write_sparsify(path, d_in=16, seed=0, weights=None, **cfg):
    """One sparse coder directory as sparsify writes it; returns (cfg, weights)."""
    import json

    from safetensors.torch import save_file

    cfg = {**SPARSIFY_CFG, **cfg, "d_in": d_in}
    n = cfg["num_latents"]
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(n, d_in, generator=g)
    w = {"encoder.weight": torch.randn(n, d_in, generator=g) / d_in ** 0.5,
         "encoder.bias": 0.1 * torch.randn(n, generator=g),
         "W_dec": w_dec / w_dec.norm(dim=1, keepdim=True),  # normalize_decoder
         "b_dec": torch.randn(d_in, generator=g)}
    if cfg["skip_connection"]:
        w["W_skip"] = 0.1 * torch.randn(d_in, d_in, generator=g)
    w.update(weights or {})
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in w.items()}, str(path / "sae.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    return cfg, w


def sparsify_reference(cfg, w, x, k=None):
    """sparsify's SparseCoder.encode / decode / forward (sparse_coder.py, fused_encoder.py,
    utils.eager_decode): dense top-k activations and the output."""
    import torch.nn.functional as F

    k = k or cfg["k"]
    sae_in = x if cfg["transcode"] else x - w["b_dec"]
    pre = F.relu(F.linear(sae_in, w["encoder.weight"], w["encoder.bias"]))
    top_acts, top_indices = pre.topk(k, dim=-1, sorted=False)
    flat_idx, flat_acts = top_indices.reshape(-1, k), top_acts.reshape(-1, k)
    out = F.embedding_bag(flat_idx, w["W_dec"], per_sample_weights=flat_acts, mode="sum")
    out = out.reshape(*x.shape[:-1], -1) + w["b_dec"]
    if "W_skip" in w:
        out = out + x @ w["W_skip"].mT
    dense = torch.zeros_like(pre).scatter_(-1, top_indices, top_acts)
    return dense, out


def _sparsify_run(root, d_in=16):
    """A training run's checkpoint: one coder per hookpoint, and the run's config.json."""
    import json

    names = ["layers.0", "layers.1.mlp", "gpt_neox.layers.2", "transformer.h.1",
             "model.layers.0.self_attn", "h.1.attn"]
    saved = {n: _write_sparsify(root / n, d_in=d_in, seed=i) for i, n in enumerate(names)}
    (root / "config.json").write_text(json.dumps({"model": "tiny-model", "hookpoints": names}))
    return saved


def test_sparsify_checkpoint_is_a_topk_sae_with_sparsify_math(tmp_path):
    from sae_lens import TopKSAE

    cfg, w = _write_sparsify(tmp_path / "layers.2")
    sae = load_dictionary(f"sparsify:{tmp_path / 'layers.2'}")
    assert isinstance(sae, TopKSAE)
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (16, 64, 4)
    assert sae.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    assert site_of(sae) == "resid_post.2"
    x = 2 * torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(7))
    dense, out = sparsify_reference(cfg, w, x)
    with torch.no_grad():
        acts = sae.encode(x)
        assert torch.allclose(acts, dense, atol=1e-5)
        assert ((acts > 0).sum(-1) <= 4).all() and ((acts > 0).sum(-1) == 4).any()
        assert torch.allclose(sae.decode(acts), out, atol=1e-5)
        assert torch.allclose(sae(x), out, atol=1e-5)
        # the check is sensitive to the b_dec subtraction sparsify does before encoding
        no_sub = sparsify_reference({**cfg, "transcode": True}, w, x)[0]
        assert not torch.allclose(no_sub, dense, atol=1e-3)


def test_sparsify_saved_by_saelens_loads_back_the_same(tmp_path):
    from sae_lens import TopKSAE

    _write_sparsify(tmp_path / "h.0")
    sae = load_dictionary(f"sparsify:{tmp_path / 'h.0'}")
    sae.save_model(str(tmp_path / "as-saelens"))
    again = load_dictionary(str(tmp_path / "as-saelens"))
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    assert isinstance(again, TopKSAE) and site_of(again) == "resid_post.0"
    with torch.no_grad():
        assert torch.allclose(again(x), sae(x), atol=1e-6)


def test_sparsify_multi_hookpoint_checkpoint(tmp_path):
    saved = _sparsify_run(tmp_path / "run")
    with pytest.raises(UsageError, match="6 hookpoints; name one") as exc:
        load_dictionary(f"sparsify:{tmp_path / 'run'}")
    assert all(n in str(exc.value) for n in saved)
    want = {"layers.0": "resid_post.0", "layers.1.mlp": "mlp_out.1",
            "gpt_neox.layers.2": "resid_post.2", "transformer.h.1": "resid_post.1",
            "model.layers.0.self_attn": "attn_out.0", "h.1.attn": "attn_out.1"}
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(3))
    for name, site in want.items():
        sae = load_dictionary(f"sparsify:{tmp_path / 'run' / name}")
        assert site_of(sae) == site, name
        assert sae.cfg.metadata.model_name == "tiny-model"
        assert sae.cfg.metadata.sparsify_hookpoint == name
        cfg, w = saved[name]
        with torch.no_grad():
            assert torch.allclose(sae(x), sparsify_reference(cfg, w, x)[1], atol=1e-5), name
    with pytest.raises(UsageError, match="no hookpoint 'layers.9'; its hookpoints are .*mlp"):
        load_dictionary(f"sparsify:{tmp_path / 'run' / 'layers.9'}")


def test_sparsify_several_seeds_and_a_single_hookpoint_run(tmp_path):
    for seed in (0, 1):
        _write_sparsify(tmp_path / "run" / "layers.1" / f"seed{seed}", seed=seed)
    with pytest.raises(UsageError, match="layers.1/seed0, layers.1/seed1"):
        load_dictionary(f"sparsify:{tmp_path / 'run'}")
    sae = load_dictionary(f"sparsify:{tmp_path / 'run' / 'layers.1' / 'seed1'}")
    assert site_of(sae) == "resid_post.1"
    _write_sparsify(tmp_path / "one" / "layers.3.mlp")  # a run with one hookpoint: no choice
    assert site_of(load_dictionary(f"sparsify:{tmp_path / 'one'}")) == "mlp_out.3"


def test_sparsify_hookpoint_names_and_the_hook_name_option(tmp_path):
    _write_sparsify(tmp_path / "encoder_out")
    spec = f"sparsify:{tmp_path / 'encoder_out'}"
    with pytest.raises(UsageError, match="'encoder_out' .* is not a module name.*hook_name="):
        load_dictionary(spec)
    sae = load_dictionary(f"{spec}?hook_name=blocks.0.hook_resid_pre")
    assert site_of(sae) == "resid_pre.0"
    with pytest.raises(UsageError, match="has no standard site"):
        load_dictionary(f"{spec}?hook_name=blocks.0.attn.hook_z")
    with pytest.raises(UsageError, match="unknown option 'layer'"):
        load_dictionary(f"{spec}?layer=3")


def test_sparsify_unsupported_configs_are_clear(tmp_path):
    cases = {
        "transcoder": (dict(transcode=True), "is a transcoder .* no TopK transcoder"),
        "skip": (dict(skip_connection=True), "skip connection .* TopKSAE"),
        "groupmax": (dict(activation="groupmax"), "'groupmax' activation"),
        "embed": (dict(embed_skip=True), "embed_skip"),
    }
    for name, (cfg, message) in cases.items():
        _write_sparsify(tmp_path / name / "layers.0", **cfg)
        with pytest.raises(UsageError, match=message) as exc:
            load_dictionary(f"sparsify:{tmp_path / name / 'layers.0'}")
        assert "Supported: TopK sparse autoencoders" in str(exc.value)


def test_sparsify_multi_topk_needs_a_k(tmp_path):
    cfg, w = _write_sparsify(tmp_path / "layers.0", multi_topk=True)
    spec = f"sparsify:{tmp_path / 'layers.0'}"
    with pytest.raises(UsageError, match=r"multi_topk.*\?k=4 .* or \?k=16"):
        load_dictionary(spec)
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(4))
    for k in (4, 16):
        sae = load_dictionary(f"{spec}?k={k}")
        with torch.no_grad():
            dense, out = sparsify_reference(cfg, w, x, k=k)
            assert sae.cfg.k == k and torch.allclose(sae.encode(x), dense, atol=1e-5)
            assert torch.allclose(sae(x), out, atol=1e-5)
    with pytest.raises(UsageError, match="k must be a positive integer"):
        load_dictionary(f"{spec}?k=four")
    with pytest.raises(UsageError, match="k=65 must be between 1 and the 64 latents"):
        load_dictionary(f"{spec}?k=65")


def test_sparsify_bad_directories_are_clear(tmp_path):
    with pytest.raises(UsageError, match="no directory .*sparsify:DIR/HOOKPOINT"):
        load_dictionary(f"sparsify:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no sparsify sparse coder"):
        load_dictionary(f"sparsify:{tmp_path / 'empty'}")
    _write_sparsify(tmp_path / "noweights" / "layers.0")
    (tmp_path / "noweights" / "layers.0" / "sae.safetensors").unlink()
    with pytest.raises(UsageError, match="has cfg.json but no sae.safetensors"):
        load_dictionary(f"sparsify:{tmp_path / 'noweights' / 'layers.0'}")
    (tmp_path / "badcfg").mkdir()
    (tmp_path / "badcfg" / "cfg.json").write_text('{"k": 4}')
    with pytest.raises(UsageError, match="needs d_in"):
        load_dictionary(f"sparsify:{tmp_path / 'badcfg'}")
    (tmp_path / "badcfg" / "cfg.json").write_text("{not json")
    with pytest.raises(UsageError, match="cannot read"):
        load_dictionary(f"sparsify:{tmp_path / 'badcfg'}")
    _write_sparsify(tmp_path / "shape" / "layers.0", weights={"b_dec": torch.zeros(8)})
    with pytest.raises(UsageError, match=r"do not match cfg.json .*b_dec \(8,\) \(expected \(16,"):
        load_dictionary(f"sparsify:{tmp_path / 'shape' / 'layers.0'}")
    _write_sparsify(tmp_path / "latents" / "layers.0", num_latents=32,
                    weights={"encoder.weight": torch.zeros(64, 16)})
    with pytest.raises(UsageError, match="do not match cfg.json"):
        load_dictionary(f"sparsify:{tmp_path / 'latents' / 'layers.0'}")
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(64, 16)},
              str(tmp_path / "shape" / "layers.0" / "sae.safetensors"))
    with pytest.raises(UsageError, match="lacks encoder.bias, W_dec, b_dec"):
        load_dictionary(f"sparsify:{tmp_path / 'shape' / 'layers.0'}")


def test_sparsify_on_a_model(tmp_path, subject):
    # the tiny GPT-2 has d_model=32; sparsify names its blocks h.L (relative to base_model)
    cfg, w = _write_sparsify(tmp_path / "run" / "h.1", d_in=32)
    _write_sparsify(tmp_path / "run" / "h.0.mlp", d_in=16)
    sae = load_dictionary(f"sparsify:{tmp_path / 'run' / 'h.1'}", subject)
    x = subject.activations(["the cat was red", "a dog"], [site_of(sae)])[site_of(sae)]
    with torch.no_grad():
        assert torch.allclose(sae(x), sparsify_reference(cfg, w, x)[1], atol=1e-5)
    with pytest.raises(UsageError, match="d_in=16, but .* has d_model=32"):
        load_dictionary(f"sparsify:{tmp_path / 'run' / 'h.0.mlp'}", subject)


def test_sparsify_from_the_command_line(tmp_path, register_plugin, capsys):
    import json

    from mi_ideas import Idea, IdeaConfig, IdeaResult
    from mi_ideas.cli import main

    class Recon(Idea):
        """Explained variance of each --sae dictionary at its own site (test idea)."""

        name = "test-sae-recon"
        summary = "Reconstruction quality of the given dictionaries (test idea)."
        size = "short"
        Config = IdeaConfig
        uses_model = True
        uses_saes = True

        def run(self, ctx, config):
            metrics = {}
            for i, sae in enumerate(ctx.saes):
                x = ctx.subject.activations(["the cat was red", "one two three"],
                                            [site_of(sae)])[site_of(sae)]
                with torch.no_grad():
                    err = (sae(x) - x).pow(2).sum() / (x - x.mean((0, 1))).pow(2).sum()
                metrics[f"sae{i}.fvu"] = float(err)
            return IdeaResult(metrics=metrics, definitions={k: "FVU" for k in metrics})

    class Plugin:
        from mi_ideas import hookimpl

        @hookimpl
        def mi_ideas_register_ideas(self, register):
            register(Recon)

    register_plugin(Plugin(), name="test-sae-recon")
    model_dir = build_tiny("gpt2", tmp_path / "gpt2-tiny")
    _write_sparsify(tmp_path / "ckpt" / "h.0", d_in=32)
    rc = main(["run", "test-sae-recon", "--model", f"hf:{model_dir}", "--sae",
               f"sparsify:{tmp_path / 'ckpt'}", "--out", str(tmp_path / "runs"), "-q"])
    assert rc == 0, capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs" / "test-sae-recon").iterdir()
    metrics = json.loads((run_dir / "result.json").read_text())["metrics"]
    assert 0 < metrics["sae0.fvu"] < 1e6  # the sparsify SAE ran on the model's h.0 output
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert f"sparsify:{tmp_path / 'ckpt'}" in json.dumps(prov)
