"""Torch helpers for the zoo: packing, loss, TransformerLens conversion, harvesting, metrics.

Imported lazily (it imports torch); ``mi_ideas.zoo`` itself stays cheap.

Activation sites use TransformerLens hook names.  On the Hugging Face
``GPT2LMHeadModel`` the same activations are (with zero dropout, as the zoo
model has): ``blocks.L.hook_resid_pre`` = ``output_hidden_states[L]``;
``blocks.L.hook_mlp_in`` = the input of ``transformer.h[L].ln_2``;
``blocks.L.hook_mlp_out`` = the output of ``transformer.h[L].mlp``.
:func:`hf_activations` reads them from the HF model with plain PyTorch hooks.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "encode_texts",
    "pack_rows",
    "lm_loss",
    "to_hooked_transformer",
    "tl_activations",
    "hf_activations",
    "explained_variance",
]


# --------------------------------------------------------------------------- data


def encode_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text (no special tokens)."""
    out = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [list(x) for x in out]


def pack_rows(seqs: Sequence[Sequence[int]], n_ctx: int, eot: int) -> np.ndarray:
    """Pack stories into rows of ``n_ctx`` tokens, each starting with ``eot`` and a story start.

    A row is ``[eot] s_i [eot] s_{i+1} [eot] ...`` cut at ``n_ctx``; the next
    row starts with the first story that did not fit completely (so every
    story is seen whole once, unless it is longer than ``n_ctx - 1`` tokens,
    and then it is cut).  An incomplete last row is dropped.
    """
    rows: list[list[int]] = []
    i = 0
    n = len(seqs)
    while i < n:
        row = [eot]
        j = i
        next_i = None
        while len(row) < n_ctx and j < n:
            row.extend(seqs[j])
            if len(row) > n_ctx and next_i is None:
                next_i = j  # story j was cut
            row.append(eot)
            j += 1
        if len(row) < n_ctx:
            break
        if next_i is None:  # every story in the row fitted; the cut (if any) was the trailing eot
            next_i = j
        if next_i == i:  # a single story longer than the row
            next_i = i + 1
        rows.append(row[:n_ctx])
        i = next_i
    return np.asarray(rows, dtype=np.int64).reshape(-1, n_ctx)


# --------------------------------------------------------------------------- loss


@torch.no_grad()
def lm_loss(model, rows, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) of a causal LM over all positions of ``rows``.

    ``model`` is a Hugging Face causal LM (``model(input_ids).logits``) or a
    TransformerLens ``HookedTransformer`` (``model(tokens)`` returns logits).
    """
    rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for k in range(0, rows_t.shape[0], batch_size):
        x = rows_t[k:k + batch_size]
        out = model(x)
        logits = out.logits if hasattr(out, "logits") else out
        lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -lp.gather(-1, x[:, 1:, None]).squeeze(-1)
        total += float(nll.sum())
        count += nll.numel()
    model.train(was_training)
    return total / max(count, 1)


# --------------------------------------------------------------------------- TransformerLens


def to_hooked_transformer(hf_model, tokenizer=None):
    """A TransformerLens ``HookedTransformer`` with the HF GPT-2 model's exact weights
    (no LayerNorm folding, ``use_hook_mlp_in`` on): the model layer's own converter."""
    from mi_ideas.backends.tl_backend import hooked_from_gpt2

    return hooked_from_gpt2(hf_model, tokenizer, name="stories-gpt2")


@torch.no_grad()
def tl_activations(model, rows, hook_names: Sequence[str], batch_size: int = 32,
            drop_first: bool = True) -> dict[str, torch.Tensor]:
    """Activations ``[n_tokens, d]`` at ``hook_names`` of a HookedTransformer, one forward per batch.

    ``drop_first`` drops position 0 of every row (the BOS / end-of-text token,
    whose activations are outliers no dictionary should spend capacity on).
    """
    rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    start = 1 if drop_first else 0
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hook_names}
    names = set(hook_names)
    for k in range(0, rows_t.shape[0], batch_size):
        _, cache = model.run_with_cache(rows_t[k:k + batch_size], names_filter=lambda n: n in names)
        for h in hook_names:
            a = cache[h][:, start:]
            out[h].append(a.reshape(-1, a.shape[-1]).float().clone())
    return {h: torch.cat(v) for h, v in out.items()}


def _site_module(hf_model, hook_name: str):
    parts = hook_name.split(".")
    layer, kind = int(parts[1]), parts[2]
    block = hf_model.transformer.h[layer]
    return layer, kind, block


@torch.no_grad()
def hf_activations(hf_model, rows, hook_names: Sequence[str], batch_size: int = 32,
                   drop_first: bool = True) -> dict[str, torch.Tensor]:
    """Same as :func:`harvest`, read from a Hugging Face ``GPT2LMHeadModel`` with PyTorch hooks.

    Supports ``blocks.L.hook_resid_pre``, ``blocks.L.hook_mlp_in`` and
    ``blocks.L.hook_mlp_out``.
    """
    rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    start = 1 if drop_first else 0
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hook_names}
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for h in hook_names:
        layer, kind, block = _site_module(hf_model, h)
        if kind == "hook_resid_pre":
            handles.append(block.register_forward_pre_hook(
                lambda m, args, kwargs, h=h: captured.__setitem__(
                    h, args[0] if args else kwargs["hidden_states"]), with_kwargs=True))
        elif kind == "hook_mlp_in":
            handles.append(block.ln_2.register_forward_pre_hook(
                lambda m, args, h=h: captured.__setitem__(h, args[0])))
        elif kind == "hook_mlp_out":
            handles.append(block.mlp.register_forward_hook(
                lambda m, args, output, h=h: captured.__setitem__(h, output)))
        else:
            raise ValueError(f"unsupported hook {h!r}")
    try:
        for k in range(0, rows_t.shape[0], batch_size):
            captured.clear()
            hf_model(rows_t[k:k + batch_size])
            for h in hook_names:
                a = captured[h][:, start:]
                out[h].append(a.reshape(-1, a.shape[-1]).float().clone())
    finally:
        for hd in handles:
            hd.remove()
    return {h: torch.cat(v) for h, v in out.items()}


# --------------------------------------------------------------------------- metrics


# the definition the whole project reports (1 - sum ||x - x_hat||^2 / sum ||x - mean||^2)
from mi_ideas.metrics import explained_variance  # noqa: E402


@torch.no_grad()
def dictionary_metrics(sae, x_in: torch.Tensor, x_target: torch.Tensor | None = None,
                       batch_size: int = 4096) -> dict[str, float]:
    """Explained variance and L0 of a SAELens SAE (``x_target=None``) or transcoder.

    The SAE reconstructs ``x_in``; a transcoder maps ``x_in`` to ``x_target``.
    """
    target = x_in if x_target is None else x_target
    outs, l0s, alive = [], [], None
    for k in range(0, x_in.shape[0], batch_size):
        f = sae.encode(x_in[k:k + batch_size])
        outs.append(sae.decode(f).float())
        l0s.append((f != 0).sum(-1).double())
        fired = (f != 0).any(0)
        alive = fired if alive is None else alive | fired
    x_hat = torch.cat(outs)
    return {
        "explained_variance": explained_variance(target, x_hat),
        "l0": float(torch.cat(l0s).mean()),
        "dead_latents_on_eval": int((~alive).sum()) if alive is not None else 0,
        "n_eval_tokens": int(x_in.shape[0]),
    }


def iter_batches(x: torch.Tensor, batch_size: int, seed: int) -> Iterable[torch.Tensor]:
    """Endless shuffled mini-batches of the rows of ``x`` (an SAELens ``DataProvider``)."""
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    while True:
        perm = torch.randperm(n, generator=gen)
        for k in range(0, n - batch_size + 1, batch_size):
            yield x[perm[k:k + batch_size]]


def cosine_lr(step: int, total: int, warmup: int, min_frac: float) -> float:
    """Linear warm-up then cosine decay to ``min_frac``; returns the multiplier of the peak lr."""
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


@torch.no_grad()
def bos_effect(root=None, n_stories: int = 300, max_tokens: int = 120) -> dict[str, float]:
    """Held-out loss on story starts with and without a prepended ``<|endoftext|>``.

    Each of the first ``n_stories`` held-out stories (the manifest's ``heldout_seed``) is
    tokenized alone (first ``max_tokens`` tokens) and scored on the same positions both
    ways: the predictions of its tokens 2.. (nats/token, mean over those positions). The
    zoo README quotes it: ``python -c "from mi_ideas.zoo.build.lm import bos_effect;
    print(bos_effect())"``.
    """
    from mi_ideas import zoo
    from mi_ideas.data import stories

    model, tok = zoo.load_model(root=root)
    texts = [s.text for s in stories.generate_stories(n_stories, zoo.manifest(root)["corpus"]["heldout_seed"])]
    out = {}
    for key, bos in (("with_bos", True), ("without_bos", False)):
        total, count = 0.0, 0
        for t in texts:
            ids = tok(t, add_special_tokens=False)["input_ids"][:max_tokens]
            x = torch.tensor([([tok.bos_token_id] if bos else []) + ids])
            lp = torch.log_softmax(model(x).logits[0, :-1].float(), -1)
            nll = -lp.gather(-1, x[0, 1:, None]).squeeze(-1)
            nll = nll[1:] if bos else nll  # same positions: the predictions of tokens 2..
            total += float(nll.sum())
            count += nll.numel()
        out[key] = round(total / count, 4)
    return out
