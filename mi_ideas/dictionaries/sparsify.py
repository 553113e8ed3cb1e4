"""EleutherAI ``sparsify`` checkpoints (github.com/EleutherAI/sparsify) as SAELens objects.

Read with ``json`` and ``safetensors`` only; the ``eai-sparsify`` package is not needed.

The format (``sparsify/sparse_coder.py``, ``SparseCoder.save_to_disk``): one directory per
sparse coder holding ``cfg.json`` (the ``SparseCoderConfig`` fields — ``activation``,
``expansion_factor``, ``normalize_decoder``, ``num_latents``, ``k``, ``multi_topk``,
``skip_connection``, ``transcode``, ... — plus ``d_in``) and ``sae.safetensors``
(``encoder.weight`` ``(num_latents, d_in)``, ``encoder.bias`` ``(num_latents,)``,
``W_dec`` ``(num_latents, d_in)``, ``b_dec`` ``(d_in,)``, and ``W_skip`` ``(d_in, d_in)``
with a skip connection). A training run (``sparsify/trainer.py``, ``Trainer.save``) writes
one such directory per hookpoint, named after the module relative to the model's
``base_model`` (``layers.3``, ``layers.3.mlp``, ``h.3`` for GPT-2), with ``/seedN``
subdirectories when several seeds were trained, and the run's ``config.json`` beside them.

The math (``SparseCoder.encode`` / ``decode`` / ``forward`` and ``fused_encoder``)::

    pre  = relu(encoder(x - b_dec))          # x itself, not x - b_dec, when transcoding
    acts, idx = topk(pre, k)
    out  = sum_i acts_i * W_dec[idx_i] + b_dec   (+ x @ W_skip.T with a skip connection)

A TopK autoencoder is exactly SAELens's ``TopKSAE`` with ``W_enc = encoder.weight.T``,
``b_enc = encoder.bias`` and ``apply_b_dec_to_input=True`` (SAELens takes the top k of the
pre-activations and then applies ReLU; sparsify applies ReLU first: the same dense
activations). The SAE reads its module's *output* (the trainer's forward hook), so the
hook name is ``blocks.L.hook_resid_post`` for a layer, ``blocks.L.hook_mlp_out`` for its
MLP and ``blocks.L.hook_attn_out`` for its attention.

Not representable as a SAELens object, so refused with a message saying why: transcoders
(SAELens 6 has no TopK transcoder: its ``Transcoder`` and ``SkipTranscoder`` use ReLU),
skip connections on an autoencoder, ``multi_topk`` (sparsify's own forward then decodes the
top ``4k`` latents while ``encode`` keeps ``k``; ``?k=K`` picks one), the ``groupmax``
activation, and the ``embed_skip`` / ``gram_lookup`` / ``signed`` variants.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from mi_ideas.errors import UsageError
from mi_ideas.sites import from_hook_name

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"

#: ``[prefix.](h|layers).L[.mlp|.attn|.self_attn|.attention]``: GPT-2 (``h.L``,
#: ``transformer.h.L``), GPT-NeoX (``layers.L``, ``gpt_neox.layers.L``), Llama-family
#: (``layers.L``, ``model.layers.L``) and other models whose blocks are a ModuleList.
_HOOKPOINT_RE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*?(?:h|layers)\.(?P<layer>\d+)"
    r"(?:\.(?P<sub>mlp|attn|self_attn|attention))?$"
)
_SEED_RE = re.compile(r"^seed\d+$")
_QUERY_KEYS = ("hook_name", "k")
_SUPPORTED = (
    "Supported: TopK sparse autoencoders (activation 'topk', transcode false, "
    "skip_connection false, multi_topk false or with ?k=K)."
)


def hook_name_for(hookpoint: str) -> str | None:
    """The TransformerLens hook name an autoencoder on ``hookpoint`` reads (None if the
    module name is not one mi-ideas recognises)."""
    m = _HOOKPOINT_RE.match(hookpoint)
    if not m:
        return None
    sub = m["sub"]
    kind = ("hook_resid_post" if sub is None else
            "hook_mlp_out" if sub == "mlp" else "hook_attn_out")
    return f"blocks.{m['layer']}.{kind}"


def load_sparsify_checkpoint(rest: str) -> Any:
    """``sparsify:DIR[/HOOKPOINT][?hook_name=NAME&k=K]`` as a SAELens ``TopKSAE``."""
    spec = f"sparsify:{rest}"
    path_text, _, query = rest.partition("?")
    options = _parse_query(query, spec)
    path = _coder_dir(Path(path_text).expanduser(), spec)
    cfg = _read_cfg(path, spec)
    weights = _read_weights(path, spec)
    hookpoint = path.parent.name if _SEED_RE.match(path.name) else path.name

    k = _check_supported(cfg, spec, options)
    hook_name = options.get("hook_name") or hook_name_for(hookpoint)
    if hook_name is None:
        raise UsageError(
            f"{spec}: the hookpoint {hookpoint!r} (the directory's name) is not a module name "
            f"mi-ideas can map to a site. It recognises [PREFIX.]layers.L, [PREFIX.]h.L "
            f"(the residual stream after block L), and those with .mlp / .attn / .self_attn "
            f"(that sublayer's output). Name the site yourself with "
            f"sparsify:{path_text}?hook_name=blocks.L.hook_resid_post (any TransformerLens "
            f"hook name mi-ideas maps, see docs/models.md)."
        )
    from_hook_name(hook_name)  # a clear error for a hook name with no standard site
    return _topk_sae(cfg, weights, k=k, hook_name=hook_name, hookpoint=hookpoint,
                     model_name=_model_name(path), spec=spec)


# -- pieces --------------------------------------------------------------------------


def _parse_query(query: str, spec: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _QUERY_KEYS:
            raise UsageError(
                f"{spec}: unknown option {key!r}; sparsify specs take "
                f"{' and '.join('?' + q + '=' for q in _QUERY_KEYS)} "
                f"(e.g. sparsify:DIR/layers.3?hook_name=blocks.3.hook_resid_post)."
            )
        if key == "k":
            if not value.isdigit() or int(value) < 1:
                raise UsageError(f"{spec}: k must be a positive integer, not {value!r}.")
            options[key] = int(value)
        else:
            options[key] = value
    return options


def _natural(name: str) -> list:
    """A natural-sort key (``layers.2`` before ``layers.10``), as sparsify orders them."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _coders_under(path: Path) -> list[str]:
    """The sparse-coder directories below a training run's checkpoint directory."""
    def subdirs(p: Path) -> list[Path]:
        return sorted((c for c in p.iterdir() if c.is_dir()), key=lambda c: _natural(c.name))

    found = []
    for child in subdirs(path):
        if (child / CFG_FILE).is_file():
            found.append(child.name)
        else:
            found += [f"{child.name}/{s.name}" for s in subdirs(child)
                      if _SEED_RE.match(s.name) and (s / CFG_FILE).is_file()]
    return found


def _coder_dir(path: Path, spec: str) -> Path:
    if path.is_dir() and (path / CFG_FILE).is_file():
        return path
    if path.is_dir():
        coders = _coders_under(path)
        if len(coders) == 1:
            return path / coders[0]
        if coders:
            raise UsageError(
                f"{spec} is a checkpoint with {len(coders)} hookpoints; name one, e.g. "
                f"sparsify:{path}/{coders[0]}. Its hookpoints: {', '.join(coders)}."
            )
        raise UsageError(
            f"{spec}: {str(path)!r} holds no sparsify sparse coder (no {CFG_FILE} in it or in "
            f"its subdirectories). Point at a directory written by sparsify's "
            f"save_to_disk (cfg.json + sae.safetensors) or at a training run's checkpoint "
            f"directory."
        )
    parent = path.parent
    if parent.is_dir() and _coders_under(parent):
        raise UsageError(
            f"{spec}: the checkpoint {str(parent)!r} has no hookpoint {path.name!r}; its "
            f"hookpoints are {', '.join(_coders_under(parent))}."
        )
    raise UsageError(
        f"{spec}: no directory {str(path)!r}. Give sparsify:DIR for one sparse coder's "
        f"directory, or sparsify:DIR/HOOKPOINT for one hookpoint of a training run's "
        f"checkpoint (download a Hub checkpoint first, e.g. with huggingface-cli download)."
    )


def _read_cfg(path: Path, spec: str) -> dict[str, Any]:
    try:
        cfg = json.loads((path / CFG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{spec}: cannot read {str(path / CFG_FILE)!r}: {exc}.") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("d_in"), int):
        raise UsageError(
            f"{spec}: {str(path / CFG_FILE)!r} is not a sparsify config: it needs d_in (an "
            f"integer) beside the SparseCoderConfig fields, as save_to_disk writes it."
        )
    return cfg


def _read_weights(path: Path, spec: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    file = path / WEIGHTS_FILE
    if not file.is_file():
        raise UsageError(
            f"{spec}: {str(path)!r} has {CFG_FILE} but no {WEIGHTS_FILE}; copy the whole "
            f"directory sparsify wrote (both files)."
        )
    try:
        weights = load_file(str(file), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        raise UsageError(
            f"{spec}: cannot read {str(file)!r}: {type(exc).__name__}: {exc}."
        ) from None
    missing = [k for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if k not in weights]
    if missing:
        raise UsageError(
            f"{spec}: {str(file)!r} lacks {', '.join(missing)} (it has "
            f"{', '.join(sorted(weights)) or 'nothing'}); a sparsify SparseCoder saves "
            f"encoder.weight, encoder.bias, W_dec and b_dec."
        )
    return weights


def _check_supported(cfg: dict[str, Any], spec: str, options: dict[str, Any]) -> int:
    """The k to use; a clear error for configurations SAELens cannot represent."""
    if cfg.get("transcode"):
        raise UsageError(
            f"{spec} is a transcoder (transcode: true). SAELens has no TopK transcoder "
            f"class (its Transcoder and SkipTranscoder use ReLU), so mi-ideas cannot return "
            f"it as a SAELens object without changing its math. {_SUPPORTED}"
        )
    if cfg.get("skip_connection"):
        raise UsageError(
            f"{spec} has a skip connection (skip_connection: true, W_skip), which SAELens's "
            f"TopKSAE has no place for. {_SUPPORTED}"
        )
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise UsageError(f"{spec} uses the {activation!r} activation, not topk. {_SUPPORTED}")
    for flag in ("embed_skip", "gram_lookup", "signed"):
        if cfg.get(flag):
            raise UsageError(
                f"{spec} uses {flag}: true, which SAELens cannot represent. {_SUPPORTED}"
            )
    k = cfg.get("k")
    if not isinstance(k, int) or k < 1:
        raise UsageError(f"{spec}: cfg.json has no positive integer k (found {k!r}).")
    if cfg.get("multi_topk") and "k" not in options:
        raise UsageError(
            f"{spec} was trained with multi_topk: sparsify's encode keeps the top k={k} "
            f"latents, but its forward decodes the top {4 * k}. Say which TopK SAE you want: "
            f"sparsify:...?k={k} (as encode) or ?k={4 * k} (as its multi-topk forward)."
        )
    return int(options.get("k", k))


def _model_name(path: Path) -> str | None:
    """The model a training run was on, from its ``config.json`` (beside the hookpoints)."""
    for parent in (path.parent, path.parent.parent):
        try:
            run = json.loads((parent / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(run, dict) and isinstance(run.get("model"), str):
            return run["model"]
    return None


def _topk_sae(cfg: dict[str, Any], w: dict[str, Any], *, k: int, hook_name: str,
              hookpoint: str, model_name: str | None, spec: str) -> Any:
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    d_in = int(cfg["d_in"])
    enc, enc_b, dec, dec_b = w["encoder.weight"], w["encoder.bias"], w["W_dec"], w["b_dec"]
    d_sae = int(enc.shape[0]) if enc.ndim == 2 else -1
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
                "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    wrong = [f"{name} {tuple(w[name].shape)} (expected {shape})"
             for name, shape in expected.items() if tuple(w[name].shape) != shape]
    declared = cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor") or 0)
    if wrong or (declared and declared != d_sae):
        raise UsageError(
            f"{spec}: the weights do not match cfg.json (d_in={d_in}, num_latents="
            f"{declared}): {'; '.join(wrong) or f'encoder.weight has {d_sae} latents'}."
        )
    if not 1 <= k <= d_sae:
        raise UsageError(f"{spec}: k={k} must be between 1 and the {d_sae} latents.")
    meta = SAEMetadata(hook_name=hook_name, model_name=model_name,
                       sparsify_hookpoint=hookpoint)
    dtype = str(enc.dtype).removeprefix("torch.")
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype=dtype,
                                apply_b_dec_to_input=True, metadata=meta))
    sae.load_state_dict({"W_enc": enc.T.contiguous(), "b_enc": enc_b, "W_dec": dec,
                         "b_dec": dec_b})
    return sae.eval()
