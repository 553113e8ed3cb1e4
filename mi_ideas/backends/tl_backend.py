"""The TransformerLens back-end: ``HookedTransformer`` and SAELens's ``HookedSAETransformer``.

Models are built with LayerNorm weights *not* folded and writing weights not centred, so
every hook holds the same numbers as the Hugging Face model (the agreement test checks
this against the nnsight back-end). Local models are built from their config plus
converted weights (``transformer_lens.pretrained.weight_conversions``), never with
``from_pretrained``, which asks the Hub.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mi_ideas import trace_ops
from mi_ideas.errors import UsageError
from mi_ideas.sites import Site, to_hook_name
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

_NO_FOLD = dict(fold_ln=False, center_writing_weights=False, center_unembed=False,
                fold_value_biases=False)


class TLSubject(Subject):
    """A subject run by TransformerLens (local only)."""

    backend = "transformer_lens"

    def __init__(self, model: Any, *, spec: str | None = None):
        cfg = model.cfg
        if getattr(cfg, "normalization_type", None) in ("LNPre", "RMSPre"):
            warnings.warn(
                "this HookedTransformer has folded LayerNorm weights: its resid/attn/mlp "
                "sites are equivalent but not numerically equal to the Hugging Face model's "
                "(mlp_in differs). Build it with fold_ln=False to compare across back-ends.",
                stacklevel=2,
            )
        self.model = model.eval()
        from mi_ideas.backends.nnsight_backend import weights_fingerprint

        super().__init__(
            spec=spec or f"tl:{cfg.model_name}", tokenizer=model.tokenizer,
            n_layers=cfg.n_layers, d_model=cfg.d_model, d_vocab=cfg.d_vocab,
            parallel_residual=bool(getattr(cfg, "parallel_attn_mlp", False)),
            fingerprint=weights_fingerprint(model),
        )

    def parameters(self, names):
        """See :meth:`Subject.parameters` (TransformerLens's names, e.g. ``blocks.1.mlp.W_in``)."""
        return {n: t.detach().cpu().clone()
                for n, t in self._local_tensors(self.model, names, self.spec).items()}

    def reinitialized(self, seed: int = 0) -> "TLSubject":
        """A fresh, seeded initialisation of the same TransformerLens architecture."""
        import torch

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            fresh = type(self.model)(self.model.cfg, tokenizer=self.model.tokenizer,
                                     move_to_device=False)
        return TLSubject(fresh, spec=f"{self.spec}#reinit{seed}")

    def _forward(self, batch: Batch, read: dict[str, Site], positions: Any,
                 interventions: list[Intervention], logits: bool, stats: StatsRequest | None,
                 start_layer: int | None = None, start_resid: Any = None) -> ForwardOutput:
        # Hooks are registered on shared modules for the call: one call at a time per model.
        with model_lock(self.model):
            return self._forward_locked(batch, read, positions, interventions, logits, stats,
                                        start_layer, start_resid)

    def _norm_module(self, hook_name: str) -> Any:
        """The LayerNorm module whose output a ``hook_normalized`` site is."""
        if hook_name.startswith("ln_final"):
            return self.model.ln_final
        return self.model.blocks[int(hook_name.split(".")[1])].ln2

    def _forward_locked(self, batch: Batch, read: dict[str, Site], positions: Any,
                        interventions: list[Intervention], logits: bool,
                        stats: StatsRequest | None, start_layer: int | None = None,
                        start_resid: Any = None) -> ForwardOutput:
        import torch

        read_index = position_index(positions, batch)
        saved: dict[str, torch.Tensor] = {}
        by_hook: dict[str, tuple[list, list]] = {}
        for name, site in read.items():
            if site.kind != "logits":
                by_hook.setdefault(to_hook_name(site), ([], []))[1].append(name)
        for iv in interventions:
            site = self.site(iv.site)
            if site.kind == "logits":
                raise UsageError("interventions on logits are not supported; change ln_final.")
            by_hook.setdefault(to_hook_name(site), ([], []))[0].append(
                (iv.op, iv.value, position_index(iv.positions, batch)))
        want_stats = stats is not None and stats.wants_anything()
        if want_stats and stats.needs_final_resid:
            by_hook.setdefault("blocks.%d.hook_resid_post" % (self.n_layers - 1), ([], []))

        final: dict[str, torch.Tensor] = {}

        def make_hook(ivs: list, names: list):
            def hook(x, hook):
                for op, v, idx in ivs:
                    x = trace_ops.intervene(x, op, v, idx)
                for n in names:
                    saved[n] = trace_ops.select(x, read_index).detach().clone()
                if hook.name == f"blocks.{self.n_layers - 1}.hook_resid_post":
                    final["resid"] = x.detach().clone()
                return x
            return hook

        # TL's hook_normalized is before a LayerNorm's affine map; our mlp_in and ln_final
        # are the LayerNorm modules' outputs (what the next weights read), reached with
        # plain torch forward hooks on those modules.
        module_hooks = {h: v for h, v in by_hook.items() if h.endswith("hook_normalized")}
        hooks = [(h, make_hook(ivs, names)) for h, (ivs, names) in by_hook.items()
                 if h not in module_hooks]
        handles = []
        for h, (ivs, names) in module_hooks.items():
            module = self._norm_module(h)
            fn = make_hook(ivs, names)
            handles.append(module.register_forward_hook(
                lambda mod, args, output, fn=fn, h=h: fn(output, _Named(h))))
        try:
            with torch.no_grad():
                start = {} if start_layer is None else {"start_at_layer": start_layer}
                out_logits = self.model.run_with_hooks(
                    batch.input_ids if start_layer is None else start_resid,
                    attention_mask=batch.attention_mask, fwd_hooks=hooks,
                    padding_side="left", prepend_bos=False, **start,
                )
        finally:
            for handle in handles:
                handle.remove()
        result = ForwardOutput()
        for name, site in read.items():
            if site.kind == "logits":
                saved[name] = trace_ops.select(out_logits, read_index)
            result.activations[name] = saved[name]
        if logits:
            result.logits = out_logits
        if want_stats:
            result.stats = trace_ops.stats(out_logits, final.get("resid"),
                                           *stats.args(position_index(stats.positions, batch)))
        return result

    # -- generation ------------------------------------------------------------------

    def _generate(self, batch: Batch, max_new_tokens: int, interventions: list[Intervention],
                  do_sample: bool, temperature: float, seed: int) -> Any:
        """TransformerLens's own cached generation (``generate(use_past_kv_cache=True)``)
        with the interventions as hooks (``model.hooks``), greedy and never stopping at
        EOS; when sampling, the token is drawn by :func:`mi_ideas.trace_ops.next_tokens`
        (a CPU generator seeded with ``seed``) in a hook on the unembedding and made the
        argmax there. TransformerLens infers the attention mask from the pad token; where
        that differs from the batch's mask (a prompt that starts with the pad token and no
        BOS), or for a shortformer model, the sequence is re-run each step instead."""
        import torch
        from transformer_lens.utilities.tokenize_utils import get_attention_mask

        tok = self.model.tokenizer
        inferred = None
        if tok is not None and tok.pad_token_id is not None:
            inferred = get_attention_mask(tok, batch.input_ids, True, "left")
        if (inferred is None or not torch.equal(inferred.long(), batch.attention_mask.long())
                or self.model.cfg.positional_embedding_type == "shortformer"):
            return self._rerun(batch, max_new_tokens, interventions, do_sample, temperature,
                               seed)
        by_hook: dict[str, list] = {}
        for iv in interventions:
            by_hook.setdefault(to_hook_name(self.site(iv.site)), []).append(
                (iv.op, iv.value, None))

        def make_hook(ivs: list):
            def hook(x, hook=None):
                for op, v, idx in ivs:
                    x = trace_ops.intervene(x, op, v, idx)
                return x
            return hook

        # as in _forward: hook_normalized sites are the LayerNorm modules' outputs
        module_hooks = []
        fwd_hooks = []
        for h, ivs in by_hook.items():
            if h.endswith("hook_normalized"):
                module = self._norm_module(h)
                fn = make_hook(ivs)
                module_hooks.append((module, lambda mod, args, out, fn=fn: fn(out)))
            else:
                fwd_hooks.append((h, make_hook(ivs)))
        if do_sample:
            gen = trace_ops.cpu_generator(seed)

            def sample(mod: Any, args: tuple, out: Any) -> Any:
                ids = trace_ops.next_tokens(out[:, -1], True, temperature, gen)
                return trace_ops.force_next(out, ids)

            module_hooks.append((self.model.unembed, sample))
        device = self.model.cfg.device
        with model_lock(self.model), torch.no_grad(), self.model.hooks(fwd_hooks=fwd_hooks):
            handles = [m.register_forward_hook(fn) for m, fn in module_hooks]
            try:
                ids = self.model.generate(
                    batch.input_ids.to(device), max_new_tokens=max_new_tokens,
                    stop_at_eos=False, do_sample=False, use_past_kv_cache=True,
                    prepend_bos=True, padding_side="left", return_type="tokens",
                    verbose=False)
            finally:
                for handle in handles:
                    handle.remove()
        return ids.detach().cpu()

    # -- the last-position fast path ------------------------------------------------

    def _prefix_cache(self, batch: Batch) -> PrefixCache:
        """One forward over ``input_ids[:, :-1]`` filling TransformerLens's own key/value
        cache (``TransformerLensKeyValueCache``); its per-layer tensors are kept."""
        return self._prefix(batch, 0, None)

    def _prefix_cache_from(self, batch: Batch, layer: int, resid: Any) -> PrefixCache:
        """As :meth:`_prefix_cache`, from block ``layer`` (``start_at_layer``) with input
        ``resid[:, :-1]``; the layers before it stand in with block ``layer``'s tensors
        (never read: those blocks are not run)."""
        return self._prefix(batch, layer, resid)

    def _prefix(self, batch: Batch, layer: int, resid: Any) -> PrefixCache:
        import torch
        from transformer_lens import TransformerLensKeyValueCache

        if self.model.cfg.positional_embedding_type == "shortformer":
            raise NotImplementedError(
                "the last-position path starts at a block (start_at_layer), which drops a "
                "shortformer model's positional embedding; use forward(...) for this model."
            )
        state = None
        if batch.shape[1] > 1:
            cfg = self.model.cfg
            kv = TransformerLensKeyValueCache.init_cache(cfg, cfg.device, len(batch))
            mask = batch.attention_mask[:, :-1]
            with torch.no_grad(), model_lock(self.model):
                if resid is None:
                    self.model(batch.input_ids[:, :-1], attention_mask=mask, past_kv_cache=kv,
                               padding_side="left", prepend_bos=False, return_type=None)
                else:
                    self.model(resid[:, :-1].to(device=cfg.device, dtype=cfg.dtype),
                               start_at_layer=layer, attention_mask=mask.to(cfg.device),
                               past_kv_cache=kv, padding_side="left", prepend_bos=False,
                               return_type=None)
            state = [(e.past_keys, e.past_values) for e in kv.entries[layer:]]
            state = [state[0]] * layer + state
        return PrefixCache(state=state, **self._prefix_fields(batch, layer))

    def _forward_last_token(self, cache: PrefixCache, rows: Any, layer: int, x: Any,
                            stats: StatsRequest | None, logits: bool) -> ForwardOutput:
        """The last position only, from block ``layer`` (TransformerLens's
        ``start_at_layer``: the input is ``x``, earlier blocks are not run), against a fresh
        frozen cache gathered at ``rows`` and the whole attention mask."""
        import torch
        from transformer_lens import TransformerLensKeyValueCache, TransformerLensKeyValueCacheEntry

        cfg = self.model.cfg
        n = int(rows.shape[0])
        mask = cache.attention_mask.index_select(0, rows).to(cfg.device)
        if cache.state is None:
            kv = TransformerLensKeyValueCache.init_cache(cfg, cfg.device, n)
        else:
            entries = []
            for i, (k, v) in enumerate(cache.state):
                if i < layer:  # never read: blocks before `layer` are not run
                    k, v = (t[:1].expand(n, *t.shape[1:]) for t in (k, v))
                else:  # copies: the prefix stays as it is
                    idx = rows.to(k.device)
                    k, v = k.index_select(0, idx), v.index_select(0, idx)
                entries.append(TransformerLensKeyValueCacheEntry(k, v, frozen=True))
            kv = TransformerLensKeyValueCache(entries, mask[:, :-1], frozen=True)
        want_stats = stats is not None and stats.wants_anything()
        final: dict[str, torch.Tensor] = {}

        def read_final(h, hook):
            final["resid"] = h.detach().clone()
            return h

        hooks = []
        if want_stats and stats.needs_final_resid:
            hooks.append((f"blocks.{self.n_layers - 1}.hook_resid_post", read_final))
        resid = x.to(device=cfg.device, dtype=cfg.dtype)[:, None, :]
        with torch.no_grad(), model_lock(self.model):
            out_logits = self.model.run_with_hooks(
                resid, start_at_layer=layer, attention_mask=mask, past_kv_cache=kv,
                fwd_hooks=hooks, padding_side="left", prepend_bos=False,
            )
        result = ForwardOutput()
        if logits:
            result.logits = out_logits
        if want_stats:
            result.stats = last_position_stats(out_logits, final.get("resid"), stats)
        return result


class _Named:
    """Stands in for a TL HookPoint's ``hook`` argument in a plain torch hook."""

    def __init__(self, name: str):
        self.name = name


def gpt2_config(hf_config: Any, name: str, dtype: Any = None) -> Any:
    """The ``HookedTransformerConfig`` of a Hugging Face GPT-2 config, built offline.

    (``get_pretrained_model_config`` would ask the Hub for an official name.) Tokenisation
    is left to mi-ideas (``tokenizer_prepends_bos=False``); ``use_hook_mlp_in`` makes
    SAELens hook names like ``blocks.L.hook_mlp_in`` exist.
    """
    import torch
    from transformer_lens import HookedTransformerConfig

    c = hf_config
    return HookedTransformerConfig(
        model_name=name, n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head,
        d_head=c.n_embd // c.n_head, d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size,
        n_ctx=c.n_positions, act_fn=c.activation_function, normalization_type="LN",
        eps=c.layer_norm_epsilon, positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=True,
        tokenizer_prepends_bos=False, use_hook_mlp_in=True,
        scale_attn_by_inverse_layer_idx=bool(getattr(c, "scale_attn_by_inverse_layer_idx", False)),
        device="cpu", dtype=dtype or torch.float32,
    )


def hooked_from_gpt2(hf: Any, tokenizer: Any = None, *, name: str = "gpt2",
                     sae_transformer: bool = False) -> Any:
    """A HookedTransformer (or HookedSAETransformer) with a HF GPT-2 model's exact weights.

    No weight processing (LayerNorm not folded, nothing centred), so every hook holds the
    Hugging Face model's activations.
    """
    import torch
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    if sae_transformer:
        from sae_lens import HookedSAETransformer as cls
    else:
        from transformer_lens import HookedTransformer as cls
    cfg = gpt2_config(hf.config, name, dtype=hf.dtype)
    state_dict = convert_gpt2_weights(hf, cfg)
    state_dict.setdefault("unembed.b_U", torch.zeros(cfg.d_vocab, dtype=hf.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = cls(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **_NO_FOLD)
    return model.eval()


def build_from_hf_dir(path: str | Path, *, sae_transformer: bool = False, name: str | None = None
                      ) -> Any:
    """A HookedTransformer (or HookedSAETransformer) from a local HF directory, offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UsageError(f"{str(path)!r} is not a Hugging Face model directory (no config.json).")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = AutoModelForCausalLM.from_pretrained(str(path)).eval()
        tok = AutoTokenizer.from_pretrained(str(path))
    name = name or path.name
    if hf.config.model_type == "gpt2":
        return hooked_from_gpt2(hf, tok, name=name, sae_transformer=sae_transformer)
    import tempfile

    from transformer_lens import loading_from_pretrained as lp

    if sae_transformer:
        from sae_lens import HookedSAETransformer as cls
    else:
        from transformer_lens import HookedTransformer as cls

    # TransformerLens guesses the architecture from the *path* ("llama" or "gemma"
    # anywhere in it) before reading config.json; load through a neutrally named link.
    with tempfile.TemporaryDirectory() as tmp:
        neutral = Path(tmp) / "checkpoint"
        neutral.symlink_to(path.resolve(), target_is_directory=True)
        try:
            cfg = lp.get_pretrained_model_config(str(neutral), fold_ln=False, device="cpu",
                                                 dtype=torch.float32)
            state_dict = lp.get_pretrained_state_dict(str(neutral), cfg, hf_model=hf)
        except Exception as exc:  # noqa: BLE001 - TL raises many kinds here
            raise UsageError(
                f"TransformerLens could not convert the {hf.config.model_type!r} model in "
                f"{str(path)!r}: {type(exc).__name__}: {exc}. Use the nnsight back-end "
                f"(--model hf:{path}) for this architecture."
            ) from None
    expected = (hf.config.architectures or [type(hf).__name__])[0]
    if cfg.original_architecture != expected:
        raise UsageError(
            f"TransformerLens read {str(path)!r} as {cfg.original_architecture}, but its "
            f"config says {expected}; use the nnsight back-end (--model hf:{path})."
        )
    model = cls(cfg, tokenizer=tok, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **_NO_FOLD)
    return model.eval()


def refuse_remote(remote: Any) -> None:
    """TransformerLens models run locally only: a clear error for any remote setting."""
    if remote not in (None, False, "", "off"):
        raise UsageError(
            "TransformerLens models run locally only; for remote execution use an nnsight "
            "spec (hf:REPO or zoo:NAME) with --remote."
        )


def load_tl(source: Any, *, spec: str | None = None, sae_transformer: bool = False) -> TLSubject:
    """A :class:`TLSubject` from a HookedTransformer, a local HF directory, or an official name."""
    from transformer_lens import HookedTransformer

    if isinstance(source, HookedTransformer):
        return TLSubject(source, spec=spec)
    if Path(str(source)).is_dir():
        return TLSubject(build_from_hf_dir(source, sae_transformer=sae_transformer),
                         spec=spec or f"tl:{source}")
    # An official TransformerLens name: real loading code, which needs the Hub.
    cls = HookedTransformer
    if sae_transformer:
        from sae_lens import HookedSAETransformer as cls  # type: ignore[no-redef]
    try:
        model = cls.from_pretrained(str(source), **_NO_FOLD)
    except Exception as exc:  # noqa: BLE001
        raise UsageError(
            f"TransformerLens could not load {str(source)!r}: {type(exc).__name__}: {exc}. "
            f"Offline, only local directories and zoo: models load; check the name against "
            f"TransformerLens's list of official models."
        ) from None
    return TLSubject(model, spec=spec or f"tl:{source}")
