"""The transcoder training class (mi_ideas.training.transcoder) with SAELens's SAETrainer."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _planted_mlp(gen: torch.Generator, n_features=24, d_in=32, d_hidden=48, d_out=24):
    """A random MLP y = W2 ReLU(W1 x + b) on sparse inputs: a transcoder must reproduce it."""
    embed = torch.nn.functional.normalize(torch.randn(n_features, d_in, generator=gen), dim=1)
    w1 = torch.randn(d_hidden, d_in, generator=gen) / d_in ** 0.5
    b1 = -0.1 * torch.rand(d_hidden, generator=gen)
    w2 = torch.randn(d_out, d_hidden, generator=gen) / d_hidden ** 0.5

    def sample(n):
        on = torch.rand(n, n_features, generator=gen) < 0.08
        x = (on * (0.5 + torch.rand(n, n_features, generator=gen))) @ embed
        return x, torch.relu(x @ w1.T + b1) @ w2.T

    return sample


def test_transcoder_trained_with_saetrainer_reconstructs_a_planted_mlp(tmp_path):
    from sae_lens import SAE, Transcoder

    from mi_ideas.metrics import explained_variance
    from mi_ideas.training.transcoder import TranscoderTrainingSAE, fit_transcoder

    sample = _planted_mlp(torch.Generator().manual_seed(0))
    x, y = sample(8000)
    xe, ye = sample(4000)
    # raw scales far from 1: the in/out scaling must be folded back correctly
    sae = fit_transcoder(3.0 * x, 0.2 * y, d_sae=64, l1_coefficient=0.3, steps=600,
                         batch_size=256, lr=3e-3, seed=0, quiet=True)
    assert isinstance(sae, TranscoderTrainingSAE)
    with torch.no_grad():
        ev = explained_variance(0.2 * ye, sae(3.0 * xe))
        ev_zero = explained_variance(0.2 * ye, torch.zeros_like(ye))
    print(f"held-out explained variance of the planted MLP's output: {ev:.4f}")
    assert ev >= 0.9, ev  # measured 0.950 at seed 0
    assert ev_zero <= 0.0
    # the saved inference model is a stock SAELens Transcoder giving the same outputs
    sae.save_inference_model(str(tmp_path))
    loaded = SAE.load_from_disk(str(tmp_path))
    assert isinstance(loaded, Transcoder)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(3.0 * xe)), sae(3.0 * xe),
                                   rtol=1e-5, atol=1e-5)


def test_fit_transcoder_is_seeded():
    from mi_ideas.training.transcoder import fit_transcoder

    x, y = _planted_mlp(torch.Generator().manual_seed(1))(1024)
    kw = dict(d_sae=16, l1_coefficient=0.3, steps=20, batch_size=128, seed=3, quiet=True)
    a, b = fit_transcoder(x, y, **kw), fit_transcoder(x, y, **kw)
    c = fit_transcoder(x, y, **(kw | {"seed": 4}))
    torch.testing.assert_close(a.W_dec, b.W_dec)
    assert not torch.allclose(a.W_dec, c.W_dec)


def test_old_zoo_path_is_an_alias():
    from mi_ideas.training import transcoder as new
    from mi_ideas.zoo.build import transcoder as old

    assert old.TranscoderTrainingSAE is new.TranscoderTrainingSAE
    assert old.fold_io_scaling is new.fold_io_scaling
