"""Removal schedules: the published ones, scaled to a model, and the zoo default (no torch).

A schedule says at which optimiser step each LayerNorm site stops being real: ``ln_2`` of
each layer (MLP input), then ``ln_1`` for the query/key path, then ``ln_1`` for the value
path, then ``ln_f``, then the end-of-text and BOS special cases; layers go 0, 1, 2, ...
within each phase, ``gap`` steps apart. The published schedules are given for GPT-2
small (12 layers) with their own step count; :func:`scaled` maps them to ``steps`` total
steps and ``n_layers`` layers, keeping the *fraction of training* at which each phase
starts and how long it lasts (so a phase's per-layer gap is multiplied by
``12 / n_layers``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Schedule:
    """Step numbers of one removal schedule (see the module docstring)."""

    name: str
    total_steps: int
    n_layers: int
    warmup_steps: int
    ln2_start: float
    ln2_gap: float
    ln1qk_start: float
    ln1qk_gap: float
    ln1v_start: float
    ln1v_gap: float
    lnf_step: float
    eot_step: float
    bos_step: float
    lr: float
    min_lr_frac: float
    aux_loss_weight: float
    tokens_per_step: int | None = None
    source: str = ""

    def removal_steps(self) -> dict[str, int]:
        """Site name -> first step at which it is removed (integers, rounded)."""
        out: dict[str, int] = {}
        for kind, start, gap in (("ln2", self.ln2_start, self.ln2_gap),
                                 ("ln1qk", self.ln1qk_start, self.ln1qk_gap),
                                 ("ln1v", self.ln1v_start, self.ln1v_gap)):
            for layer in range(self.n_layers):
                out[f"{kind}.{layer}"] = int(round(start + layer * gap))
        out["lnf"] = int(round(self.lnf_step))
        return out

    def special_steps(self) -> tuple[int, int]:
        """(eot_step, bos_step): the steps at which the special cases end."""
        return int(round(self.eot_step)), int(round(self.bos_step))

    def last_removal(self) -> int:
        """The step from which the model is fully LN-free."""
        return max(max(self.removal_steps().values()), *self.special_steps())

    def table(self) -> dict[str, object]:
        """JSON-ready description (for the result's details)."""
        return {"name": self.name, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "lr": self.lr, "min_lr_frac": self.min_lr_frac,
                "aux_loss_weight": self.aux_loss_weight,
                "removal_steps": self.removal_steps(),
                "eot_step": self.special_steps()[0], "bos_step": self.special_steps()[1],
                "last_removal": self.last_removal(), "source": self.source}


#: Heimersheim 2024 (arXiv 2409.13710), ``ApolloResearch/gpt2_noLN`` and the slow schedule of
#: ``submarat/removing-layer-norm`` (``make_gpt2_standard_slow``): a 2^19-token target met by
#: 48 rows x 10 accumulation steps x 1024 tokens = 491,520 tokens per step.
HEIMERSHEIM = Schedule(
    "heimersheim", total_steps=2000, n_layers=12, warmup_steps=100,
    ln2_start=200, ln2_gap=20, ln1qk_start=440, ln1qk_gap=20, ln1v_start=680, ln1v_gap=30,
    lnf_step=1040, eot_step=1060, bos_step=1160, lr=6e-4, min_lr_frac=0.0, aux_loss_weight=0.0,
    tokens_per_step=48 * 10 * 1024,
    source="Heimersheim 2024, 'You can remove GPT2's LayerNorm by fine-tuning' (arXiv 2409.13710)",
)

#: Baroni et al. 2025 (arXiv 2507.02559), ``submarat/removing-layer-norm``
#: ``make_gpt2_standard_aux``: 300 steps of 2^19 tokens, auxiliary loss weight 0.1.
BARONI = Schedule(
    "baroni", total_steps=300, n_layers=12, warmup_steps=25,
    ln2_start=20, ln2_gap=2, ln1qk_start=44, ln1qk_gap=2, ln1v_start=68, ln1v_gap=3,
    lnf_step=104, eot_step=106, bos_step=116, lr=6e-4, min_lr_frac=0.5, aux_loss_weight=0.1,
    tokens_per_step=2 ** 19,
    source="Baroni et al. 2025, 'Transformers Don't Need LayerNorm at Inference Time' (arXiv 2507.02559)",
)

#: Tuned for the zoo model (4 layers) in units of 100 steps: removal starts after a short
#: warm-up, one site every 2-3 steps, and the last 62% of training is recovery.
ZOO = Schedule(
    "zoo", total_steps=100, n_layers=4, warmup_steps=5,
    ln2_start=5, ln2_gap=2, ln1qk_start=13, ln1qk_gap=2, ln1v_start=21, ln1v_gap=3,
    lnf_step=33, eot_step=35, bos_step=38, lr=3e-4, min_lr_frac=0.1, aux_loss_weight=0.0,
    source="this project, tuned on the zoo model (docs/ideas/layernorm-removal.md)",
)

PUBLISHED = {"heimersheim": HEIMERSHEIM, "baroni": BARONI, "zoo": ZOO}


def scaled(base: Schedule, steps: int, n_layers: int) -> Schedule:
    """``base`` stretched to ``steps`` total steps on an ``n_layers`` model (see the module
    docstring): every step is multiplied by ``steps / base.total_steps``, every per-layer gap
    additionally by ``base.n_layers / n_layers``."""
    s = steps / base.total_steps
    g = s * base.n_layers / n_layers
    return replace(
        base, total_steps=steps, n_layers=n_layers,
        warmup_steps=max(1, int(round(base.warmup_steps * s))),
        ln2_start=base.ln2_start * s, ln2_gap=base.ln2_gap * g,
        ln1qk_start=base.ln1qk_start * s, ln1qk_gap=base.ln1qk_gap * g,
        ln1v_start=base.ln1v_start * s, ln1v_gap=base.ln1v_gap * g,
        lnf_step=base.lnf_step * s, eot_step=base.eot_step * s, bos_step=base.bos_step * s,
    )


def all_at_once(base: Schedule, at: str = "first") -> Schedule:
    """The control: every site and both special cases removed in one step, ``base``'s first
    removal step (``at="first"``) or its last (``"last"``: the same LN-free recovery steps),
    everything else (steps, learning rate, warm-up) unchanged."""
    step = base.ln2_start if at == "first" else float(base.last_removal())
    return replace(base, name=f"{base.name}-all-at-once-{at}", ln2_start=step, ln2_gap=0,
                   ln1qk_start=step, ln1qk_gap=0, ln1v_start=step, ln1v_gap=0, lnf_step=step,
                   eot_step=step, bos_step=step)


def with_overrides(base: Schedule, **overrides: float | None) -> Schedule:
    """``base`` with the given fields replaced (None values are ignored)."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
