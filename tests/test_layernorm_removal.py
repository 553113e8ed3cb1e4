"""Ground truth of the layernorm-removal idea: the fake LN, the schedules, the exports.

Each test plants a case whose answer is known: a fake LN with every site real is the
Hugging Face model; a fixed-sigma map is LayerNorm exactly where the std equals sigma; a
model whose LN inputs have constant std by construction loses nothing when LN is removed
(and a generic model does); the exported stock HF model and the TransformerLens model
compute the fake-LN model; direct logit attribution is exact only without LN.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from mi_ideas.errors import ConfigError, UsageError
from mi_ideas_plugins.layernorm_removal import schedule as sched
from mi_ideas_plugins.layernorm_removal.config import LNRemovalConfig
from mi_ideas_plugins.layernorm_removal.model import FakeLNGPT2, export_hf, export_tl
from mi_ideas_plugins.layernorm_removal.run import build_schedule, dla_residual, hf_gpt2_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EOT = 0


def tiny_gpt2(seed=0, n_layer=2, d=32, vocab=64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=d, n_head=4, vocab_size=vocab, n_positions=32,
                     attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0, bos_token_id=EOT,
                     eos_token_id=EOT)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # non-trivial LN affine maps
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model


def ids_batch(seed=1, vocab=64, b=4, t=20):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (b, t), generator=g)
    ids[:, 0] = EOT
    ids[:, 9] = EOT  # an end-of-text token mid-row
    return ids


@pytest.fixture(scope="module")
def zoo():
    from mi_ideas import zoo

    hf, tok = zoo.load_model()
    return hf.eval(), tok


def zoo_ids(tok, texts=("Mia found a red ball in the park.", "Tom was very sad. He cried.")):
    rows = [[tok.eos_token_id] + tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    n = min(len(r) for r in rows)
    return torch.tensor([r[:n] for r in rows])


def test_fake_ln_with_every_site_real_is_the_hf_model():
    hf = tiny_gpt2()
    fake = FakeLNGPT2(hf, EOT).eval()
    x = ids_batch()
    with torch.no_grad():
        assert torch.allclose(fake(x), hf(x).logits, atol=1e-5)


def test_fixed_sigma_is_layer_norm_exactly_where_the_std_equals_sigma():
    fake = FakeLNGPT2(tiny_gpt2(), EOT)
    d, sigma = 32, 2.5
    x = torch.randn(3, 7, d)
    xc = x - x.mean(-1, keepdim=True)
    std = (xc.pow(2).mean(-1, keepdim=True) + fake.eps).sqrt()
    x_at_sigma = x.mean(-1, keepdim=True) + xc * (sigma / std)   # every token's std is sigma
    w, b = torch.rand(d) + 0.5, torch.randn(d)
    i = fake.index["ln2.0"]
    fake.sigma[i] = sigma
    fake.removed[i] = True
    fake.specials[:] = False
    masks = fake.masks(torch.ones(3, 7, dtype=torch.long))
    ln = torch.nn.functional.layer_norm(x_at_sigma, (d,), w, b, eps=fake.eps)
    assert torch.allclose(fake._ln("ln2.0", x_at_sigma, w, b, masks), ln, atol=1e-5)
    # where the std is twice sigma, the centred part is twice LayerNorm's
    x2 = x.mean(-1, keepdim=True) + 2 * (x_at_sigma - x.mean(-1, keepdim=True))
    ln2 = torch.nn.functional.layer_norm(x2, (d,), w, b, eps=fake.eps)
    got = fake._ln("ln2.0", x2, w, b, masks)
    assert torch.allclose(got - b, 2 * (ln2 - b), atol=1e-4)


def constant_scale_gpt2(bos_scale=1.0):
    """Blocks write nothing and positions add nothing, and every embedding row is centred
    with the same std (the end-of-text row ``bos_scale`` times it): every LN input's std is
    fixed by the token, so a fixed sigma per site (and per special position) is exact."""
    hf = tiny_gpt2(seed=3)
    with torch.no_grad():
        for block in hf.transformer.h:
            for lin in (block.attn.c_proj, block.mlp.c_proj):
                lin.weight.zero_()
                lin.bias.zero_()
        hf.transformer.wpe.weight.zero_()
        e = hf.transformer.wte.weight
        e -= e.mean(-1, keepdim=True)
        e /= e.pow(2).mean(-1, keepdim=True).sqrt()
        e[EOT] *= bos_scale
    return hf


class _Ctx:
    """The two RunContext calls train_run makes, without a run directory."""

    def restore(self, name):
        return None

    def checkpoint(self, *a, **k):
        pass

    def log(self, msg):
        pass


def _train_lr0(hf, schedule, steps=12):
    """A full removal run with lr = 0: only the fake-LN bookkeeping acts."""
    import numpy as np

    from mi_ideas_plugins.layernorm_removal.train import make_eval_set, train_run

    cfg = LNRemovalConfig(steps=steps, batch_rows=2, eval_every=4, checkpoint_every=100)
    rows = torch.cat([ids_batch(seed=s) for s in range(3)]).numpy()
    ev = make_eval_set([r.tolist() for r in ids_batch(seed=9)], EOT)
    base = FakeLNGPT2(hf, EOT)
    out = train_run(_Ctx(), "t", base, schedule, rows, np.arange(rows.shape[0]), ev, cfg,
                    steps, lr=0.0, warmup=1, min_lr_frac=0.0)
    return out, ev


def test_a_model_with_constant_ln_scale_loses_nothing_when_ln_is_removed():
    s = sched.scaled(sched.BARONI, 12, 2)
    hf = constant_scale_gpt2()
    out, ev = _train_lr0(hf, s)
    assert out.model.fully_removed()
    with torch.no_grad():
        assert torch.allclose(out.model(ev.ids), hf(ev.ids).logits, atol=1e-4)
    # the curve's held-out loss never moved
    assert max(out.history["eval_loss"]) - min(out.history["eval_loss"]) < 1e-5


def test_a_generic_model_does_change_when_ln_is_removed():
    s = sched.scaled(sched.BARONI, 12, 2)
    hf = tiny_gpt2(seed=4)
    out, ev = _train_lr0(hf, s)
    with torch.no_grad():  # the planted null above is not a tautology
        assert (out.model(ev.ids) - hf(ev.ids).logits).abs().max() > 1e-2


def test_special_positions_keep_their_own_sigma_until_their_step():
    hf = constant_scale_gpt2(bos_scale=3.0)
    fake = FakeLNGPT2(hf, EOT)
    x = ids_batch()
    fake.calibrate(x)
    fake.eval()
    i = fake.index["lnf"]
    assert float(fake.sigma_bos[i]) == pytest.approx(3 * float(fake.sigma[i]), rel=1e-4)
    assert float(fake.sigma_eot[i]) == pytest.approx(3 * float(fake.sigma[i]), rel=1e-4)
    with torch.no_grad():
        ref = hf(x).logits
        fake.set_state(set(fake.sites), bos_special=True, eot_special=True)
        assert torch.allclose(fake(x), ref, atol=1e-4)
        fake.set_state(set(fake.sites), bos_special=False, eot_special=True)
        off = (fake(x) - ref).abs().amax(-1)
        assert off[:, 0].min() > 1e-2 and off[:, 1:9].max() < 1e-4  # only position 0 moves
        fake.set_state(set(fake.sites), bos_special=True, eot_special=False)
        off = (fake(x) - ref).abs().amax(-1)
        assert off[:, 9].min() > 1e-2 and off[:, 0].max() < 1e-4    # only the mid-row EOT


def _removed_zoo_model(zoo):
    """The zoo model with every LN replaced by its calibrated sigma, and the value path's
    sigma made 30% larger than the query/key path's so the split is exercised."""
    hf, tok = zoo
    fake = FakeLNGPT2(hf, tok.eos_token_id)
    fake.calibrate(zoo_ids(tok))
    for layer in range(fake.n_layers):
        fake.sigma[fake.index[f"ln1v.{layer}"]] *= 1.3
    fake.set_state(set(fake.sites), False, False)
    return fake.eval()


def test_hf_export_is_a_stock_directory_that_computes_the_fake_ln_model(zoo, tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    import mi_ideas

    fake = _removed_zoo_model(zoo)
    tok = zoo[1]
    export_hf(fake).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["layer_norm_epsilon"] == 1e12
    assert "auto_map" not in cfg  # no custom code
    x = zoo_ids(tok)
    with torch.no_grad():
        ref = fake(x)
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert (loaded(x).logits - ref).abs().max() < 1e-4
        # the original model is far from it (the export is not the original by accident)
        assert (zoo[0](x).logits - ref).abs().max() > 0.1
    texts = ["Mia found a red ball in the park."]
    want = fake(zoo_ids(tok, texts))[0]
    for spec in (f"hf:{tmp_path}", f"tl:{tmp_path}", f"tlsae:{tmp_path}"):
        subject = mi_ideas.load_subject(spec)
        got = subject.forward(subject.tokenize(texts), logits=True).logits[0]
        assert (got - want).abs().max() < 1e-4, spec


def test_tl_export_has_no_ln_and_direct_logit_attribution_is_exact(zoo):
    from mi_ideas.zoo.build.lm import to_hooked_transformer

    fake = _removed_zoo_model(zoo)
    tl = export_tl(fake, zoo[1])
    assert tl.cfg.normalization_type is None
    x = zoo_ids(zoo[1])
    with torch.no_grad():
        assert (tl(x) - fake(x)).abs().max() < 1e-4
        assert dla_residual(tl, x).max() < 1e-4
        # with LayerNorm the same sum of direct contributions is not the logits
        assert dla_residual(to_hooked_transformer(zoo[0], zoo[1]), x).max() > 0.1


def test_published_schedules_unscaled_are_the_published_step_numbers():
    b = sched.scaled(sched.BARONI, 300, 12).removal_steps()
    assert (b["ln2.0"], b["ln2.11"], b["ln1qk.0"], b["ln1v.0"], b["ln1v.11"], b["lnf"]) == \
        (20, 42, 44, 68, 101, 104)
    assert sched.BARONI.special_steps() == (106, 116)
    h = sched.HEIMERSHEIM.removal_steps()
    assert (h["ln2.0"], h["ln1qk.0"], h["ln1v.0"], h["lnf"]) == (200, 440, 680, 1040)
    assert sched.HEIMERSHEIM.special_steps() == (1060, 1160)


@pytest.mark.parametrize("base", [sched.BARONI, sched.HEIMERSHEIM, sched.ZOO])
def test_scaling_keeps_the_fraction_of_training_of_every_phase(base):
    s = sched.scaled(base, 150, 4)
    steps = s.removal_steps()
    frac = lambda v, total: v / total  # noqa: E731
    # the phase starts and the end of the ln_2 phase sit at the same fraction of training
    assert frac(steps["ln2.0"], 150) == pytest.approx(frac(base.ln2_start, base.total_steps), abs=0.01)
    assert frac(steps["ln1qk.0"], 150) == pytest.approx(frac(base.ln1qk_start, base.total_steps), abs=0.01)
    end = steps["ln2.3"] + s.ln2_gap
    assert frac(end, 150) == pytest.approx(frac(base.ln2_start + base.n_layers * base.ln2_gap,
                                                base.total_steps), abs=0.01)
    order = [steps[f"{k}.{i}"] for k in ("ln2", "ln1qk", "ln1v") for i in range(4)] + [steps["lnf"]]
    assert order == sorted(order)
    every = sched.all_at_once(s)
    assert len(set(every.removal_steps().values())) == 1 and every.last_removal() == steps["ln2.0"]


def test_a_schedule_that_does_not_finish_is_a_config_error():
    with pytest.raises(ConfigError, match="bos_step"):
        build_schedule("zoo", LNRemovalConfig(steps=20, bos_step=25), 4, main=True)


def test_a_model_that_is_not_a_local_hf_gpt2_is_refused():
    class NotGPT2:
        spec, backend = "tl:something", "transformer_lens"

    with pytest.raises(UsageError, match="--model zoo:stories-gpt2"):
        hf_gpt2_of(NotGPT2())


def test_importing_the_plugin_is_cheap_and_registers_the_idea():
    code = ("import sys, mi_ideas_plugins.layernorm_removal as p; p.IDEAS[0].Config(); "
            "print(p.IDEAS[0].name, sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "layernorm-removal []"
    assert math.isfinite(LNRemovalConfig().steps)
