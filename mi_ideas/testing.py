"""A pytest plugin for plugin authors (and mi-ideas's own tests).

Installed with mi-ideas through the ``pytest11`` entry point, so these fixtures are
available in any test suite of a project that has mi-ideas installed:

- ``mi_ideas_host`` — a fresh :class:`~mi_ideas.host.Host` with the installed plugins,
  made the process-wide host for one test (so ``mi_ideas.run`` and the CLI use it).
- ``register_plugin(plugin, name=None)`` — register a plugin object (module, class or
  instance with ``@hookimpl`` functions) into that host for one test.
- ``run_idea(name, seed=0, **config_values)`` — run an idea quietly into a temporary
  runs directory and return its :class:`~mi_ideas.runs.RunRecord`.
- ``install_entrypoint_plugin(name, source)`` — write a module and a ``.dist-info`` with an
  ``mi_ideas`` entry point into a temporary directory on ``sys.path``, as if a package
  were pip-installed (for testing discovery, broken plugins and strict mode).

Example::

    def test_my_idea_runs(register_plugin, run_idea):
        register_plugin(my_plugin)
        record = run_idea("my-idea", n=3)
        assert record.provenance.status == "complete"

It also ships :class:`SubjectConformance`, the checks every back-end (a
:class:`~mi_ideas.subject.Subject` subclass) must pass — the ones mi-ideas runs on its
nnsight and TransformerLens back-ends. Subclass it in your tests and provide a ``subject``
fixture (and, optionally, a ``reference`` fixture: the Hugging Face model it runs)::

    from mi_ideas.testing import SubjectConformance

    class TestMyBackend(SubjectConformance):
        @pytest.fixture(scope="class")
        @classmethod
        def subject(cls):
            return mi_ideas.load_subject("mybackend:tiny")

This module imports no torch (and no model library) until a check runs.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from mi_ideas.errors import UsageError
from mi_ideas.host import Host, PluginInfo, set_host
from mi_ideas.subject import Batch, Intervention, StatsRequest


@pytest.fixture
def mi_ideas_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    """A fresh host with every installed plugin, used process-wide for this test."""
    monkeypatch.delenv("MI_IDEAS_DISABLE_PLUGINS", raising=False)
    host = Host()
    previous = set_host(host)
    try:
        yield host
    finally:
        set_host(previous)


@pytest.fixture
def register_plugin(mi_ideas_host: Host) -> Callable[..., PluginInfo]:
    """``register_plugin(plugin, name=None)``: add a plugin object to the test's host."""

    def register(plugin: Any, name: str | None = None) -> PluginInfo:
        return mi_ideas_host.register_plugin(plugin, name=name)

    return register


@pytest.fixture
def run_idea(mi_ideas_host: Host, tmp_path: Path) -> Callable[..., Any]:
    """``run_idea(name, seed=0, **values)``: run an idea into ``tmp_path / "runs"``."""
    from mi_ideas.runs import execute

    def run(name: str, seed: int = 0, **values: Any) -> Any:
        return execute(name, config=values, seed=seed, out=tmp_path / "runs",
                       host=mi_ideas_host, quiet=True, command=[])

    return run


@pytest.fixture
def install_entrypoint_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str], Path]]:
    """``install_entrypoint_plugin(name, source)``: fake a pip-installed plugin package.

    Writes ``source`` as module ``<name>`` (dashes become underscores) plus a
    ``<name>-0.0.1.dist-info`` declaring the entry point ``<name> = <module>`` in the group
    ``mi_ideas``, on a temporary ``sys.path`` entry removed after the test.
    """
    site = tmp_path / "site-packages"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def install(name: str, source: str) -> Path:
        module = name.replace("-", "_")
        modules.append(module)
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        dist = site / f"{module}-0.0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n", encoding="utf-8"
        )
        (dist / "entry_points.txt").write_text(
            f"[mi_ideas]\n{name} = {module}\n", encoding="utf-8"
        )
        importlib.invalidate_caches()
        sys.modules.pop(module, None)
        return site

    yield install
    for module in modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


# -- the Subject conformance suite ---------------------------------------------------------


def _middle(subject: Any) -> int:
    """A block with blocks before it when the model has two or more (1 for 2 blocks)."""
    return subject.n_layers // 2


def _seeded(shape: Any, seed: int) -> Any:
    import torch

    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _scaled(subject: Any, batch: Any, site: str, times: float, seed: int) -> Any:
    """A seeded random direction ``times`` as long as the mean activation at ``site``."""
    x = subject.activations(batch, [site], positions="last")[site]
    v = _seeded(subject.d_model, seed)
    return v / v.norm() * times * float(x.float().norm(dim=-1).mean())


def _assert_close(a: Any, b: Any, atol: float, what: str) -> None:
    import torch

    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    diff = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    assert torch.allclose(a.float(), b.float(), atol=atol), (
        f"{what}: max |diff| {diff:.3g} > {atol}")


class SubjectConformance:
    """Back-end-agnostic checks of the :class:`~mi_ideas.subject.Subject` contract.

    Subclass it (the subclass's name must start with ``Test``) and define a ``subject``
    fixture — in the subclass, the test module or a ``conftest.py`` — returning the subject
    to check: a small model (two or more blocks; a few checks are skipped on one block)
    whose tokenizer has a BOS (or EOS) token. Optionally define a ``reference`` fixture the
    same way, returning the Hugging Face ``PreTrainedModel`` the subject runs, with the same
    weights: the logits, residual stream and greedy generation are then compared with it
    (otherwise those two checks are skipped). Class attributes to override:
    ``prompts`` (three or more texts of different lengths), ``atol`` (exactness tolerance)
    and ``agreement_atol`` (for results of different but equivalent computations: a
    padded vs an unpadded batch, sums of sublayer outputs, another implementation).
    """

    prompts: tuple[str, ...] = ("the cat was red", "a dog ran to the big house", "one two")
    atol: float = 1e-5
    agreement_atol: float = 1e-4

    # -- facts and inputs -------------------------------------------------------------

    def test_facts(self, subject: Any) -> None:
        from mi_ideas.sites import all_sites
        from mi_ideas.subject import Subject

        assert isinstance(subject, Subject)
        assert subject.n_layers >= 1 and subject.d_model >= 1 and subject.d_vocab >= 1
        assert isinstance(subject.backend, str) and subject.backend != "abstract"
        assert isinstance(subject.remote, bool) and isinstance(subject.on_server, bool)
        assert subject.sites == all_sites(subject.n_layers,
                                          parallel_residual=subject.parallel_residual)
        assert subject.site("resid_pre.-1").layer == subject.n_layers - 1
        fp = subject.fingerprint
        assert isinstance(fp, str) and fp and fp == subject.fingerprint
        assert subject.spec in repr(subject)

    def test_tokenize_left_pads_with_bos(self, subject: Any) -> None:
        tok = subject.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        batch = subject.tokenize(list(self.prompts))
        assert batch.input_ids.shape[0] == len(self.prompts)
        lengths = batch.attention_mask.sum(1)
        assert int(lengths.max()) == batch.input_ids.shape[1]
        assert len(set(lengths.tolist())) > 1, "prompts should tokenize to different lengths"
        for row, n in zip(batch.input_ids, lengths):
            assert row[-int(n)] == bos  # BOS right after the padding
            assert (row[:-int(n)] == subject.pad_token_id).all()
        assert batch.position_ids[1, -1] == int(lengths[1]) - 1
        assert (batch.position_ids[batch.attention_mask.bool()] >= 0).all()

    def test_inputs_in_every_form_are_one_batch(self, subject: Any) -> None:
        import torch

        texts = list(self.prompts)
        batch = subject.tokenize(texts)
        assert subject.as_batch(batch) is batch
        for other in (subject.as_batch(texts), subject.batch_from_ids(
                [row[m.bool()].tolist() for row, m in zip(batch.input_ids, batch.attention_mask)])):
            assert torch.equal(other.input_ids, batch.input_ids)
            assert torch.equal(other.attention_mask, batch.attention_mask)
        site = "resid_post.0"
        _assert_close(subject.activations(texts, [site])[site],
               subject.activations(batch, [site])[site], self.atol, "texts vs Batch")
        one = subject.as_batch(batch.input_ids[1:2, -3:])  # a tensor: every token is real
        assert one.attention_mask.all() and one.shape == (1, 3)

    # -- reads ----------------------------------------------------------------------------

    def test_every_site_reads_with_its_shape(self, subject: Any) -> None:
        batch = subject.tokenize(list(self.prompts))
        acts = subject.activations(batch, subject.sites)
        assert list(acts) == subject.sites
        for site, x in acts.items():
            width = subject.d_vocab if site == "logits" else subject.d_model
            assert tuple(x.shape) == (*batch.shape, width), site
            assert x.isfinite().all(), site
        logits = subject.forward(batch, logits=True).logits
        _assert_close(acts["logits"], logits, self.atol, "the logits site vs forward(logits=True)")

    def test_residual_stream_decomposes_into_sublayers(self, subject: Any) -> None:
        # attn_out / mlp_out are what each sublayer adds to the residual stream
        batch = subject.tokenize(list(self.prompts))
        mask = batch.attention_mask.bool()
        a = subject.activations(batch, subject.sites, positions=mask)
        tol = self.agreement_atol
        for layer in range(subject.n_layers):
            pre, post = a[f"resid_pre.{layer}"], a[f"resid_post.{layer}"]
            attn, mlp = a[f"attn_out.{layer}"], a[f"mlp_out.{layer}"]
            scale = max(1.0, float(post.abs().max()))
            if subject.parallel_residual:
                _assert_close(pre + attn + mlp, post, tol * scale, f"block {layer}: pre + attn + mlp")
            else:
                mid = a[f"resid_mid.{layer}"]
                _assert_close(pre + attn, mid, tol * scale, f"block {layer}: resid_pre + attn_out")
                _assert_close(mid + mlp, post, tol * scale, f"block {layer}: resid_mid + mlp_out")
            if layer + 1 < subject.n_layers:
                _assert_close(post, a[f"resid_pre.{layer + 1}"], self.atol, f"resid_post.{layer}")

    def test_positions_select_the_same_rows(self, subject: Any) -> None:
        import torch

        batch = subject.tokenize(list(self.prompts))
        site = "resid_post.0"
        full = subject.activations(batch, [site])[site]
        last = subject.activations(batch, [site], positions="last")[site]
        some = subject.activations(batch, [site], positions=[1, 2])[site]
        one = subject.activations(batch, [site], positions=-2)[site]
        mask = batch.attention_mask.bool()
        masked = subject.activations(batch, [site], positions=mask)[site]
        assert torch.equal(last, full[:, -1]) and torch.equal(some, full[:, [1, 2]])
        assert torch.equal(one, full[:, -2])
        assert torch.equal(masked, full[mask])
        assert masked.shape == (int(batch.attention_mask.sum()), subject.d_model)

    def test_left_padding_does_not_change_a_prompt(self, subject: Any) -> None:
        # position ids come from the mask, and padding is masked out of attention
        batch = subject.tokenize(list(self.prompts))
        site = f"resid_post.{subject.n_layers - 1}"
        out = subject.forward(batch, read=[site], positions="last", logits=True)
        for i, text in enumerate(self.prompts):
            alone = subject.forward(text, read=[site], positions="last", logits=True)
            _assert_close(out.activations[site][i], alone.activations[site][0], self.agreement_atol,
                   f"{site} of prompt {i}, padded vs alone")
            _assert_close(out.logits[i, -1], alone.logits[0, -1], self.agreement_atol,
                   f"last logits of prompt {i}, padded vs alone")

    # -- interventions ----------------------------------------------------------------------

    def test_activation_patching_replaces_the_whole_run(self, subject: Any) -> None:
        # Replacing resid_pre.L everywhere with another input's makes every later site and
        # the logits those of the other input: the intervention really replaces the stream.
        a = subject.tokenize([self.prompts[0]])
        ids = a.input_ids.clone()
        ids[:, 1:] = (ids[:, 1:] + 1 + ids[:, 1:].flip(-1)) % subject.d_vocab
        b = subject.batch_from_ids(ids.tolist())
        site, last = f"resid_pre.{_middle(subject)}", f"resid_post.{subject.n_layers - 1}"
        clean_b = subject.forward(b, read=[site, last], logits=True)
        patched = subject.forward(a, read=[last], logits=True, interventions=[
            Intervention(site, "replace", clean_b.activations[site][0])])
        # earlier blocks saw a's tokens, but resid_pre.L is all that later blocks read
        _assert_close(patched.logits, clean_b.logits, self.atol, "patched logits")
        _assert_close(patched.activations[last], clean_b.activations[last], self.atol, last)
        clean_a = subject.forward(a, logits=True)
        assert not _allclose(clean_a.logits, clean_b.logits), "the two inputs should differ"

    def test_reads_are_copies_and_interventions_apply_before_reads(self, subject: Any) -> None:
        if subject.n_layers < 2:
            pytest.skip("needs two blocks")
        layer = _middle(subject)
        before, at = f"resid_post.{layer - 1}", f"resid_pre.{layer}"
        batch = subject.tokenize(list(self.prompts))
        n = len(self.prompts)
        v = _seeded(subject.d_model, 0)
        clean = subject.activations(batch, [before, at])
        out = subject.forward(batch, read=[before, at],
                              interventions=[Intervention(at, "add", v, "last")])
        # resid_post.L-1 is the same tensor as resid_pre.L in the model; the read before
        # the intervention is unchanged
        _assert_close(out.activations[before], clean[before], self.atol, before)
        diff = out.activations[at] - clean[at]
        _assert_close(diff[:, -1], v.expand(n, -1), self.atol, f"{at} after adding v at the last position")
        assert diff[:, :-1].abs().max() == 0

    def test_interventions_at_masked_positions(self, subject: Any) -> None:
        batch = subject.tokenize(list(self.prompts))
        mask = batch.attention_mask.bool().clone()
        mask[:, -1] = False  # every real token but the last
        site = "resid_post.0"
        v = _seeded(subject.d_model, 5)
        clean = subject.activations(batch, [site])[site]
        out = subject.forward(batch, read=[site], interventions=[
            Intervention(site, "add", v, positions=mask)]).activations[site]
        _assert_close((out - clean)[mask], v.expand(int(mask.sum()), -1), self.atol, "masked rows")
        assert (out - clean)[~mask].abs().max() == 0

    def test_zero_and_mean_ablation(self, subject: Any) -> None:
        batch = subject.tokenize(list(self.prompts))
        n = len(self.prompts)
        mean = subject.activations(batch, ["mlp_out.0"])["mlp_out.0"].mean((0, 1))
        zero = subject.forward(batch, read=["mlp_out.0"], interventions=[
            Intervention("mlp_out.0", "ablate")]).activations["mlp_out.0"]
        meaned = subject.forward(batch, read=["mlp_out.0"], interventions=[
            Intervention("mlp_out.0", "ablate", mean, positions="last")]).activations["mlp_out.0"]
        assert zero.abs().max() == 0
        _assert_close(meaned[:, -1], mean.expand(n, -1), self.atol, "mean-ablated last position")

    def test_starting_at_a_layer_equals_the_full_run(self, subject: Any) -> None:
        batch = subject.tokenize(list(self.prompts))
        final = f"resid_post.{subject.n_layers - 1}"
        v = _seeded(subject.d_model, 3)
        for layer in sorted({0, _middle(subject), subject.n_layers - 1}):
            site = f"resid_pre.{layer}"
            clean = subject.forward(batch, read=[site], logits=True)
            full = subject.forward(batch, read=[final], logits=True,
                                   interventions=[Intervention(site, "add", v, "last")])
            resid = clean.activations[site].clone()
            resid[:, -1] += v
            started = subject.forward(batch, read=[final], logits=True,
                                      start_at=site, start_resid=resid)
            _assert_close(started.logits, full.logits, self.atol, f"logits starting at {site}")
            _assert_close(started.activations[final], full.activations[final], self.atol,
                   f"{final} starting at {site}")
        if subject.n_layers >= 2:
            start = f"resid_pre.{subject.n_layers - 1}"
            resid = subject.activations(batch, [start])[start]
            with pytest.raises(UsageError, match=f"come before {start}"):
                subject.forward(batch, read=["mlp_out.0"], start_at=start, start_resid=resid)

    # -- derived statistics and generation ----------------------------------------------------

    def test_derived_statistics(self, subject: Any) -> None:
        batch = subject.tokenize(list(self.prompts))
        last = f"resid_post.{subject.n_layers - 1}"
        clean = subject.forward(batch, read=[last], positions="last", logits=True)
        ref = clean.logits[:, -1].float().log_softmax(-1)
        final = clean.activations[last]
        s0 = subject.forward(batch, stats=StatsRequest(kl_reference=ref, topk=5, entropy=True,
                                                       final_norm=True, l2_reference=final)).stats
        assert s0["l2"].abs().max() < self.atol
        assert s0["kl"].abs().max() < self.atol  # the same run: no divergence
        assert (s0["topk_ids"] == ref.topk(5).indices).all()
        _assert_close(s0["topk_logprobs"], ref.topk(5).values, self.atol, "top-k log-probs")
        _assert_close(s0["entropy"], -(ref.exp() * ref).sum(-1), self.atol, "entropy")
        _assert_close(s0["final_norm"], final.float().norm(dim=-1), self.atol, "final_norm")
        site = f"resid_pre.{_middle(subject)}"
        v = _scaled(subject, batch, site, 2.0, seed=1)
        s1 = subject.forward(batch, read=[last], positions="last", interventions=[
            Intervention(site, "add", v)], stats=StatsRequest(kl_reference=ref, l2_reference=final))
        assert (s1.stats["kl"] > 1e-3).all()
        _assert_close(s1.stats["l2"], (s1.activations[last] - final).float().norm(dim=-1), self.atol,
               "l2 to the reference")

    def test_logprobs_are_the_last_token_log_softmax(self, subject: Any) -> None:
        batch = subject.tokenize(list(self.prompts))
        logits = subject.forward(batch, logits=True).logits
        _assert_close(subject.logprobs(batch), logits[:, -1].float().log_softmax(-1), self.atol,
               "logprobs")

    def test_generation_is_greedy_decoding_with_interventions(self, subject: Any) -> None:
        import torch

        batch = subject.tokenize(list(self.prompts[:2]))
        width = batch.shape[1]
        ids = subject.generate(batch, max_new_tokens=4)
        assert ids.shape == (2, width + 4) and torch.equal(ids[:, :width], batch.input_ids)
        mask = batch.attention_mask
        for t in range(4):
            step = Batch(ids[:, :width + t],
                         torch.cat([mask, torch.ones(2, t, dtype=mask.dtype)], 1))
            want = subject.forward(step, logits=True).logits[:, -1].argmax(-1)
            assert torch.equal(ids[:, width + t], want), f"token {t} is not the argmax"
        site = f"resid_pre.{_middle(subject)}"
        steer = [Intervention(site, "add", _scaled(subject, batch, site, 8.0, seed=2))]
        steered = subject.generate(batch, max_new_tokens=4, interventions=steer)
        assert not torch.equal(steered, ids), "a large steering vector changed nothing"
        # a cached generation is the same computation as re-running every step
        assert torch.equal(steered, subject._generate_rerun(batch, max_new_tokens=4,
                                                            interventions=steer)), (
            "steered generation differs from re-running the sequence at every step")
        sampled = [subject.generate(batch, max_new_tokens=4, do_sample=True, seed=7)
                   for _ in range(2)]
        assert torch.equal(*sampled), "sampling with a seed is not reproducible"
        assert torch.equal(sampled[0], subject._generate_rerun(
            batch, max_new_tokens=4, do_sample=True, seed=7)), (
            "sampling with a seed differs from the re-run reference's")
        with pytest.raises(UsageError, match="positions='all'"):
            subject.generate(batch, max_new_tokens=1,
                             interventions=[Intervention(site, "add", steer[0].value, "last")])

    # -- errors ------------------------------------------------------------------------------

    def test_bad_sites_and_interventions_are_clear_errors(self, subject: Any) -> None:
        n = subject.n_layers
        prompts = list(self.prompts)
        with pytest.raises(UsageError, match="unknown site 'resid.1'"):
            subject.activations(prompts, ["resid.1"])
        with pytest.raises(UsageError, match=f"has {n} blocks"):
            subject.activations(prompts, [f"resid_pre.{n + 5}"])
        with pytest.raises(UsageError, match="needs a value"):
            Intervention("resid_pre.0", "add")
        with pytest.raises(UsageError, match="op must be add, replace or ablate"):
            Intervention("resid_pre.0", "scale", None)
        with pytest.raises(UsageError, match="positions must be"):
            subject.activations(prompts, ["resid_pre.0"], positions="first")
        hook = f"blocks.{_middle(subject)}.hook_resid_pre"
        assert subject.activations(prompts, [hook]).keys() == {hook}
        with pytest.raises(UsageError, match="start_at must be a resid_pre.L site"):
            subject.forward(prompts, start_at="mlp_out.0")

    # -- exactness against the reference model (when the subclass gives one) ----------------

    def test_matches_the_reference_model(self, subject: Any, request: Any) -> None:
        import torch

        reference = _reference(request)
        if reference is None:
            pytest.skip("no reference model (define a `reference` fixture)")
        batch = subject.tokenize(list(self.prompts))
        mask = batch.attention_mask.bool()
        with torch.no_grad():
            hf = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, output_hidden_states=True)
        sites = [f"resid_pre.{i}" for i in range(subject.n_layers)] + ["ln_final", "logits"]
        ours = subject.activations(batch, sites, positions=mask)
        # hidden_states[L] enters block L; the last one is after the final norm
        for i, site in enumerate(sites[:-1]):
            _assert_close(ours[site], hf.hidden_states[i][mask], self.agreement_atol, site)
        _assert_close(ours["logits"], hf.logits[mask], self.agreement_atol, "logits")

    def test_greedy_generation_matches_the_reference_model(self, subject: Any,
                                                           request: Any) -> None:
        import torch

        reference = _reference(request)
        if reference is None:
            pytest.skip("no reference model (define a `reference` fixture)")
        batch = subject.tokenize(list(self.prompts[:2]))
        ours = subject.generate(batch, max_new_tokens=5)
        with torch.no_grad():
            theirs = reference.generate(batch.input_ids, attention_mask=batch.attention_mask,
                                        max_new_tokens=5, do_sample=False,
                                        pad_token_id=subject.pad_token_id)
        assert torch.equal(ours, theirs)


def _reference(request: Any) -> Any:
    """The ``reference`` fixture's value where the test module defines one, else None."""
    try:
        return request.getfixturevalue("reference")
    except pytest.FixtureLookupError:
        return None


def _allclose(a: Any, b: Any, atol: float = 1e-5) -> bool:
    import torch

    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol)
