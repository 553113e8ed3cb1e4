"""Standard activation-site names, the same for every back-end.

| site | what it is |
|---|---|
| ``resid_pre.L``  | residual stream entering block L |
| ``resid_mid.L``  | residual stream after block L's attention has been added (sequential blocks only) |
| ``resid_post.L`` | residual stream leaving block L |
| ``attn_out.L``   | what block L's attention adds to the residual stream |
| ``mlp_in.L``     | the input the MLP of block L sees (after its LayerNorm) |
| ``mlp_out.L``    | what block L's MLP adds to the residual stream |
| ``ln_final``     | the output of the final LayerNorm (what the unembedding reads) |
| ``logits``       | the model's output logits |

TransformerLens / SAELens hook names map onto them (:func:`from_hook_name`), so an SAE
trained on ``blocks.2.hook_resid_pre`` is used at ``resid_pre.2``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mi_ideas.errors import UsageError

LAYER_KINDS = ("resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")
GLOBAL_SITES = ("ln_final", "logits")

# TransformerLens hook name (per layer) -> standard kind. `hook_mlp_in` is the MLP
# block's input *before* its LayerNorm, which is the residual stream after attention:
# resid_mid. Our `mlp_in` is what the MLP weights see: the ln2 module's output. TL's
# `ln2.hook_normalized` fires before the norm's affine map, so it equals mlp_in only on a
# model with folded LayerNorm (where the affine map lives in W_in); the TL back-end reads
# mlp_in from the module output instead (see docs/models.md).
_TL_LAYER_HOOKS = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "hook_mlp_in": "resid_mid",
    "ln2.hook_normalized": "mlp_in",
}
_KIND_TO_TL = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_in": "ln2.hook_normalized",
    "mlp_out": "hook_mlp_out",
}
_SITE_RE = re.compile(r"^(?P<kind>[a-z_]+)\.(?P<layer>-?\d+)$")
_TL_RE = re.compile(r"^blocks\.(?P<layer>\d+)\.(?P<hook>.+)$")


@dataclass(frozen=True, order=True)
class Site:
    """A parsed site: ``kind`` and ``layer`` (``None`` for ``ln_final`` / ``logits``)."""

    order: int
    kind: str
    layer: int | None

    @property
    def name(self) -> str:
        return self.kind if self.layer is None else f"{self.kind}.{self.layer}"

    def __str__(self) -> str:
        return self.name


def parse_site(name: str, n_layers: int) -> Site:
    """Parse and check a site name against a model with ``n_layers`` blocks.

    Negative layers count from the end (``resid_post.-1`` is the last block). TL / SAELens
    hook names are accepted too.
    """
    name = str(name).strip()
    if name in GLOBAL_SITES:
        return Site(order=(n_layers + GLOBAL_SITES.index(name)) * 10, kind=name, layer=None)
    if name.startswith("blocks.") or name.startswith("ln_final."):
        return parse_site(from_hook_name(name), n_layers)
    m = _SITE_RE.match(name)
    if not m or m["kind"] not in LAYER_KINDS:
        raise UsageError(
            f"unknown site {name!r}. Sites are {', '.join(k + '.L' for k in LAYER_KINDS)}, "
            f"{', '.join(GLOBAL_SITES)} (L a block index), or a TransformerLens hook name "
            f"such as blocks.2.hook_resid_pre."
        )
    layer = int(m["layer"])
    if layer < 0:
        layer += n_layers
    if not 0 <= layer < n_layers:
        raise UsageError(
            f"site {name!r} names block {m['layer']}, but the model has {n_layers} blocks "
            f"(0 to {n_layers - 1}, or negative indices from the end)."
        )
    return Site(order=layer * 10 + LAYER_KINDS.index(m["kind"]), kind=m["kind"], layer=layer)


def sort_sites(names: list[str], n_layers: int) -> list[Site]:
    """Parse sites and sort them in the order a forward pass reaches them.

    nnsight requires interventions in execution order, and one sorted pass serves all.
    """
    return sorted({parse_site(n, n_layers) for n in names})


def all_sites(n_layers: int, *, parallel_residual: bool = False) -> list[str]:
    """Every standard site of a model, in execution order."""
    kinds = [k for k in LAYER_KINDS if not (parallel_residual and k == "resid_mid")]
    return [f"{k}.{layer}" for layer in range(n_layers) for k in kinds] + list(GLOBAL_SITES)


def from_hook_name(hook_name: str) -> str:
    """Map a TransformerLens / SAELens hook name to a standard site name."""
    if hook_name == "ln_final.hook_normalized":
        return "ln_final"
    m = _TL_RE.match(hook_name)
    if m and m["hook"] in _TL_LAYER_HOOKS:
        return f"{_TL_LAYER_HOOKS[m['hook']]}.{m['layer']}"
    raise UsageError(
        f"hook name {hook_name!r} has no standard site. Supported: blocks.L.hook_resid_pre, "
        f"hook_resid_mid, hook_resid_post, hook_attn_out, hook_mlp_in, hook_mlp_out, "
        f"ln2.hook_normalized, and ln_final.hook_normalized."
    )


def to_hook_name(site: str | Site, n_layers: int | None = None) -> str:
    """The TransformerLens hook name of a standard site (``logits`` has none)."""
    s = site if isinstance(site, Site) else parse_site(site, n_layers or 10**6)
    if s.kind == "ln_final":
        return "ln_final.hook_normalized"
    if s.kind == "logits":
        raise UsageError("the logits site has no TransformerLens hook; read the model output.")
    return f"blocks.{s.layer}.{_KIND_TO_TL[s.kind]}"
