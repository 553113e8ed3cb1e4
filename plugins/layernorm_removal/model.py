"""A GPT-2 whose LayerNorms can be swapped, one site at a time, for a "fake" LayerNorm.

:class:`FakeLNGPT2` runs a Hugging Face ``GPT2LMHeadModel``'s own parameters (kept as the
submodule ``hf``, so state dicts, weight comparisons and the export use HF names) through
a forward written here. It is written by hand because no library offers what removal
needs: the block's ``ln_1`` applied twice, once for the query/key path and once for the
value path (removed at different steps), a per-site divisor that switches from the
token's own standard deviation to a frozen moving average, and separate divisors for
position 0 (BOS) and end-of-text tokens. With every site still real, the forward equals
the HF model's (``tests/test_layernorm_removal.py`` checks it to 1e-5).

A site's map is ``y = (x - mean(x)) / s * w + b`` with ``s = sqrt(var(x) + eps)`` while the
site is real, and ``s = sigma`` (a scalar) once it is removed, except at special
positions that still have their own ``sigma_bos`` / ``sigma_eot``.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: the LayerNorm sites of an n-layer GPT-2, in the default removal order within a layer
SITE_KINDS = ("ln2", "ln1qk", "ln1v")


def site_names(n_layers: int) -> list[str]:
    """Every fake-LN site: ``ln2.L``, ``ln1qk.L``, ``ln1v.L`` for each layer, then ``lnf``."""
    return [f"{k}.{layer}" for k in SITE_KINDS for layer in range(n_layers)] + ["lnf"]


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}


class FakeLNGPT2(nn.Module):
    """A GPT-2 language model with removable LayerNorms (see the module docstring).

    ``removed[i]`` says whether site ``sites[i]`` uses its frozen ``sigma``;
    ``bos_special`` / ``eot_special`` whether removed sites still give position 0 /
    end-of-text tokens their own divisor. While ``self.training`` and a site is real, its
    moving averages are updated on every forward (momentum ``momentum``).
    """

    def __init__(self, hf_model, eot_token_id: int, momentum: float = 0.9):
        super().__init__()
        cfg = hf_model.config
        if getattr(cfg, "model_type", None) != "gpt2":
            raise ValueError("FakeLNGPT2 needs a GPT-2 model")
        if cfg.scale_attn_by_inverse_layer_idx or cfg.reorder_and_upcast_attn:
            raise ValueError("scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported")
        if cfg.activation_function not in _ACTIVATIONS:
            raise ValueError(f"activation {cfg.activation_function!r} is not supported")
        self.hf = copy.deepcopy(hf_model).float()
        self.hf.config.use_cache = False
        self.n_layers = cfg.n_layer
        self.n_heads = cfg.n_head
        self.d_model = cfg.n_embd
        self.eps = cfg.layer_norm_epsilon
        self.act = _ACTIVATIONS[cfg.activation_function]
        self.eot = int(eot_token_id)
        self.momentum = momentum
        self.sites = site_names(self.n_layers)
        self.index = {s: i for i, s in enumerate(self.sites)}
        n = len(self.sites)
        # float64 so the moving averages are not rounded step after step
        self.register_buffer("sigma", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("sigma_bos", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("sigma_eot", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("initialised", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("removed", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("specials", torch.ones(2, dtype=torch.bool))  # bos, eot
        self.last_final_std: torch.Tensor | None = None
        #: when a dict, every real site's per-token std is stored in it by site name
        self.record_std: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ state

    @property
    def bos_special(self) -> bool:
        return bool(self.specials[0])

    @property
    def eot_special(self) -> bool:
        return bool(self.specials[1])

    def set_state(self, removed: set[str], bos_special: bool, eot_special: bool) -> None:
        """Which sites are removed now and whether the special positions keep their sigma."""
        for s, i in self.index.items():
            self.removed[i] = s in removed
        self.specials[0] = bool(bos_special)
        self.specials[1] = bool(eot_special)

    def fully_removed(self) -> bool:
        """Every site uses one scalar sigma at every position (no LN, no special case)."""
        return bool(self.removed.all()) and not self.bos_special and not self.eot_special

    # ------------------------------------------------------------------ the fake LN

    def _ln(self, name: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
            masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        i = self.index[name]
        xc = x - x.mean(-1, keepdim=True)
        normal, bos, eot = masks
        if not bool(self.removed[i]):
            std = (xc.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
            if self.record_std is not None:
                self.record_std[name] = std.detach().squeeze(-1)
            if self.training:
                self._track(i, std.detach().squeeze(-1), normal, bos, eot)
            return xc / std * w + b
        scale = torch.full(x.shape[:-1], float(self.sigma[i]), dtype=x.dtype, device=x.device)
        # a special divisor never seen (0: no such position yet) falls back to sigma
        if self.bos_special and float(self.sigma_bos[i]) > 0:
            scale = torch.where(bos, float(self.sigma_bos[i]), scale)
        if self.eot_special and float(self.sigma_eot[i]) > 0:
            scale = torch.where(eot, float(self.sigma_eot[i]), scale)
        return xc / scale[..., None] * w + b

    @torch.no_grad()
    def _track(self, i: int, std: torch.Tensor, normal, bos, eot) -> None:
        m = self.momentum
        vals = [std[mask].double().mean() if bool(mask.any()) else None for mask in (normal, bos, eot)]
        first = not bool(self.initialised[i])
        for buf, v in zip((self.sigma, self.sigma_bos, self.sigma_eot), vals):
            if v is None:
                continue
            buf[i] = v if first or float(buf[i]) == 0.0 else m * buf[i] + (1 - m) * v
        if vals[0] is not None:
            self.initialised[i] = True

    @torch.no_grad()
    def calibrate(self, input_ids: torch.Tensor) -> None:
        """Set every site's sigmas to this batch's average std (a real-LN forward)."""
        was = self.training, self.removed.clone(), self.specials.clone()
        self.removed.zero_()
        self.initialised.zero_()
        self.train()
        self.forward(input_ids)
        self.train(was[0])
        self.removed.copy_(was[1])
        self.specials.copy_(was[2])

    # ------------------------------------------------------------------ forward

    def masks(self, input_ids: torch.Tensor, pad: torch.Tensor | None = None):
        """(normal, bos, eot) position masks: position 0; end-of-text tokens elsewhere."""
        bos = torch.zeros_like(input_ids, dtype=torch.bool)
        bos[:, 0] = True
        eot = (input_ids == self.eot) & ~bos
        normal = ~bos & ~eot
        if pad is not None:  # padded positions never feed the moving averages
            normal, bos, eot = normal & ~pad, bos & ~pad, eot & ~pad
        return normal, bos, eot

    def forward(self, input_ids: torch.Tensor, hook: Callable | None = None,
                pad: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(batch, seq, vocab)``. ``hook(site, x)`` may return a replacement for
        ``resid_pre.L`` (and sees ``resid_final``, the input of ``ln_f``); ``pad`` marks
        right-padding positions (causal attention keeps them out of real positions)."""
        tr = self.hf.transformer
        masks = self.masks(input_ids, pad)
        b, t = input_ids.shape
        pos = torch.arange(t, device=input_ids.device)
        x = tr.wte(input_ids) + tr.wpe(pos)[None]
        d, h = self.d_model, self.n_heads
        for layer, block in enumerate(tr.h):
            if hook is not None:
                y = hook(f"resid_pre.{layer}", x)
                x = x if y is None else y
            ln1 = block.ln_1
            w_attn, b_attn = block.attn.c_attn.weight, block.attn.c_attn.bias
            a_qk = self._ln(f"ln1qk.{layer}", x, ln1.weight, ln1.bias, masks)
            a_v = self._ln(f"ln1v.{layer}", x, ln1.weight, ln1.bias, masks)
            qk = a_qk @ w_attn[:, :2 * d] + b_attn[:2 * d]
            v = a_v @ w_attn[:, 2 * d:] + b_attn[2 * d:]
            q, k = qk.split(d, dim=-1)
            q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            z = z.transpose(1, 2).reshape(b, t, d)
            x = x + block.attn.c_proj(z)
            m = self._ln(f"ln2.{layer}", x, block.ln_2.weight, block.ln_2.bias, masks)
            x = x + block.mlp.c_proj(self.act(block.mlp.c_fc(m)))
        if hook is not None:
            hook("resid_final", x)
        xc = x - x.mean(-1, keepdim=True)
        self.last_final_std = (xc.pow(2).mean(-1) + self.eps).sqrt()
        y = self._ln("lnf", x, tr.ln_f.weight, tr.ln_f.bias, masks)
        return self.hf.lm_head(y)

    # ------------------------------------------------------------------ export

    def matrices(self) -> dict[str, torch.Tensor]:
        """Every weight matrix (2-d parameter) by its Hugging Face name (tied ones once)."""
        out, seen = {}, set()
        for name, p in self.hf.named_parameters():
            if p.ndim == 2 and id(p) not in seen:
                seen.add(id(p))
                out[name] = p.detach()
        return out


BIG_EPS = 1e12  # sqrt(1e12) = 1e6 exactly, so a rescale by 1e6 / sigma undoes the division


@torch.no_grad()
def export_hf(model: FakeLNGPT2):
    """A stock ``GPT2LMHeadModel`` computing the LN-free model: every LayerNorm has
    ``eps = 1e12`` (so it divides by sqrt(var + 1e12) = 1e6 (1 + var / 2e12)) and its weight
    times 1e6 / sigma; the value path's sigma differs from the query/key path's, so the
    value columns of ``c_attn`` are rescaled by sigma_qk / sigma_v and their bias corrected
    (exact: ``y_v = r y_qk + (1 - r) b``). Needs :meth:`FakeLNGPT2.fully_removed`."""
    if not model.fully_removed():
        raise ValueError("export needs a model with every LayerNorm removed")
    hf = copy.deepcopy(model.hf)
    hf.config.layer_norm_epsilon = BIG_EPS
    hf.config.use_cache = True
    root = math.sqrt(BIG_EPS)
    d = model.d_model
    sig = {s: float(model.sigma[i]) for s, i in model.index.items()}
    for layer, block in enumerate(hf.transformer.h):
        for ln in (block.ln_1, block.ln_2, ):
            ln.eps = BIG_EPS
        s_qk, s_v = sig[f"ln1qk.{layer}"], sig[f"ln1v.{layer}"]
        r = s_qk / s_v
        w_v = block.attn.c_attn.weight[:, 2 * d:].clone()
        block.attn.c_attn.bias[2 * d:] += (1 - r) * (block.ln_1.bias @ w_v)
        block.attn.c_attn.weight[:, 2 * d:] *= r
        block.ln_1.weight.mul_(root / s_qk)
        block.ln_2.weight.mul_(root / sig[f"ln2.{layer}"])
    hf.transformer.ln_f.eps = BIG_EPS
    hf.transformer.ln_f.weight.mul_(root / sig["lnf"])
    return hf.eval()


@torch.no_grad()
def export_tl(model: FakeLNGPT2, tokenizer=None, name: str = "ln-free"):
    """A TransformerLens ``HookedTransformer`` with ``normalization_type=None``: each fake
    LN (centring, division by sigma, affine map) folded exactly into the weights it feeds:
    ``W' = (I - 11^T/d) diag(w) W / sigma``, ``b' = b_W + b W``."""
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    from mi_ideas.backends.tl_backend import gpt2_config

    if not model.fully_removed():
        raise ValueError("export needs a model with every LayerNorm removed")
    hf = model.hf
    cfg = gpt2_config(hf.config, name)
    sd = convert_gpt2_weights(hf, cfg)
    d = model.d_model
    centre = torch.eye(d) - 1.0 / d
    sig = {s: float(model.sigma[i]) for s, i in model.index.items()}

    def fold(prefix: str, sigma: float):
        a = centre * sd.pop(f"{prefix}.w")[None, :] / sigma  # rows: input dims
        return a, sd.pop(f"{prefix}.b")

    for layer in range(model.n_layers):
        p = f"blocks.{layer}"
        w1, b1 = sd[f"{p}.ln1.w"].clone(), sd[f"{p}.ln1.b"].clone()
        for key, s in (("Q", "ln1qk"), ("K", "ln1qk"), ("V", "ln1v")):
            a = centre * w1[None, :] / sig[f"{s}.{layer}"]
            W = sd[f"{p}.attn.W_{key}"]
            sd[f"{p}.attn.b_{key}"] = sd[f"{p}.attn.b_{key}"] + torch.einsum("j,hjk->hk", b1, W)
            sd[f"{p}.attn.W_{key}"] = torch.einsum("ij,hjk->hik", a, W)
        del sd[f"{p}.ln1.w"], sd[f"{p}.ln1.b"]
        a, b2 = fold(f"{p}.ln2", sig[f"ln2.{layer}"])
        W = sd[f"{p}.mlp.W_in"]
        sd[f"{p}.mlp.b_in"] = sd[f"{p}.mlp.b_in"] + b2 @ W
        sd[f"{p}.mlp.W_in"] = a @ W
    a, bf = fold("ln_final", sig["lnf"])
    W_U = sd["unembed.W_U"]
    sd["unembed.b_U"] = sd.get("unembed.b_U", torch.zeros(W_U.shape[1])) + bf @ W_U
    sd["unembed.W_U"] = a @ W_U
    return _ln_free_tl(cfg, sd, tokenizer)


def _ln_free_tl(cfg, state_dict, tokenizer=None):
    import warnings

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from mi_ideas.backends.tl_backend import _NO_FOLD

    cfg_none = cfg.to_dict()
    cfg_none["normalization_type"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl = HookedTransformer(HookedTransformerConfig.from_dict(cfg_none), tokenizer=tokenizer,
                               move_to_device=False)
    tl.load_and_process_state_dict(state_dict, **_NO_FOLD)
    return tl.eval()


def load_tl_export(run_dir):
    """The LN-free TransformerLens model a run exported: the config of its Hugging Face
    export (``artifacts/ln_free_hf``) without normalisation, and the folded weights of
    ``artifacts/ln_free_tl_state_dict.safetensors``."""
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    from mi_ideas.backends.tl_backend import gpt2_config

    art = Path(run_dir) / "artifacts"
    hf_cfg = AutoConfig.from_pretrained(art / "ln_free_hf")
    tok = AutoTokenizer.from_pretrained(art / "ln_free_hf")
    sd = load_file(str(art / "ln_free_tl_state_dict.safetensors"))
    return _ln_free_tl(gpt2_config(hf_cfg, "ln-free"), sd, tok)
