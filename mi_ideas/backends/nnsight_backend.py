"""The nnsight back-end: any Hugging Face causal LM, through nnsight's ``TransformersModel``.

Every architecture gets the same module names through nnsight's own ``rename=`` aliases
(nnterp's approach; nnterp itself does not import with nnsight 0.8): ``layers``,
``layers[i].attn``, ``.mlp``, ``.ln_1``, ``.ln_2``, ``ln_final``, ``embed``, ``unembed``, and,
for architectures that normalise a sublayer's output before adding it (Gemma-2),
``attn_post_norm`` / ``mlp_post_norm``. A new architecture is one entry in
:data:`ARCHITECTURES` (or a plugin back-end), never a new code path.

Code inside the trace uses torch and :mod:`mi_ideas.trace_ops` only, which imports
nothing but torch, so the same trace can run on a server without mi_ideas.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mi_ideas import trace_ops
from mi_ideas.errors import UsageError
from mi_ideas.sites import Site, sort_sites
from mi_ideas.subject import (
    Batch,
    ForwardOutput,
    Intervention,
    PrefixCache,
    StatsRequest,
    Subject,
    last_position_stats,
    model_lock,
    position_index,
)

_LLAMA_LIKE = {
    "model.layers": "layers",
    "model.norm": "ln_final",
    "model.embed_tokens": "embed",
    "lm_head": "unembed",
    "self_attn": "attn",
    "input_layernorm": "ln_1",
    "post_attention_layernorm": "ln_2",
}


def _refuse_resid_mid_intervention(site: Any) -> None:
    raise UsageError(
        "the nnsight back-end can read resid_mid but not intervene on it (the residual "
        f"stream is not a module boundary there); intervene on attn_out.{site.layer} or "
        "resid_pre/resid_post instead."
    )


@dataclass(frozen=True)
class Architecture:
    """How one Hugging Face architecture maps onto the standard module names."""

    rename: dict[str, str]
    #: config attribute that says attention and MLP both read resid_pre (GPT-NeoX)
    parallel_attr: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture({
        "transformer.h": "layers",
        "transformer.ln_f": "ln_final",
        "transformer.wte": "embed",
        "lm_head": "unembed",
    }),
    "gpt_neox": Architecture({
        "gpt_neox.layers": "layers",
        "gpt_neox.final_layer_norm": "ln_final",
        "gpt_neox.embed_in": "embed",
        "embed_out": "unembed",  # transformers < 5
        "lm_head": "unembed",  # transformers >= 5 renamed embed_out to lm_head
        "attention": "attn",
        "input_layernorm": "ln_1",
        "post_attention_layernorm": "ln_2",
    }, parallel_attr="use_parallel_residual", notes="Pythia: parallel attention+MLP, no resid_mid"),
    "llama": Architecture(_LLAMA_LIKE),
    "mistral": Architecture(_LLAMA_LIKE),
    "qwen2": Architecture(_LLAMA_LIKE),
    "qwen3": Architecture(_LLAMA_LIKE),
    "gemma2": Architecture({
        **{k: v for k, v in _LLAMA_LIKE.items() if k != "post_attention_layernorm"},
        "pre_feedforward_layernorm": "ln_2",
        "post_attention_layernorm": "attn_post_norm",
        "post_feedforward_layernorm": "mlp_post_norm",
    }, notes="attn_out / mlp_out are read after Gemma-2's post-sublayer norms"),
}


def architecture_of(config: Any) -> Architecture:
    """The :class:`Architecture` for a Hugging Face config, or a clear error."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UsageError(
            f"the nnsight back-end has no site mapping for architecture {model_type!r}. "
            f"Supported: {', '.join(sorted(ARCHITECTURES))}. Add an entry to "
            f"mi_ideas.backends.nnsight_backend.ARCHITECTURES (or register a back-end from a "
            f"plugin) naming its blocks, attention, MLP and norms."
        )
    return ARCHITECTURES[model_type]


def weights_fingerprint(module: Any) -> str:
    """A short hash of a model's config and a sample of every parameter (cheap, weight-sensitive)."""
    import torch

    h = hashlib.sha256()
    cfg = getattr(module, "config", None)
    if cfg is not None:
        h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.device.type == "meta":
                continue
            flat = p.detach().reshape(-1)
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(flat[:256].float().cpu().numpy().tobytes())
            h.update(flat[-256:].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class NNsightSubject(Subject):
    """A subject run through nnsight (locally, or remotely with ``remote=``)."""

    backend = "nnsight"

    def __init__(self, model: Any, *, spec: str | None = None, remote: Any = False,
                 check: bool = True):
        config = model.config
        self.arch = architecture_of(config)
        self.model = model
        # nnsight's own ``remote=`` value: False, "local" (the rehearsal), True or a URL.
        self._nnsight_remote = remote
        self.remote = bool(remote)
        self.on_server = self.remote and remote != "local"
        if self.remote:
            _ship_trace_ops()
        n_layers = int(getattr(config, "num_hidden_layers", None) or config.n_layer)
        d_model = int(getattr(config, "hidden_size", None) or config.n_embd)
        parallel = bool(self.arch.parallel_attr and getattr(config, self.arch.parallel_attr, False))
        if self.remote and remote != "local":
            from mi_ideas.remote import model_key

            # No weights on this side: the server's model key names them.
            fingerprint = hashlib.sha256(model_key(model).encode()).hexdigest()[:16]
        else:
            fingerprint = weights_fingerprint(model._module)
        super().__init__(
            spec=spec or str(getattr(model, "repo_id", "nnsight-model")),
            tokenizer=model.tokenizer, n_layers=n_layers, d_model=d_model,
            d_vocab=int(config.vocab_size), parallel_residual=parallel, fingerprint=fingerprint,
        )
        self.block_output_is_tuple = False  # transformers >= 5; probed below when local
        if check:
            self.check_renaming(run=not self.remote or remote == "local")
        if not (self.remote and remote != "local") and hasattr(model, "layers"):
            self.block_output_is_tuple = _block_returns_tuple(model)

    def reinitialized(self, seed: int = 0) -> "NNsightSubject":
        """A fresh, seeded initialisation of the same architecture (local models only)."""
        import torch
        from transformers import AutoModelForCausalLM

        if self.on_server:
            return super().reinitialized(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            fresh = AutoModelForCausalLM.from_config(self.model._module.config).eval()
        return load_nnsight(fresh, spec=f"{self.spec}#reinit{seed}", tokenizer=self.tokenizer)

    def parameters(self, names: Sequence[str]) -> "dict[str, Any]":
        """See :meth:`Subject.parameters`: locally the module's own tensors (detached
        copies); remotely one one-token trace that saves every named tensor (the names are
        checked first on the local, possibly weightless, copy of the model)."""
        tensors = self._local_tensors(self.model._module, names, self.spec)
        if not self.remote:
            return {n: t.detach().cpu().clone() for n, t in tensors.items()}
        import torch

        owners = []
        for name in names:
            path, _, attr = name.rpartition(".")
            envoy = self.model
            for part in path.split(".") if path else []:
                envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
            owners.append((name, envoy, attr))
        one = torch.zeros(1, 1, dtype=torch.long)
        inputs = dict(input_ids=one, attention_mask=torch.ones_like(one))
        from mi_ideas.remote import remote_errors

        with remote_errors(self._nnsight_remote, self.spec):
            saved = _run_parameter_trace(self.model, inputs, {"remote": self._nnsight_remote}, owners)
        saved = _value(saved)
        # clone: under the rehearsal the saved tensors share the live parameters' storage
        return {n: _value(saved[n]).clone() for n in names}

    # -- renaming check ----------------------------------------------------------------

    def check_renaming(self, run: bool = True) -> None:
        """Check the aliases resolved: layer count, required modules, and site shapes."""
        m = self.model
        problems = []
        layers = getattr(m, "layers", None)
        if layers is None:
            problems.append("no 'layers' alias")
        elif len(layers) != self.n_layers:
            problems.append(f"'layers' has {len(layers)} blocks, config says {self.n_layers}")
        for name in ("ln_final", "unembed"):
            if not hasattr(m, name):
                problems.append(f"no {name!r} alias")
        if layers is not None and len(layers):
            for name in ("attn", "mlp", "ln_1", "ln_2"):
                if not hasattr(layers[0], name):
                    problems.append(f"block 0 has no {name!r} alias")
        if not problems and run:
            out = self.forward([[1, 2, 3]] if self.tokenizer is None else self.tokenize("a b"),
                               read=self.sites, positions="all")
            for site, x in out.activations.items():
                want = self.d_vocab if site == "logits" else self.d_model
                if x.shape[-1] != want:
                    problems.append(f"site {site} has width {x.shape[-1]}, expected {want}")
        if problems:
            raise UsageError(
                f"nnsight renaming check failed for {self.spec!r} "
                f"({self.model.config.model_type}): {'; '.join(problems)}. The module names "
                f"of this checkpoint differ from mi_ideas.backends.nnsight_backend.ARCHITECTURES."
            )

    # -- forward ---------------------------------------------------------------------

    def _envoy(self, site: Site) -> tuple[Any, str, int | None]:
        """(envoy, 'input' | 'output', tuple index) where a site lives."""
        m = self.model
        if site.kind == "ln_final":
            return m.ln_final, "output", None
        block = m.layers[site.layer]
        if site.kind == "resid_pre":
            return block, "input", None
        if site.kind == "resid_post":
            return block, "output", 0
        if site.kind == "attn_out":
            if hasattr(block, "attn_post_norm"):
                return block.attn_post_norm, "output", None
            return block.attn, "output", 0
        if site.kind == "resid_mid":
            return block.ln_2, "input", None
        if site.kind == "mlp_in":
            return block.mlp, "input", None
        if site.kind == "mlp_out":
            if hasattr(block, "mlp_post_norm"):
                return block.mlp_post_norm, "output", None
            return block.mlp, "output", 0
        raise UsageError(f"site {site} has no nnsight location")  # pragma: no cover

    def _forward(self, batch: Batch, read: dict[str, Site], positions: Any,
                 interventions: list[Intervention], logits: bool, stats: StatsRequest | None,
                 start_layer: int | None = None, start_resid: Any = None) -> ForwardOutput:

        read_index = position_index(positions, batch)
        # Everything the trace touches, in execution order: (site, interventions, names to read).
        names = list(read) + [iv.site for iv in interventions]
        plan = []
        for site in sort_sites(names, self.n_layers):
            if site.kind == "logits":
                continue
            ivs = [(iv.op, iv.value, position_index(iv.positions, batch))
                   for iv in interventions if self.site(iv.site) == site]
            if ivs and site.kind == "resid_mid":
                _refuse_resid_mid_intervention(site)
            reads = [n for n, s in read.items() if s == site]
            plan.append((self._envoy(site), ivs, reads))
        want_stats = stats is not None and stats.wants_anything()
        stat_index = position_index(stats.positions, batch) if want_stats else None
        final_envoy = self.model.ln_final if want_stats and stats.needs_final_resid else None
        inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids)
        trace_kwargs = {"remote": self._nnsight_remote} if self.remote else {}
        logit_reads = [name for name, s in read.items() if s.kind == "logits"]
        stat_args = stats.args(stat_index) if want_stats else None
        # Starting at block L: blocks before it are skipped (their output is never
        # computed), and block L-1's stand-in output is the given residual stream.
        skips = []
        if start_layer:
            out = (start_resid,) if self.block_output_is_tuple else start_resid
            skips = [(self.model.layers[i], out) for i in range(start_layer)]
        elif start_layer == 0:
            replace = ("replace", start_resid, None)
            first = self._envoy(self.site("resid_pre.0"))
            if plan and plan[0][0][0] is first[0] and plan[0][0][1] == "input":
                plan[0] = (plan[0][0], [replace, *plan[0][1]], plan[0][2])
            else:
                plan.insert(0, (first, [replace], []))
        if self.on_server:
            from mi_ideas.remote import remote_errors

            with remote_errors(self._nnsight_remote, self.spec):
                saved = _run_trace(self.model, inputs, trace_kwargs, skips, plan, read_index,
                                   logit_reads, logits, stat_args, final_envoy)
        else:
            with model_lock(self.model._module):  # see model_lock: the fast path's bypasses
                saved = _run_trace(self.model, inputs, trace_kwargs, skips, plan, read_index,
                                   logit_reads, logits, stat_args, final_envoy)
        saved = _value(saved)
        result = ForwardOutput()
        for name in read:
            result.activations[name] = _value(saved[name])
        if logits:
            result.logits = _value(saved["__logits__"])
        if want_stats:
            result.stats = {k: _value(v) for k, v in _value(saved["__stats__"]).items()}
        return result

    # -- generation ------------------------------------------------------------------

    def _generate(self, batch: Batch, max_new_tokens: int, interventions: list[Intervention],
                  do_sample: bool, temperature: float, seed: int) -> Any:
        """One nnsight ``generate`` trace (hence one remote request for the batch): Hugging
        Face's own decoding loop with its key/value cache, the interventions applied at each
        of the ``max_new_tokens`` forwards (``tracer.iter``). Hugging Face decodes greedily
        with every logits processor neutral and an end-of-text id no token has, so it never
        stops early or suppresses a token; when sampling, the token is drawn inside the trace
        (:func:`mi_ideas.trace_ops.next_tokens`, a CPU generator seeded with ``seed``) and
        made the argmax of the last position's logits."""
        plan = []
        for site in sort_sites([iv.site for iv in interventions], self.n_layers):
            if site.kind == "resid_mid":
                _refuse_resid_mid_intervention(site)
            ivs = [(iv.op, iv.value, None) for iv in interventions if self.site(iv.site) == site]
            plan.append((self._envoy(site), ivs))
        kwargs: dict[str, Any] = dict(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            # no token has this id: Hugging Face neither stops at nor suppresses a real EOS
            eos_token_id=self.d_vocab, pad_token_id=self.pad_token_id,
            repetition_penalty=1.0, no_repeat_ngram_size=0, bad_words_ids=None,
            suppress_tokens=None, begin_suppress_tokens=None, forced_bos_token_id=None,
            forced_eos_token_id=None, sequence_bias=None, min_length=0, min_new_tokens=None,
            use_cache=True)
        if self.remote:
            kwargs["remote"] = self._nnsight_remote
        sample = (temperature, seed) if do_sample else None
        if self.on_server:
            from mi_ideas.remote import remote_errors

            with remote_errors(self._nnsight_remote, self.spec):
                ids = _run_generate(self.model, kwargs, plan, max_new_tokens, sample)
        else:
            with model_lock(self.model._module):
                ids = _run_generate(self.model, kwargs, plan, max_new_tokens, sample)
        return _value(ids).detach().cpu()

    # -- the last-position fast path (local) ----------------------------------------

    def _prefix_cache(self, batch: Batch) -> PrefixCache:
        """One forward of the Hugging Face model over ``input_ids[:, :-1]``, keeping every
        layer's keys and values.

        A plain ``DynamicCache`` (no config) keeps the full length even for sliding-window
        layers, so the last position's masks come out exactly as in a full forward. Each
        layer's tensors get one spare slot at the end, which the last position's key and
        value are written into (see :func:`_slot_layer_class`).
        """
        return self._prefix(batch, 0, None)

    def _prefix_cache_from(self, batch: Batch, layer: int, resid: Any) -> PrefixCache:
        """As :meth:`_prefix_cache`, but blocks before ``layer`` are bypassed and block
        ``layer``'s input is ``resid[:, :-1]`` (a pre-hook, as in the last-position path).
        The bypassed layers' cache entries stand in with block ``layer``'s tensors: they
        are never read, only their length (for the masks)."""
        return self._prefix(batch, layer, resid)

    def _prefix(self, batch: Batch, layer: int, resid: Any) -> PrefixCache:
        import torch
        from transformers import DynamicCache

        module = self.model._module
        device = _device_of(module)
        state = None
        if batch.shape[1] > 1:
            past = DynamicCache()
            kwargs = {_cache_kwarg(module): past, "use_cache": True}
            if _accepts(module, "logits_to_keep"):
                kwargs["logits_to_keep"] = 1  # the prefix's logits are never used
            blocks = [self.model.layers[i]._module for i in range(self.n_layers)]

            def replace(mod: Any, args: tuple, kw: dict) -> Any:
                h = args[0] if args else kw["hidden_states"]
                new = resid[:, :-1].to(device=h.device, dtype=h.dtype)
                if args:
                    return (new, *args[1:]), kw
                return args, {**kw, "hidden_states": new}

            with torch.no_grad(), model_lock(module):
                handles = ([blocks[layer].register_forward_pre_hook(replace, with_kwargs=True)]
                           if resid is not None else [])
                try:
                    with _bypassed(blocks[:layer], self.block_output_is_tuple):
                        module(input_ids=batch.input_ids[:, :-1].to(device),
                               attention_mask=batch.attention_mask[:, :-1].to(device),
                               position_ids=batch.position_ids[:, :-1].to(device), **kwargs)
                finally:
                    for handle in handles:
                        handle.remove()
                layers = _cache_tensors(past)
                if len(layers) != self.n_layers or any(k is None for k, _ in layers[layer:]):
                    raise NotImplementedError(
                        f"the key/value cache of {self.spec} has {len(layers)} layers, not "
                        f"{self.n_layers}; use forward(...) for this architecture."
                    )
                state = [tuple(torch.cat([t, t.new_zeros(*t.shape[:-2], 1, t.shape[-1])],
                                         dim=-2) for t in kv) for kv in layers[layer:]]
                state = [state[0]] * layer + state
        return PrefixCache(state=state, **self._prefix_fields(batch, layer))

    def _forward_last_token(self, cache: PrefixCache, rows: Any, layer: int, x: Any,
                            stats: StatsRequest | None, logits: bool) -> ForwardOutput:
        """The Hugging Face model's own forward on the last position only, against a fresh
        cache gathered at ``rows``: blocks before ``layer`` are bypassed (their output at the
        last position only feeds block ``layer``'s input, which is replaced), a pre-hook on
        block ``layer`` sets its input to ``x``, one on the final norm reads the final
        residual stream. Hooks and bypasses live on the shared modules for the call, so it
        holds :func:`model_lock` of the module, as every local forward of this back-end does:
        threads sharing a model wait for each other instead of seeing bypassed blocks."""
        import torch

        module = self.model._module
        device = _device_of(module)
        n = int(rows.shape[0])
        kwargs: dict[str, Any] = {}
        if cache.state is not None:
            kwargs = {_cache_kwarg(module): _gathered_cache(cache.state, rows, layer),
                      "use_cache": True}
        want_stats = stats is not None and stats.wants_anything()
        want_final = want_stats and stats.needs_final_resid
        final: list = []

        def replace(mod: Any, args: tuple, kw: dict) -> Any:
            h = args[0] if args else kw["hidden_states"]
            new = x.to(device=h.device, dtype=h.dtype).reshape(h.shape)
            if args:
                return (new, *args[1:]), kw
            return args, {**kw, "hidden_states": new}

        def read_final(mod: Any, args: tuple, kw: dict) -> None:
            final.append(args[0] if args else kw["hidden_states"])

        blocks = [self.model.layers[i]._module for i in range(self.n_layers)]
        with model_lock(module), torch.no_grad():
            handles = [blocks[layer].register_forward_pre_hook(replace, with_kwargs=True)]
            if want_final:
                handles.append(self.model.ln_final._module.register_forward_pre_hook(
                    read_final, with_kwargs=True))
            try:
                with _bypassed(blocks[:layer], self.block_output_is_tuple):
                    out = module(
                        input_ids=cache.last_ids.index_select(0, rows).to(device),
                        attention_mask=cache.attention_mask.index_select(0, rows).to(device),
                        position_ids=cache.last_position_ids.index_select(0, rows).to(device),
                        **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
        out_logits = out.logits
        if tuple(out_logits.shape[:2]) != (n, 1):  # pragma: no cover - a model's own contract
            raise NotImplementedError(f"{self.spec} returned logits of shape "
                                      f"{tuple(out_logits.shape)} for one position.")
        result = ForwardOutput()
        if logits:
            result.logits = out_logits.detach().cpu()
        if want_stats:
            computed = last_position_stats(out_logits, final[0] if final else None, stats)
            result.stats = {k: v.detach().cpu() for k, v in computed.items()}
        return result


_MISSING = object()


class _bypassed:
    """Within the block, ``blocks`` return their hidden-state input unchanged (their
    ``forward`` replaced on the instance, nnsight's own forward restored afterwards)."""

    def __init__(self, blocks: list, as_tuple: bool):
        self.blocks, self.as_tuple, self.saved = blocks, as_tuple, []

    def __enter__(self) -> None:
        as_tuple = self.as_tuple

        def identity(*args: Any, **kwargs: Any) -> Any:
            h = args[0] if args else kwargs["hidden_states"]
            return (h,) if as_tuple else h

        for block in self.blocks:
            self.saved.append((block, block.__dict__.get("forward", _MISSING)))
            block.forward = identity

    def __exit__(self, *exc: Any) -> None:
        for block, forward in self.saved:
            if forward is _MISSING:
                del block.forward
            else:
                block.forward = forward
        self.saved = []


def _gathered_cache(state: list, rows: Any, first: int) -> Any:
    """A fresh ``DynamicCache`` of the prefix at ``rows``, one spare slot per layer for the
    last position. Layers before ``first`` are bypassed: they get a zero-cost view (only its
    length is read, for the masks)."""
    from transformers import DynamicCache

    past = DynamicCache()
    layers = []
    for i, (k, v) in enumerate(state):
        if i < first:
            k, v = (t[:1].expand(int(rows.shape[0]), *t.shape[1:]) for t in (k, v))
        else:
            idx = rows.to(k.device)
            k, v = k.index_select(0, idx), v.index_select(0, idx)  # copies: the prefix stays
        layers.append(_slot_layer(k, v))
    past.layers = layers
    return past


def _slot_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        """A cache layer of prefix keys/values plus one spare slot at the end: ``update``
        writes the (one-position) new key/value into the slot instead of concatenating."""

        def __init__(self, keys: Any, values: Any):
            super().__init__()
            self.keys, self.values = keys, values
            self.device = keys.device
            self.is_initialized = True
            self.filled = False

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            if self.filled or key_states.shape[-2] != 1:  # pragma: no cover - one call only
                raise RuntimeError("a last-position cache layer takes one position, once.")
            self.keys[..., -1:, :] = key_states
            self.values[..., -1:, :] = value_states
            self.filled = True
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return int(self.keys.shape[-2]) - (0 if self.filled else 1)

    return SlotLayer


_SLOT_LAYER: Any = None


def _slot_layer(keys: Any, values: Any) -> Any:
    """A ``SlotLayer`` (the class is made on first use: transformers is imported lazily)."""
    global _SLOT_LAYER
    if _SLOT_LAYER is None:
        _SLOT_LAYER = _slot_layer_class()
    return _SLOT_LAYER(keys, values)


def _device_of(module: Any) -> Any:
    import torch

    for p in module.parameters():
        return p.device
    return torch.device("cpu")  # pragma: no cover


def _accepts(module: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _cache_kwarg(module: Any) -> str:
    """The forward's key/value cache argument: ``cache`` (transformers >= 5.2x) or
    ``past_key_values`` (earlier releases)."""
    return "cache" if _accepts(module, "cache") else "past_key_values"


def _cache_tensors(past: Any) -> list:
    """Per-layer ``(keys, values)`` of a Hugging Face cache, across transformers versions."""
    layers = getattr(past, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(past.key_cache, past.value_cache))  # pragma: no cover - transformers 4.x


def _run_trace(model: Any, inputs: dict, trace_kwargs: dict, skips: list, plan: list,
               read_index: Any,
               logit_reads: list, want_logits: bool, stat_args: tuple | None,
               final_envoy: Any) -> dict:
    """The one trace of a forward: apply interventions, read sites, compute statistics.

    Kept to a module-level function with few, plain locals because, for a remote run,
    nnsight serializes this frame's locals and the ``with`` block's source: only torch,
    nnsight and :mod:`mi_ideas.trace_ops` (shipped by value) are used inside.
    """
    import nnsight
    import torch

    # The functions, not the module: a module pickled by value drags in its whole
    # namespace (including builtins), while functions carry only the globals they use.
    ops = (trace_ops.select, trace_ops.intervene_at, trace_ops.stats)
    with torch.no_grad():  # outside the traced frame: its `with` source is what ships
        return _trace_body(model, inputs, trace_kwargs, skips, plan, read_index, logit_reads,
                           want_logits, stat_args, final_envoy, ops, nnsight)


def _trace_body(model: Any, inputs: dict, trace_kwargs: dict, skips: list, plan: list,
                read_index: Any,
                logit_reads: list, want_logits: bool, stat_args: tuple | None,
                final_envoy: Any, ops: tuple, nnsight: Any) -> dict:
    """The traced frame: its locals are tensors, envoys, ints and the shipped functions."""
    select, intervene_at, stats = ops
    with model.trace(**inputs, **trace_kwargs):
        saved = {}
        final_resid = None
        for block, output in skips:
            block.skip(output)
        for (envoy, where, tuple_index), ivs, reads in plan:
            if final_envoy is not None and envoy is final_envoy:
                final_resid = final_envoy.input
            value = intervene_at(envoy, where, tuple_index, ivs)
            for name in reads:
                saved[name] = select(value, read_index).detach().cpu()
        if final_envoy is not None and final_resid is None:
            final_resid = final_envoy.input
        out_logits = model.output.logits
        for name in logit_reads:
            saved[name] = select(out_logits, read_index).detach().cpu()
        if want_logits:
            saved["__logits__"] = out_logits.detach().cpu()
        if stat_args is not None:
            computed = stats(out_logits, final_resid, *stat_args)
            saved["__stats__"] = {k: v.detach().cpu() for k, v in computed.items()}
        saved = nnsight.save(saved)
    return saved


def _run_parameter_trace(model: Any, inputs: dict, trace_kwargs: dict, owners: list) -> dict:
    """One trace that saves the tensors ``owners`` names ((name, envoy, attribute) triples);
    like :func:`_run_trace`, only torch and nnsight run inside (no import of this package
    on the server)."""
    import nnsight
    import torch

    with torch.no_grad():
        with model.trace(**inputs, **trace_kwargs):
            saved = {}
            for name, envoy, attr in owners:
                saved[name] = getattr(envoy, attr).detach().cpu()
            saved = nnsight.save(saved)
    return saved


def _run_generate(model: Any, kwargs: dict, plan: list, n_steps: int,
                  sample: tuple | None) -> Any:
    """The one ``generate`` trace of a generation (see :func:`_run_trace` on what ships)."""
    import nnsight
    import torch

    ops = (trace_ops.intervene_at, trace_ops.next_tokens, trace_ops.force_next,
           trace_ops.cpu_generator)
    with torch.no_grad():
        return _generate_body(model, kwargs, plan, n_steps, sample, model.unembed, ops, nnsight)


def _generate_body(model: Any, kwargs: dict, plan: list, n_steps: int, sample: tuple | None,
                   unembed: Any, ops: tuple, nnsight: Any) -> Any:
    """The traced frame of a generation: the same interventions at each of ``n_steps``
    forwards (the prompt's, then one per new token); with ``sample`` (temperature, seed) the
    next token is drawn here and forced as the argmax."""
    intervene_at, next_tokens, force_next, cpu_generator = ops
    with model.generate(**kwargs) as tracer:
        gen = None if sample is None else cpu_generator(sample[1])
        for _step in tracer.iter[:n_steps]:
            for (envoy, where, tuple_index), ivs in plan:
                intervene_at(envoy, where, tuple_index, ivs)
            if sample is not None:
                logits = unembed.output
                unembed.output = force_next(logits, next_tokens(logits[:, -1], True, sample[0],
                                                                gen))
        ids = nnsight.save(tracer.result)
    return ids


def _block_returns_tuple(model: Any) -> bool:
    """Whether this model's blocks return a tuple (older transformers) or a tensor."""
    import torch

    block = model.layers[0]._module
    seen: list[bool] = []
    handle = block.register_forward_hook(lambda mod, args, out: seen.append(isinstance(out, tuple)))
    try:
        with torch.no_grad():
            ids = torch.zeros(1, 1, dtype=torch.long)
            model._module(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        handle.remove()
    return bool(seen and seen[0])


_SHIPPED = False


def _ship_trace_ops() -> None:
    """Send :mod:`mi_ideas.trace_ops` by value with remote requests.

    A server does not have mi_ideas installed; ``nnsight.register`` makes nnsight serialize
    the module's source with each request instead of a reference to it.
    """
    global _SHIPPED
    if not _SHIPPED:
        import nnsight

        nnsight.register(trace_ops)
        _SHIPPED = True


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


# -- loading -----------------------------------------------------------------------------


def load_nnsight(source: Any, *, spec: str | None = None, remote: Any = False,
                 dtype: Any = None, tokenizer: Any = None, check: bool = True) -> NNsightSubject:
    """A :class:`NNsightSubject` from a repo id / local directory / loaded HF model / nnsight model."""
    import warnings

    from nnsight import LanguageModel, TransformersModel

    if isinstance(source, (TransformersModel, LanguageModel)):
        model = source
        config = model.config
        rename = _merged_rename(getattr(model, "_rename", None), architecture_of(config).rename)
        if rename != (getattr(model, "_rename", None) or {}):
            # The user's model lacks the standard aliases: wrap the same module again with
            # them (no weights are copied); a weightless model is rebuilt from its repo id.
            weights = getattr(model, "_module", None)
            loaded = weights is not None and not any(
                p.device.type == "meta" for p in weights.parameters())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = TransformersModel(weights if loaded else model.repo_id,
                                          task="text-generation", tokenizer=model.tokenizer,
                                          rename=rename, **({"dispatch": True} if loaded else {}))
        return NNsightSubject(model, spec=spec or str(getattr(source, "repo_id", "nnsight-model")),
                              remote=remote, check=check)

    from transformers import AutoConfig, PreTrainedModel

    if isinstance(source, PreTrainedModel):
        config = source.config
    else:
        try:
            config = AutoConfig.from_pretrained(str(source))
        except OSError as exc:
            raise UsageError(
                f"cannot load a model config from {str(source)!r}: {exc}. Give a local Hugging "
                f"Face model directory (with config.json) or a repo id reachable from here "
                f"(HF_HUB_OFFLINE=1 allows only what is in the local cache)."
            ) from None
    arch = architecture_of(config)
    kwargs: dict[str, Any] = {"task": "text-generation", "rename": dict(arch.rename)}
    weightless = bool(remote) and remote != "local"
    if tokenizer is None and weightless and isinstance(source, (str, Path)):
        # nnsight 0.8.1 cannot infer the tokenizer of a weightless (meta) model under
        # transformers 5: hand it over.
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source))
    if tokenizer is not None:
        kwargs["tokenizer"] = tokenizer
    if dtype is not None:
        kwargs["dtype"] = dtype
    if not weightless:
        kwargs["dispatch"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TransformersModel(source, **kwargs)
    if not weightless:
        model._module.eval()
    else:
        from mi_ideas.remote import configure, prepare_model_key

        remote = configure(remote)
        prepare_model_key(model)
    return NNsightSubject(model, spec=spec or str(source), remote=remote, check=check)


def _merged_rename(existing: dict | None, standard: dict) -> dict:
    merged = dict(existing or {})
    for k, v in standard.items():
        merged.setdefault(k, v)
    return merged
