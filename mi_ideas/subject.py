"""The subject: one interface over the model an idea studies, whatever runs it.

Ideas receive a :class:`Subject` as ``ctx.subject`` and never call nnsight or
TransformerLens for model calls themselves. Back-ends (nnsight, TransformerLens, and any a
plugin registers through ``mi_ideas_register_backends``) implement :meth:`Subject._forward`
(one forward pass with interventions and reads); everything else is shared.

Conventions, the same for every back-end:

- batches are **left-padded** (so position ``-1`` is every row's last real token) with
  position ids derived from the attention mask;
- ``prepend_bos=True`` by default, as TransformerLens does;
- positions: ``"all"``, ``"last"``, an int, a list of ints, or a boolean ``(batch, seq)``
  mask (which flattens the selected rows into ``(n, d)``);
- interventions are applied, then sites are read, in the order a forward pass reaches
  them; reads are copies, so a later intervention never changes an earlier read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence, Union

from mi_ideas.errors import UsageError
from mi_ideas.sites import Site, all_sites, parse_site

if TYPE_CHECKING:  # pragma: no cover
    import torch

Positions = Union[Literal["all", "last"], int, Sequence[int], "torch.Tensor"]


@dataclass(frozen=True)
class Batch:
    """Token ids of a left-padded batch, with its attention mask and position ids."""

    input_ids: "torch.Tensor"
    attention_mask: "torch.Tensor"
    texts: tuple[str, ...] | None = None

    @property
    def position_ids(self) -> "torch.Tensor":
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class Intervention:
    """Change an activation during a forward pass.

    ``op``: ``"add"`` adds ``value``; ``"replace"`` sets the activation to ``value``;
    ``"ablate"`` sets it to zero, or to ``value`` when given (mean ablation).
    ``value`` broadcasts against the selected activations: ``(d,)``, ``(batch, d)`` or
    ``(batch, n_positions, d)``; with a boolean mask, ``(d,)`` or ``(n_selected, d)``.
    """

    site: str
    op: Literal["add", "replace", "ablate"]
    value: "torch.Tensor | None" = None
    positions: Positions = "all"

    def __post_init__(self) -> None:
        if self.op not in ("add", "replace", "ablate"):
            raise UsageError(f"intervention op must be add, replace or ablate, not {self.op!r}.")
        if self.op in ("add", "replace") and self.value is None:
            raise UsageError(f"an {self.op!r} intervention at {self.site!r} needs a value.")


@dataclass
class ForwardOutput:
    """What a forward pass returns: activations read, optionally logits, derived stats."""

    activations: dict[str, "torch.Tensor"] = field(default_factory=dict)
    logits: "torch.Tensor | None" = None
    stats: dict[str, "torch.Tensor"] = field(default_factory=dict)


@dataclass(frozen=True)
class StatsRequest:
    """Derived statistics to compute next to the model (server-side when remote).

    Computed at ``positions`` (default the last token), in float64 (returned as float32),
    with p the reference distribution ``kl_reference`` (log-probabilities, shape
    ``(batch, [n_positions,] vocab)``) and q the run's at the same positions:

    - ``kl``: KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), nats (whenever ``kl_reference``);
    - ``js=True``: Jensen–Shannon divergence ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½ (p + q), nats
      (between 0 and ln 2); needs ``kl_reference``;
    - ``tv=True``: total variation ½ Σ_v |p_v − q_v| (between 0 and 1); needs
      ``kl_reference``;
    - ``target_ids`` (one token id per selected position, shape ``(batch, [n_positions])``)
      gives ``target_logprob``, log q of that token (minus its cross-entropy), without
      downloading logits;
    - ``topk`` ids and log-probs; ``final_norm``, the L2 norm of the final residual stream
      (the input of the final LayerNorm); ``l2``, its L2 distance to ``l2_reference``
      (shape ``(batch, [n_positions,] d_model)``); ``entropy`` in nats.

    ``reference_rows`` (long, ``(batch,)``): batch row i is compared with
    ``kl_reference[reference_rows[i]]`` and ``l2_reference[reference_rows[i]]`` (the
    references then have one row per *distinct* reference, not per batch row), so the rows
    of one prompt upload its vocabulary-sized reference once per request, not once each.

    The same definitions (one function, :func:`mi_ideas.trace_ops.stats`) on every path: a
    local forward, the last-position path (:func:`last_position_stats`) and a remote server.
    """

    positions: Positions = "last"
    kl_reference: "torch.Tensor | None" = None
    topk: int = 0
    final_norm: bool = False
    entropy: bool = False
    l2_reference: "torch.Tensor | None" = None
    js: bool = False
    tv: bool = False
    target_ids: "torch.Tensor | None" = None
    reference_rows: "torch.Tensor | None" = None

    def __post_init__(self) -> None:
        if (self.js or self.tv) and self.kl_reference is None:
            which = " and ".join(n for n, on in (("js", self.js), ("tv", self.tv)) if on)
            raise UsageError(
                f"StatsRequest({which}=True) compares the run's next-token distribution with "
                f"a reference one, but no kl_reference was given: pass kl_reference (the "
                f"reference log-probabilities, shape (batch, [n_positions,] vocab)).")

    def wants_anything(self) -> bool:
        return (self.kl_reference is not None or self.topk > 0 or self.final_norm
                or self.entropy or self.l2_reference is not None
                or self.target_ids is not None)

    def per_row(self) -> "StatsRequest":
        """The same request with one reference row per batch row (``reference_rows``
        applied here)."""
        if self.reference_rows is None:
            return self
        rows = self.reference_rows.long()
        return dataclasses.replace(
            self, reference_rows=None,
            kl_reference=None if self.kl_reference is None else self.kl_reference[rows],
            l2_reference=None if self.l2_reference is None else self.l2_reference[rows])

    @property
    def needs_final_resid(self) -> bool:
        return self.final_norm or self.l2_reference is not None

    def args(self, index: Any) -> tuple:
        """Arguments for :func:`mi_ideas.trace_ops.stats` after ``logits, final_resid``."""
        return (index, self.kl_reference, self.topk, self.entropy, self.final_norm,
                self.l2_reference, self.js, self.tv, self.target_ids, self.reference_rows)


@dataclass(frozen=True, eq=False)
class PrefixCache:
    """A batch's prompts with every position but the last already run (local only).

    Made by :meth:`Subject.prefix_cache`; used by :meth:`Subject.forward_last_token`, which
    runs only the last position of chosen prompts. Causal attention leaves the earlier
    positions of a prompt unchanged by anything done at its last position, so their keys and
    values are computed once here and reused by every call. ``state`` is the back-end's own
    record of them (per-layer keys and values); a call never changes it.
    """

    batch: Batch
    #: ``(n_prompts, 1)`` token id, position id of each prompt's last position
    last_ids: "torch.Tensor"
    last_position_ids: "torch.Tensor"
    #: ``(n_prompts, seq)`` the whole attention mask (prefix and last position)
    attention_mask: "torch.Tensor"
    #: the back-end's cached keys / values of ``input_ids[:, :-1]`` (None when seq is 1)
    state: Any
    #: :attr:`Subject.fingerprint` of the subject that made it
    owner: str = ""
    #: the first block whose keys/values it holds (``prefix_cache(start_at=...)``); sites
    #: before ``resid_pre.first_layer`` cannot be served
    first_layer: int = 0

    def __len__(self) -> int:
        return int(self.last_ids.shape[0])


class Subject:
    """A model under study. Subclasses are back-ends; ideas use only this interface."""

    backend: str = "abstract"
    #: whether model calls go through nnsight's remote path (NDIF, a self-hosted server,
    #: or the ``remote="local"`` rehearsal); back-ends set this.
    remote: bool = False
    #: whether the weights live on a server this process cannot touch (a real NDIF or
    #: self-hosted server, not the local rehearsal): controls that need local weights,
    #: such as :meth:`reinitialized`, are impossible then.
    on_server: bool = False

    def __init__(self, *, spec: str, tokenizer: Any, n_layers: int, d_model: int,
                 d_vocab: int, parallel_residual: bool = False, fingerprint: str = ""):
        self.spec = spec
        self.tokenizer = tokenizer
        self.n_layers = n_layers
        self.d_model = d_model
        self.d_vocab = d_vocab
        self.parallel_residual = parallel_residual
        self._fingerprint = fingerprint

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.spec!r}, n_layers={self.n_layers}, "
                f"d_model={self.d_model}, d_vocab={self.d_vocab})")

    # -- facts ----------------------------------------------------------------------

    @property
    def sites(self) -> list[str]:
        """Every standard site of this model, in execution order."""
        return all_sites(self.n_layers, parallel_residual=self.parallel_residual)

    def site(self, name: str) -> Site:
        """Parse a site name (standard or TransformerLens hook name) for this model."""
        s = parse_site(name, self.n_layers)
        if s.kind == "resid_mid" and self.parallel_residual:
            raise UsageError(
                f"{self.spec} uses parallel attention and MLP (both read resid_pre), so it "
                f"has no resid_mid site; use resid_pre.{s.layer} or resid_post.{s.layer}."
            )
        return s

    @property
    def fingerprint(self) -> str:
        """A short hash identifying the model's weights (for caches)."""
        return self._fingerprint or hashlib.sha256(self.spec.encode()).hexdigest()[:16]

    # -- tokenization ---------------------------------------------------------------

    def tokenize(self, texts: str | Sequence[str], *, prepend_bos: bool = True,
                 max_length: int | None = None) -> Batch:
        """Tokenize texts into a left-padded :class:`Batch`."""

        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise UsageError("tokenize was given no texts.")
        tok = self.tokenizer
        rows: list[list[int]] = []
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        for text in texts:
            ids = list(tok(text, add_special_tokens=False, verbose=False)["input_ids"])
            if prepend_bos and bos is not None:
                ids = [bos, *ids]
            if max_length is not None:
                ids = ids[:max_length]
            if not ids:
                raise UsageError(f"text {text!r} tokenizes to nothing; give a non-empty prompt.")
            rows.append(ids)
        return self.batch_from_ids(rows, texts=texts)

    def batch_from_ids(self, rows: Sequence[Sequence[int]] | "torch.Tensor",
                       texts: Sequence[str] | None = None) -> Batch:
        """Left-pad token id lists (or take a full ``(batch, seq)`` tensor) into a Batch."""
        import torch

        if isinstance(rows, torch.Tensor):
            ids = rows.long()
            if ids.ndim == 1:
                ids = ids[None]
            return Batch(ids, torch.ones_like(ids), tuple(texts) if texts else None)
        pad = self.pad_token_id
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if len(r):
                ids[i, width - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
                mask[i, width - len(r):] = 1
        return Batch(ids, mask, tuple(texts) if texts else None)

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for pid in (tok.pad_token_id, tok.eos_token_id, 0):
            if pid is not None:
                return int(pid)
        return 0  # pragma: no cover

    def as_batch(self, inputs: Any) -> Batch:
        """Make a :class:`Batch` of texts, a text, token-id lists or a ``(batch, seq)``
        tensor (a Batch passes through unchanged)."""
        if isinstance(inputs, Batch):
            return inputs
        if isinstance(inputs, (str, list, tuple)) and (
            isinstance(inputs, str) or all(isinstance(t, str) for t in inputs)
        ):
            return self.tokenize(inputs)
        return self.batch_from_ids(inputs)

    # -- model calls ------------------------------------------------------------------

    def forward(
        self,
        inputs: Batch | str | Sequence[str] | "torch.Tensor",
        *,
        read: Sequence[str] = (),
        positions: Positions = "all",
        interventions: Sequence[Intervention] = (),
        logits: bool = False,
        stats: StatsRequest | None = None,
        start_at: str | None = None,
        start_resid: "torch.Tensor | None" = None,
    ) -> ForwardOutput:
        """One forward pass: apply interventions, read sites, and return what was asked.

        ``read`` sites come back under the names given, selected at ``positions``. Ask for
        ``stats`` rather than ``logits`` when only KL / top-k / norms are needed: remote
        back-ends then never download vocabulary-sized tensors.

        ``start_at="resid_pre.L"`` with ``start_resid`` (the whole ``(batch, seq, d)``
        residual stream entering block L) runs only blocks L and later: the earlier blocks
        are skipped, not recomputed (TransformerLens's ``start_at_layer``; nnsight skips the
        modules). Sites before ``start_at`` cannot be read or changed then.
        """
        batch = self.as_batch(inputs)
        read_sites = {name: self.site(name) for name in read}
        sites = list(read_sites.values()) + [self.site(iv.site) for iv in interventions]
        start_layer = None
        if start_at is not None or start_resid is not None:
            start = self._start_site(batch, start_at, start_resid)
            early = [s.name for s in sites if s.order < start.order]
            if early:
                raise UsageError(f"sites {early} come before {start.name}, where the run starts.")
            start_layer = start.layer
        if stats is not None and stats.reference_rows is not None:
            if int(stats.reference_rows.numel()) != len(batch):
                raise UsageError(
                    f"stats.reference_rows has shape {tuple(stats.reference_rows.shape)}; "
                    f"expected ({len(batch)},), one reference row per row of the batch.")
            if not self.remote:
                # Local back-ends see one reference row per batch row; only a remote request
                # keeps them shared (trace_ops.stats applies reference_rows on the server).
                stats = stats.per_row()
        return self._forward(batch, read_sites, positions, list(interventions), logits, stats,
                             start_layer, start_resid)

    def activations(self, inputs: Any, sites: Sequence[str], positions: Positions = "all"
                    ) -> dict[str, "torch.Tensor"]:
        """Activations at several sites from one forward pass, in memory (for a dataset
        streamed to disk and cached, use ``ctx.harvest`` /
        :func:`mi_ideas.harvest.harvest_to_cache`)."""
        return self.forward(inputs, read=sites, positions=positions).activations

    def logprobs(self, inputs: Any, *, positions: Positions = "last",
                 interventions: Sequence[Intervention] = ()) -> "torch.Tensor":
        """Next-token log-probabilities at ``positions`` (downloads vocab-sized tensors)."""
        out = self.forward(inputs, logits=True, interventions=interventions)
        batch = self.as_batch(inputs)
        return select_positions(out.logits, positions, batch).float().log_softmax(-1)

    def generate(self, inputs: Any, *, max_new_tokens: int = 20,
                 interventions: Sequence[Intervention] = (), do_sample: bool = False,
                 temperature: float = 1.0, seed: int = 0,
                 stop_at_eos: bool = False) -> "torch.Tensor":
        """Generate continuations with interventions applied at every step.

        Returns token ids ``(batch, prompt_len + max_new_tokens)``, the left-padded prompt
        first: always exactly ``max_new_tokens`` new tokens per row. The end-of-text token is
        an ordinary token (never suppressed, never a reason to stop); with
        ``stop_at_eos=True`` every token after a row's first generated EOS is replaced by the
        pad token (the shape stays the same; causal attention makes the tokens up to that EOS
        exactly those of a generation that stopped there).

        Interventions use ``positions="all"``: they change every prompt and generated
        position, at every step, with a value of shape ``(d,)``, ``(batch, d)`` or
        ``(batch, 1, d)`` (one per row). With the key/value cache only the new position runs
        at each step and the earlier positions' keys and values already carry the
        intervention, so this is the same computation as re-running the whole sequence
        every step (:meth:`_generate_rerun`, the reference; greedy tokens are tested equal).

        Greedy decoding (``do_sample=False``) takes the argmax. Sampling draws from
        softmax(logits / ``temperature``) with a CPU ``torch.Generator`` seeded with
        ``seed``, inside the run (:func:`mi_ideas.trace_ops.next_tokens`): the same seed
        gives the same tokens on every call, on every built-in back-end and remotely (up to
        float rounding of the logits), and the global torch random state is not used.

        The nnsight back-end runs one ``generate`` trace (one remote request per batch; the
        Hugging Face key/value cache locally), TransformerLens its own cached ``generate``
        with hooks; other back-ends re-run the sequence each step.
        """
        batch = self.as_batch(inputs)
        ivs = self._generation_interventions(batch, interventions, max_new_tokens)
        if max_new_tokens == 0:
            return batch.input_ids
        ids = self._generate(batch, int(max_new_tokens), ivs, bool(do_sample),
                             float(temperature), int(seed))
        if stop_at_eos:
            ids = self._pad_after_eos(ids, batch.shape[1])
        return ids

    def _generation_interventions(self, batch: Batch, interventions: Sequence[Intervention],
                                  max_new_tokens: int) -> list[Intervention]:
        """Check generation arguments; values as ``(d,)`` or ``(batch | 1, 1, d)``."""
        try:
            n_new = -1 if isinstance(max_new_tokens, bool) else operator.index(max_new_tokens)
        except TypeError:
            n_new = -1
        if n_new < 0:
            raise UsageError(
                f"max_new_tokens must be a non-negative integer, not {max_new_tokens!r}.")
        out = []
        for iv in interventions:
            site = self.site(iv.site)
            if not (isinstance(iv.positions, str) and iv.positions == "all"):
                raise UsageError("interventions during generation must use positions='all'.")
            if site.kind == "logits":
                raise UsageError("interventions on logits are not supported; change ln_final.")
            v = iv.value
            if v is not None:
                n = len(batch)
                if v.ndim == 2 and int(v.shape[0]) in (1, n):
                    v = v[:, None, :]
                ok = v.ndim == 1 or (v.ndim == 3 and int(v.shape[1]) == 1
                                     and int(v.shape[0]) in (1, n))
                if not ok or int(v.shape[-1]) != self.d_model:
                    raise UsageError(
                        f"the {iv.op!r} intervention at {iv.site} during generation has a value "
                        f"of shape {tuple(v.shape)}; it applies at every position of a growing "
                        f"sequence, so give ({self.d_model},), ({n}, {self.d_model}) or "
                        f"({n}, 1, {self.d_model}) (one vector per row).")
            out.append(dataclasses.replace(iv, value=v))
        return out

    def _pad_after_eos(self, ids: "torch.Tensor", width: int) -> "torch.Tensor":
        """``ids`` with every token after a row's first generated EOS set to the pad token."""
        eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        if eos is None:
            return ids
        new = ids[:, width:]
        after = (new == eos).long().cumsum(-1) - (new == eos).long() > 0
        out = ids.clone()
        out[:, width:] = new.masked_fill(after, self.pad_token_id)
        return out

    def _generate_rerun(self, inputs: Any, *, max_new_tokens: int = 20,
                        interventions: Sequence[Intervention] = (), do_sample: bool = False,
                        temperature: float = 1.0, seed: int = 0) -> "torch.Tensor":
        """The reference generation: the whole sequence re-run through :meth:`forward` for
        every new token (one remote request per token), no key/value cache. Same arguments
        and tokens as :meth:`generate`; kept for tests and ``benchmarks/generate.py``."""
        batch = self.as_batch(inputs)
        ivs = self._generation_interventions(batch, interventions, max_new_tokens)
        return self._rerun(batch, int(max_new_tokens), ivs, bool(do_sample), float(temperature),
                           int(seed))

    def _rerun(self, batch: Batch, max_new_tokens: int, interventions: list[Intervention],
               do_sample: bool, temperature: float, seed: int) -> "torch.Tensor":
        import torch

        from mi_ideas import trace_ops

        gen = trace_ops.cpu_generator(seed) if do_sample else None
        ids, mask = batch.input_ids, batch.attention_mask
        for _ in range(max_new_tokens):
            step = Batch(ids, mask)
            logits = self.forward(step, interventions=interventions, logits=True).logits[:, -1]
            nxt = trace_ops.next_tokens(logits, do_sample, temperature, gen).cpu()
            ids = torch.cat([ids, nxt.to(ids.dtype)], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt, dtype=mask.dtype)], dim=1)
        return ids

    def _generate(self, batch: Batch, max_new_tokens: int, interventions: list[Intervention],
                  do_sample: bool, temperature: float, seed: int) -> "torch.Tensor":
        """Generate (arguments checked by :meth:`generate`). The default re-runs the
        sequence each step; back-ends with a cached generation override this."""
        return self._rerun(batch, max_new_tokens, interventions, do_sample, temperature, seed)

    # -- the last-position fast path (local) -------------------------------------------

    def prefix_cache(self, inputs: Batch | str | Sequence[str] | "torch.Tensor", *,
                     start_at: str | None = None, start_resid: "torch.Tensor | None" = None,
                     ) -> PrefixCache:
        """Run every position of a (left-padded) batch but the last, keeping the key/value
        cache of every layer, for :meth:`forward_last_token`. Local subjects only.

        With ``start_at="resid_pre.L"`` and ``start_resid`` (the ``(batch, seq, d_model)``
        residual stream entering block L, as for :meth:`forward`), only blocks L and later
        run, from ``start_resid[:, :-1]``: the cache then serves sites from ``resid_pre.L``
        on, and its prefix is that residual stream's, exactly as ``forward(start_at=...,
        start_resid=...)`` computes it.
        """
        self._local_only()
        batch = self.as_batch(inputs)
        if start_at is None and start_resid is None:
            return self._prefix_cache(batch)
        start = self._start_site(batch, start_at, start_resid)
        return self._prefix_cache_from(batch, start.layer, start_resid)

    def _start_site(self, batch: Batch, start_at: str | None,
                    start_resid: "torch.Tensor | None") -> Site:
        """The ``resid_pre.L`` site a run starts at, checked against ``start_resid`` (the
        ``(batch, seq, d_model)`` residual stream entering block L)."""
        start = self.site(start_at or "")
        if start.kind != "resid_pre" or start_resid is None:
            raise UsageError(
                "start_at must be a resid_pre.L site and comes with start_resid, the "
                "(batch, seq, d_model) residual stream entering block L."
            )
        if tuple(start_resid.shape) != (*batch.shape, self.d_model):
            raise UsageError(
                f"start_resid has shape {tuple(start_resid.shape)}; expected "
                f"{(*batch.shape, self.d_model)} for this batch."
            )
        return start

    def forward_last_token(self, cache: PrefixCache, rows: "torch.Tensor | Sequence[int]",
                           site: str, x: "torch.Tensor", *, stats: StatsRequest | None = None,
                           logits: bool = False) -> ForwardOutput:
        """Replace the residual stream at ``site`` (``resid_pre.L``) of each row's last
        position with ``x`` and run only that position, against the prompt's cached prefix.

        ``rows``: ``(n_rows,)`` prompt indices into ``cache.batch`` (repeats allowed); ``x``:
        ``(n_rows, d_model)``. The same numbers as ``forward(cache.batch`` at ``rows``,
        ``stats=stats, interventions=[Intervention(site, "replace", x, positions="last")])``
        (for a cache built with ``start_at``/``start_resid``: as that forward started there
        from ``start_resid``), for a fraction of the cost: earlier positions are not
        recomputed, and the stats are computed a block of rows at a time
        (:func:`last_position_stats`). Calls hold :func:`model_lock`. ``stats`` are
        computed at the last position (its ``positions`` must be ``"last"``), references of
        shape ``(n_rows, vocab)`` / ``(n_rows, d_model)``; ``logits=True`` also returns
        ``(n_rows, 1, vocab)`` logits. Local subjects only (``NotImplementedError`` where a
        back-end has no such path: callers then use :meth:`forward`).
        """
        import torch

        self._local_only()
        if not isinstance(cache, PrefixCache):
            raise UsageError(
                "forward_last_token takes the PrefixCache of subject.prefix_cache(batch)."
            )
        if cache.owner and cache.owner != self.fingerprint:
            raise UsageError(
                f"this prefix cache was made by another model (fingerprint {cache.owner}, "
                f"not {self.fingerprint} of {self.spec}); build it with this subject."
            )
        s = self.site(site)
        if s.kind != "resid_pre":
            raise UsageError(
                f"forward_last_token replaces the residual stream entering a block "
                f"(resid_pre.L), not {site!r}."
            )
        if s.layer < cache.first_layer:
            raise UsageError(
                f"this prefix cache was built from resid_pre.{cache.first_layer} (start_at), so "
                f"it has no keys or values before that block; use a site from "
                f"resid_pre.{cache.first_layer} on, or build the cache without start_at."
            )
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1).cpu()
        n = int(rows.shape[0])
        if n == 0:
            raise UsageError("forward_last_token was given no rows.")
        if int(rows.min()) < 0 or int(rows.max()) >= len(cache):
            raise UsageError(
                f"rows must index the cache's {len(cache)} prompts; got values in "
                f"[{int(rows.min())}, {int(rows.max())}]."
            )
        if tuple(x.shape) != (n, self.d_model):
            raise UsageError(
                f"x has shape {tuple(x.shape)}; expected {(n, self.d_model)} (one replacement "
                f"residual per row)."
            )
        if stats is not None:
            if stats.reference_rows is not None and int(stats.reference_rows.numel()) != n:
                raise UsageError(
                    f"stats.reference_rows has shape {tuple(stats.reference_rows.shape)}; "
                    f"expected ({n},), one reference row per row of rows.")
            stats = stats.per_row()  # the blocked stats slice references by row
            pos = stats.positions
            last = (isinstance(pos, str) and pos == "last") or (isinstance(pos, int) and pos == -1)
            if not last:
                raise UsageError(
                    f"forward_last_token computes stats at the last position only, not "
                    f"positions={pos!r}."
                )
            for name, ref in (("kl_reference", stats.kl_reference),
                              ("l2_reference", stats.l2_reference)):
                if ref is not None and (ref.ndim != 2 or int(ref.shape[0]) != n):
                    raise UsageError(
                        f"stats.{name} has shape {tuple(ref.shape)}; expected ({n}, ...), one "
                        f"row per row of rows."
                    )
            tid = stats.target_ids
            if tid is not None and int(tid.numel()) != n:
                raise UsageError(
                    f"stats.target_ids has shape {tuple(tid.shape)}; expected ({n},), one token "
                    f"id per row of rows."
                )
        return self._forward_last_token(cache, rows, s.layer, x, stats, logits)

    def _local_only(self) -> None:
        if self.remote:
            raise NotImplementedError(
                f"prefix_cache / forward_last_token run locally only; {self.spec} is remote. "
                f"Use forward(..., interventions=[Intervention(site, 'replace', x, "
                f"positions='last')]), one request per batch of rows."
            )

    def parameters(self, names: Sequence[str]) -> "dict[str, torch.Tensor]":
        """The model's parameters or buffers ``names`` (paths as in the back-end model's
        ``named_parameters()``, e.g. ``transformer.h.1.mlp.c_fc.weight``), detached, on the
        CPU. Remote subjects read them in one trace (one request for all names); the TL
        back-end uses TransformerLens's names (``blocks.1.mlp.W_in``)."""
        raise UsageError(f"the {self.backend} back-end cannot read {self.spec}'s weights; "
                         f"use a local or remote nnsight model, or a TransformerLens model.")

    @staticmethod
    def _local_tensors(module: Any, names: Sequence[str], spec: str) -> "dict[str, torch.Tensor]":
        """``names`` looked up in a torch module (parameters, then buffers); an unknown name
        is a UsageError listing some of the module's names (weightless meta modules work:
        this is also the check before a remote read)."""
        out, missing = {}, []
        for name in names:
            try:
                out[name] = module.get_parameter(name)
            except AttributeError:
                try:
                    out[name] = module.get_buffer(name)
                except AttributeError:
                    missing.append(name)
        if missing:
            some = [n for n, _ in module.named_parameters()][:6]
            raise UsageError(f"{spec} has no parameter or buffer {missing}; names are paths "
                             f"as in the model's named_parameters(), e.g. {some}.")
        return out

    def reinitialized(self, seed: int = 0) -> "Subject":
        """The same architecture with freshly initialised weights (a control), local only."""
        raise UsageError(
            f"the {self.backend} back-end cannot build a re-initialised copy of {self.spec}; "
            f"use a local nnsight or TransformerLens model for controls that need one."
        )

    def decode(self, ids: "torch.Tensor") -> list[str]:
        """Token ids back to text, one string per row (padding removed)."""
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    # -- back-end duties ----------------------------------------------------------------

    def _forward(self, batch: Batch, read: dict[str, Site], positions: Positions,
                 interventions: list[Intervention], logits: bool, stats: StatsRequest | None,
                 start_layer: int | None = None, start_resid: "torch.Tensor | None" = None,
                 ) -> ForwardOutput:  # pragma: no cover
        """Run the model once; ``start_layer``/``start_resid`` as in :meth:`forward`."""
        raise NotImplementedError

    def _prefix_cache(self, batch: Batch) -> PrefixCache:
        """Build a :class:`PrefixCache` (back-ends with a last-position path override this)."""
        raise NotImplementedError(
            f"the {self.backend} back-end has no last-position fast path (prefix_cache / "
            f"forward_last_token); use forward(..., interventions=[Intervention(site, "
            f"'replace', x, positions='last')])."
        )

    def _prefix_cache_from(self, batch: Batch, layer: int, resid: "torch.Tensor"
                           ) -> PrefixCache:
        """A :class:`PrefixCache` of blocks ``layer`` and later, run from ``resid[:, :-1]``
        (back-ends with a last-position path override this)."""
        self._prefix_cache(batch)  # the clear NotImplementedError
        raise NotImplementedError  # pragma: no cover

    def _forward_last_token(self, cache: PrefixCache, rows: "torch.Tensor", layer: int,
                            x: "torch.Tensor", stats: StatsRequest | None, logits: bool,
                            ) -> ForwardOutput:
        """Run the last position of ``rows`` with ``resid_pre.layer`` replaced by ``x``."""
        self._prefix_cache(cache.batch)  # the clear NotImplementedError
        raise NotImplementedError  # pragma: no cover

    def _prefix_fields(self, batch: Batch, first_layer: int = 0) -> dict:
        """The :class:`PrefixCache` fields every back-end fills the same way."""
        return dict(batch=batch, last_ids=batch.input_ids[:, -1:],
                    last_position_ids=batch.position_ids[:, -1:],
                    attention_mask=batch.attention_mask, owner=self.fingerprint,
                    first_layer=first_layer)


_LOCKS: Any = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(module: Any) -> Any:
    """The re-entrant lock of one torch module, shared by every subject that wraps it.

    The last-position path changes the shared modules for the length of a call (nnsight:
    a pre-hook on the perturbed block, blocks before it bypassed; TransformerLens: hooks on
    shared hook points), so a forward of the same model from another thread meanwhile
    would run through them. Every local model call of the built-in back-ends holds the
    module's lock instead, so concurrent calls on one model run one at a time (and
    correctly); calls on different models do not wait for each other.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


#: elements of one row block in :func:`last_position_stats` (4 MiB of float32): big enough
#: that a block's ops are few (each is a parallel region; with several threads on a busy
#: machine, blocks of 2**16 elements took 13x longer than no blocks), small enough to stay
#: in the CPU's cache
STATS_BLOCK_ELEMENTS = 1 << 20


def last_position_stats(logits: "torch.Tensor", final_resid: "torch.Tensor | None",
                        stats: StatsRequest) -> dict[str, "torch.Tensor"]:
    """:func:`mi_ideas.trace_ops.stats` of ``(n, 1, vocab)`` last-position logits, a block of
    rows at a time (the same function on each block, so the same numbers per row).

    Written by hand because a vocabulary-wide KL over many rows is memory-bound: each of
    its steps (log-softmax, exp, difference, product) is a full pass over rows x vocab. For
    256 rows of GPT-2's 50257 tokens on one CPU thread: 123 ms CPU on the whole tensor
    (close to the unembedding matmul's cost), 62 ms in blocks of ``STATS_BLOCK_ELEMENTS``;
    with two threads on a loaded machine the two were equal (925 / 953 ms wall).
    """
    import torch

    from mi_ideas import trace_ops

    stats = stats.per_row()
    n = int(logits.shape[0])
    step = max(1, STATS_BLOCK_ELEMENTS // max(1, int(logits.shape[-1])))
    if n <= step:
        return trace_ops.stats(logits, final_resid, *stats.args(-1))
    parts: dict[str, list] = {}
    for start in range(0, n, step):
        rows = slice(start, start + step)
        block = dataclasses.replace(
            stats,
            kl_reference=None if stats.kl_reference is None else stats.kl_reference[rows],
            l2_reference=None if stats.l2_reference is None else stats.l2_reference[rows],
            target_ids=None if stats.target_ids is None else stats.target_ids[rows])
        got = trace_ops.stats(logits[rows], None if final_resid is None else final_resid[rows],
                              *block.args(-1))
        for key, value in got.items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in parts.items()}


# -- position specs -> indices (outside traces; trace_ops does the indexing) ----------


def position_index(positions: Positions, batch: Batch) -> Any:
    """A positions spec as an index for :mod:`mi_ideas.trace_ops` (None means all)."""
    import torch

    if isinstance(positions, str):
        if positions == "all":
            return None
        if positions == "last":
            return -1
        raise UsageError(
            f"positions must be 'all', 'last', an int, a list of ints or a boolean mask, "
            f"not {positions!r}."
        )
    if isinstance(positions, torch.Tensor):
        if positions.dtype == torch.bool:
            if tuple(positions.shape) != batch.shape:
                raise UsageError(
                    f"a position mask must have the batch's shape {batch.shape}, "
                    f"not {tuple(positions.shape)}."
                )
            return positions
        return positions.long()
    if isinstance(positions, int):
        return positions
    return torch.as_tensor(list(positions), dtype=torch.long)


def select_positions(x: "torch.Tensor", positions: Positions, batch: Batch) -> "torch.Tensor":
    """Select positions from a ``(batch, seq, ...)`` tensor."""
    from mi_ideas import trace_ops

    return trace_ops.select(x, position_index(positions, batch))
