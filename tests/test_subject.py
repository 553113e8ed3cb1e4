"""The Subject interface on every back-end: mi-ideas's conformance suite
(:class:`mi_ideas.testing.SubjectConformance`) on nnsight, TransformerLens and a plugin
back-end written here with plain PyTorch hooks, then the back-end-specific checks."""

from __future__ import annotations

import pytest
import torch

from mi_ideas import hookimpl
from mi_ideas.errors import UsageError
from mi_ideas.subject import Batch, ForwardOutput, Subject, position_index
from mi_ideas.testing import SubjectConformance
from tests.tiny_models import build_tiny

PROMPTS = list(SubjectConformance.prompts)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return build_tiny("gpt2", tmp_path_factory.mktemp("tiny") / "gpt2-tiny")


@pytest.fixture(scope="module")
def reference(gpt2_dir):
    """The Hugging Face model every back-end here runs: the suite's exactness reference."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(gpt2_dir)).eval()


# -- the suite on the built-in back-ends ------------------------------------------------


class TestNnsightBackend(SubjectConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def subject(cls, gpt2_dir):
        from mi_ideas import load_subject

        return load_subject(f"hf:{gpt2_dir}")


class TestTransformerLensBackend(SubjectConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def subject(cls, gpt2_dir):
        from mi_ideas import load_subject

        return load_subject(f"tl:{gpt2_dir}")



# -- and on a plugin back-end: a GPT-2 run with plain PyTorch hooks ---------------------


class TorchHooksSubject(Subject):
    """A minimal third-party back-end: a Hugging Face GPT-2 with ``register_forward_hook``.

    Each site is a module's input (``pre``) or output (``out``); interventions are applied,
    then reads copied, in the module's hook. ``start_at`` replaces the stream entering the
    block (the earlier blocks still run; their result is discarded).
    """

    backend = "torch-hooks"

    def __init__(self, path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.hf = AutoModelForCausalLM.from_pretrained(str(path)).eval()
        c = self.hf.config
        super().__init__(spec=f"torch-hooks:{path}",
                         tokenizer=AutoTokenizer.from_pretrained(str(path)),
                         n_layers=c.n_layer, d_model=c.n_embd, d_vocab=c.vocab_size)

    def _place(self, site):
        t = self.hf.transformer
        if site.kind == "ln_final":
            return t.ln_f, "out"
        block = t.h[site.layer]
        return {"resid_pre": (block, "pre"), "attn_out": (block.attn, "out"),
                "resid_mid": (block.ln_2, "pre"), "mlp_in": (block.ln_2, "out"),
                "mlp_out": (block.mlp, "out"), "resid_post": (block, "out")}[site.kind]

    def _forward(self, batch, read, positions, interventions, logits, stats,
                 start_layer=None, start_resid=None):
        from mi_ideas import trace_ops

        index = position_index(positions, batch)
        plan: dict = {}  # (module, where) -> ([(op, value, index)], [read names])
        for name, site in read.items():
            if site.kind != "logits":
                plan.setdefault(self._place(site), ([], []))[1].append(name)
        for iv in interventions:
            site = self.site(iv.site)
            if site.kind in ("logits", "resid_mid"):
                raise UsageError(f"the torch-hooks back-end cannot change {site.kind}.")
            plan.setdefault(self._place(site), ([], []))[0].append(
                (iv.op, iv.value, position_index(iv.positions, batch)))
        want_stats = stats is not None and stats.wants_anything()
        final_block = self.hf.transformer.h[-1]
        if want_stats:
            plan.setdefault((final_block, "out"), ([], []))
        saved, final = {}, {}

        start = None if start_layer is None else self.hf.transformer.h[start_layer]

        def apply(module, where, x):
            ivs, names = plan[(module, where)]
            if where == "pre" and module is start:
                x = start_resid.to(x.dtype)
            for op, value, idx in ivs:
                x = trace_ops.intervene(x, op, value, idx)
            for n in names:
                saved[n] = trace_ops.select(x, index).detach().clone()
            if module is final_block and where == "out":
                final["resid"] = x.detach().clone()
            return x

        def pre_hook(module, args, kwargs):
            x = apply(module, "pre", args[0])
            return (x, *args[1:]), kwargs

        def out_hook(module, args, output):
            if isinstance(output, tuple):
                return (apply(module, "out", output[0]), *output[1:])
            return apply(module, "out", output)

        if start_layer is not None:
            plan.setdefault((self.hf.transformer.h[start_layer], "pre"), ([], []))
        handles = []
        for (module, where) in plan:
            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True)
                           if where == "pre" else module.register_forward_hook(out_hook))
        try:
            with torch.no_grad():
                out_logits = self.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                     position_ids=batch.position_ids).logits
        finally:
            for handle in handles:
                handle.remove()
        result = ForwardOutput()
        for name, site in read.items():
            result.activations[name] = (trace_ops.select(out_logits, index)
                                        if site.kind == "logits" else saved[name])
        if logits:
            result.logits = out_logits
        if want_stats:
            result.stats = trace_ops.stats(out_logits, final.get("resid"),
                                           *stats.args(position_index(stats.positions, batch)))
        return result


class TorchHooksPlugin:
    @hookimpl
    def mi_ideas_register_backends(self, register):
        register("torch-hooks", lambda rest, remote: TorchHooksSubject(rest),
                 "a GPT-2 directory run with plain PyTorch hooks (test back-end)")


class TestPluginBackend(SubjectConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def subject(cls, gpt2_dir):
        from mi_ideas import load_subject
        from mi_ideas.host import Host

        host = Host()
        host.register_plugin(TorchHooksPlugin(), name="torch-hooks")
        subject = load_subject(f"torch-hooks:{gpt2_dir}", host=host)
        assert isinstance(subject, TorchHooksSubject)
        return subject



# -- back-end-specific checks -------------------------------------------------------------


def test_backends_agree_on_every_site(gpt2_dir):
    from mi_ideas import load_subject

    subjects = [load_subject(f"hf:{gpt2_dir}"), load_subject(f"tl:{gpt2_dir}"),
                TorchHooksSubject(gpt2_dir)]
    batch = subjects[0].tokenize(PROMPTS)
    mask = batch.attention_mask.bool()
    ra = subjects[0].activations(batch, subjects[0].sites, positions=mask)
    for other in subjects[1:]:
        rb = other.activations(batch, other.sites, positions=mask)
        for site in subjects[0].sites:
            assert torch.allclose(ra[site], rb[site], atol=1e-4), (other.backend, site)


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


def test_a_subject_passes_through_and_batches_are_plain_data(gpt2_dir):
    from mi_ideas import load_subject

    s = load_subject(f"hf:{gpt2_dir}")
    assert load_subject(s) is s
    batch = s.tokenize(PROMPTS)
    assert isinstance(batch, Batch) and len(batch) == 3 and batch.texts == tuple(PROMPTS)
