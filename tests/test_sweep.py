"""The batched perturbation sweep equals the naive loop, locally and through the server.

(The engines, the plan and the memory bound: test_sweep_engine.py.)
"""

from __future__ import annotations

import pytest
import torch

from mi_ideas_plugins.plateaus.common.sweep import clean_run, naive_sweep, path_points, sweep

PROMPTS = ["the cat was red", "a dog ran to the big house", "one two three"]
SITE = "resid_pre.1"


@pytest.fixture(scope="module")
def subject(ndif_model_dir):
    from mi_ideas import load_subject

    return load_subject(f"hf:{ndif_model_dir}")


def _paths(subject, n_paths=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(PROMPTS), n_paths, subject.d_model, generator=g)


@pytest.mark.parametrize("kind", ["direction", "target", "arc"])
def test_batched_sweep_equals_the_naive_loop(subject, kind):
    clean = clean_run(subject, PROMPTS, SITE)
    paths = _paths(subject)
    steps = torch.linspace(0, 1, 5) if kind != "direction" else torch.linspace(0, 4, 5)
    fast = sweep(subject, clean, SITE, paths, steps, kind=kind, rows_per_forward=7)
    slow = naive_sweep(subject, clean, SITE, paths, steps, kind=kind)
    assert fast.n_forwards == 7 and slow.n_forwards == 45  # ceil(45 / 7) forwards
    assert fast.engine == "last_token"  # locally, the last-position path
    assert torch.allclose(fast.kl, slow.kl, atol=1e-5)
    assert torch.allclose(fast.l2, slow.l2, atol=1e-5)
    # step 0 is the clean run itself
    assert fast.kl[..., 0].abs().max() < 1e-5 and fast.l2[..., 0].abs().max() < 1e-4


def test_path_geometry():
    x = torch.tensor([[3.0, 4.0]])
    t = torch.tensor([[[0.0, 10.0]]])
    steps = torch.tensor([0.0, 0.5, 1.0])
    target = path_points(x, t, steps, "target")[0, 0]
    assert torch.allclose(target, torch.tensor([[3.0, 4.0], [1.5, 7.0], [0.0, 10.0]]))
    arc = path_points(x, t, steps, "arc")[0, 0]
    assert torch.allclose(arc.norm(dim=-1), torch.full((3,), 5.0))  # the norm is kept
    assert torch.allclose(arc[-1], torch.tensor([0.0, 5.0]), atol=1e-5)


def test_remote_sweep_equals_local_with_one_request_per_batch(
        subject, ndif_model_dir, ndif_server, ndif_config):
    from mi_ideas import load_subject

    ndif_config.APP.REMOTE_LOGGING = False
    remote = load_subject(f"hf:{ndif_model_dir}", remote=ndif_server.url)
    clean = clean_run(subject, PROMPTS, SITE)
    paths, steps = _paths(subject, 2), torch.linspace(0, 3, 4)
    before = ndif_server.stats()["requests"]
    got = sweep(remote, clean, SITE, paths, steps, rows_per_forward=10)
    assert ndif_server.stats()["requests"] - before == got.n_forwards == 3  # 24 rows / 10
    assert got.engine == "remote"
    want = sweep(subject, clean, SITE, paths, steps)
    assert torch.allclose(got.kl, want.kl, atol=1e-5) and torch.allclose(got.l2, want.l2, atol=1e-5)
