"""discrete-output-states on planted output states, through the idea's pair-path analysis
(``run._plateaus``: pairs, the sweep, bounded read-outs, onset metrics, paired statistics,
the verdict).

A prototype model: logits_j(h) = -beta ||h - c_j||^2, one output token per prototype cell.
beta = 50 plants discrete states (the output is constant inside each cell and switches at
the planted boundaries); beta = 0.1 is the same prototypes with a smooth read-out. Onset
metrics of the bounded JS read-out must tell them apart, with the steep model's onsets at
the planted boundaries; max-slope KL sharpness must not (it is about 2 for both: a hard
boundary gives a flat-then-linear KL curve, a smooth model a quadratic one). The old code
called both "sharpness ~2: not plateau-like".
"""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.toy_subjects import IdentityBlockSubject
from mi_ideas_plugins.plateaus.common.sweep import clean_run, rebase
from mi_ideas_plugins.plateaus.discrete_output_states.config import DiscreteOutputStatesConfig
from mi_ideas_plugins.plateaus.discrete_output_states.result import DiscreteOutputStatesResult
from mi_ideas_plugins.plateaus.discrete_output_states.run import _plateaus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CENTRES = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
STEEP, SMOOTH = 50.0, 0.1


class PrototypeSubject(IdentityBlockSubject):
    """One identity block; logits_j = -beta ||h - c_j||^2 at every position."""

    backend = "prototypes"

    def __init__(self, beta):
        super().__init__(spec=f"prototypes-{beta}", tokenizer=None, n_layers=1, d_model=2,
                         d_vocab=len(CENTRES))
        self.beta = beta

    def logits_of(self, h):
        return -self.beta * ((h[..., None, :] - CENTRES) ** 2).sum(-1)

    def embed(self, batch):
        return torch.zeros(*batch.input_ids.shape, 2)


def _analyse(beta, n_steps=41):
    g = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(len(CENTRES)), 10)
    x = CENTRES[torch.as_tensor(labels)] + 0.4 * torch.randn(len(labels), 2, generator=g)
    subject = PrototypeSubject(beta)
    ids = torch.zeros(len(labels), 3, dtype=torch.long)
    clean = rebase(subject, clean_run(subject, ids, "resid_pre.0"), "resid_pre.0", x)
    ctx = SimpleNamespace(rng_for=lambda name: np.random.default_rng(zlib.crc32(name.encode())),
                          progress=None)
    cfg = DiscreteOutputStatesConfig(n_pairs=30, n_steps=n_steps, kl_threshold=0.5)
    result, details, tensors = DiscreteOutputStatesResult(), {}, {}
    _plateaus(ctx, cfg, subject, clean, clean.logprobs, labels, "resid_pre.0", result,
              details, tensors)
    return result.metrics, details["plateaus"], tensors, x


def _boundary(x, beta, a, b):
    """The α at which the argmax of the steep model first changes along x_a → x_b."""
    alpha = torch.linspace(0, 1, 10001)
    pts = x[a] + alpha[:, None] * (x[b] - x[a])
    win = PrototypeSubject(beta).logits_of(pts).argmax(-1)
    return float(alpha[(win != win[0]).nonzero()[0, 0]])


def test_onset_metrics_find_planted_states_where_max_slope_sharpness_cannot():
    steep, pl, tensors, x = _analyse(STEEP)
    smooth, _, _, _ = _analyse(SMOOTH)
    # planted states: a step-like JS rise on paths to another state; none in the smooth model
    assert steep["plateau_like"] == 1.0 and steep["across.jump_js_ci_high"] < 0.05
    assert smooth["plateau_like"] == 0.0 and smooth["across.jump_js_ci_low"] > 0.3
    # the smooth model rises like alpha^2 from the start (onset exponent 2, log-log slope 2)
    assert smooth["across.onset_exponent_js_median"] == pytest.approx(2.0, abs=0.3)
    assert smooth["across.loglog_slope_js_median"] == pytest.approx(2.0, abs=0.2)
    # the steep model is flat at the start (no power-law start above float32 resolution)
    assert steep["across.loglog_flat_frac"] > 0.9
    # max-slope KL sharpness cannot tell them apart: about 2 for both
    assert 1.4 < steep["across.sharpness_kl_median"] < 2.8
    assert 1.4 < smooth["across.sharpness_kl_median"] < 2.8
    assert abs(steep["across.sharpness_kl_median"] - smooth["across.sharpness_kl_median"]) < 0.6
    # the onsets sit at the planted boundaries, path by path
    ref, part = tensors["pairs_ref"], tensors["pairs_across"]
    o10, o50 = (np.asarray(pl["per_path"][k]["across"]) for k in ("onset10_js", "onset50_js"))
    for i, (a, b) in enumerate(zip(ref.tolist(), part.tolist())):
        planted = _boundary(x, STEEP, a, b)
        assert abs(o10[i] - planted) < 0.03 and abs(o50[i] - planted) < 0.03, (i, planted)
    # same-state paths never leave their state: their JS endpoint is below the floor and they
    # are excluded and counted, not clamped into a normalised curve
    assert steep["within.n_excluded_js"] == 30 and np.isnan(steep["within.jump_js_median"])
    # the answer is derived from the verdict
    from mi_ideas_plugins.plateaus.discrete_output_states.onsets import answer_sentence

    steep["k"], smooth["k"] = 4.0, 4.0
    assert "are step-like" in answer_sentence(steep)
    assert "NOT plateau-like" in answer_sentence(smooth)


def test_pairs_never_join_a_prompt_to_a_copy_of_itself():
    from mi_ideas_plugins.plateaus.discrete_output_states.run import make_pairs

    labels = np.array([0, 0, 0, 1, 1, 1])
    copies = np.eye(6, dtype=bool)
    copies[0, 1] = copies[1, 0] = True  # prompts 0 and 1 have the same activation
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = make_pairs(labels, labels[::-1].copy(), 6, rng, copies=copies)
        for name in ("within", "across", "null_within", "null_across"):
            assert not copies[p["ref"], p[name]].any()
