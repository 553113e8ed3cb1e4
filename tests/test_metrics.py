"""The one definition of each shared quantity, checked against cases whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from mi_ideas import metrics, trace_ops
from mi_ideas.errors import UsageError


def _lp(p):
    return torch.tensor(p, dtype=torch.float64).log()


def test_kl_js_tv_on_a_hand_computed_pair():
    p, q = [0.5, 0.5], [0.9, 0.1]
    kl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    m = [0.7, 0.3]
    js = 0.5 * sum(a * math.log(a / b) for a, b in zip(p, m)) + 0.5 * sum(
        a * math.log(a / b) for a, b in zip(q, m))
    assert float(metrics.kl_divergence(_lp(p), _lp(q))) == pytest.approx(kl, rel=1e-6)
    assert float(metrics.js_divergence(_lp(p), _lp(q))) == pytest.approx(js, rel=1e-5)
    assert float(metrics.total_variation(_lp(p), _lp(q))) == pytest.approx(0.4, rel=1e-6)


def test_divergences_vanish_on_equal_distributions_and_js_is_symmetric_and_bounded():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 50, generator=g).log_softmax(-1)
    b = torch.randn(16, 50, generator=g).log_softmax(-1)
    for f in (metrics.kl_divergence, metrics.js_divergence, metrics.total_variation):
        assert f(a, a).abs().max() < 1e-6
    assert torch.allclose(metrics.js_divergence(a, b), metrics.js_divergence(b, a), atol=1e-6)
    assert (metrics.js_divergence(a, b) <= math.log(2) + 1e-6).all()
    assert (metrics.kl_divergence(a, b) >= -1e-6).all()


def test_trace_ops_kl_equals_the_host_definition():
    # trace_ops keeps its own copy (it ships to servers without mi_ideas); the two must agree.
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(4, 30, generator=g).log_softmax(-1)
    logits = torch.randn(4, 7, 30, generator=g)
    out = trace_ops.stats(logits, None, -1, ref, 0, False, False)
    assert torch.allclose(out["kl"], metrics.kl_divergence(ref, logits[:, -1].log_softmax(-1)), atol=1e-6)


def test_explained_variance_of_known_reconstructions():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 8, generator=g)
    assert metrics.explained_variance(x, x) == 1.0
    assert metrics.explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-12)
    # keep the first 2 of 8 independent unit-variance coordinates: about 2/8 of the variance
    half = x.clone()
    half[:, 2:] = x[:, 2:].mean(0)
    assert metrics.explained_variance(x, half) == pytest.approx(0.25, abs=0.05)
    with pytest.raises(UsageError, match="undefined"):
        metrics.explained_variance(torch.ones(3, 2), torch.zeros(3, 2))


def test_row_mask_skips_each_rows_bos_under_left_padding():
    from mi_ideas.subject import Batch

    batch = Batch(torch.tensor([[0, 0, 5, 6], [1, 7, 8, 9]]),
                  torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
    assert metrics.row_mask(batch).tolist() == [[False, False, False, True],
                                                [False, True, True, True]]
    assert metrics.row_mask(batch, "last").tolist() == [[False, False, False, True],
                                                        [False, False, False, True]]
    with pytest.raises(UsageError):
        metrics.row_mask(batch, "first")
