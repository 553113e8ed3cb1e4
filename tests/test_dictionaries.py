"""Dictionaries by spec come back as SAELens's own objects, mapped to standard sites."""

from __future__ import annotations

import pytest
import torch

from mi_ideas import load_dictionary
from mi_ideas.dictionaries import output_site_of, site_of
from mi_ideas.errors import UsageError
from tests.tiny_models import build_tiny


def _save_sae(path, hook_name="blocks.1.hook_resid_pre", d_in=32, transcoder=False):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import Transcoder, TranscoderConfig

    meta = SAEMetadata(hook_name=hook_name, model_name="tiny")
    if transcoder:
        meta.hook_name_out = "blocks.1.hook_mlp_out"
        sae = Transcoder(TranscoderConfig(d_in=d_in, d_sae=64, d_out=d_in, metadata=meta,
                                          apply_b_dec_to_input=False))
    else:
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=64, metadata=meta))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(generator=torch.Generator().manual_seed(0))
    sae.save_model(str(path))
    return sae


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from mi_ideas import load_subject

    return load_subject(f"hf:{build_tiny('gpt2', tmp_path_factory.mktemp('d') / 'gpt2-tiny')}")


def test_local_directory_loads_as_the_saelens_class(tmp_path, subject):
    from sae_lens import StandardSAE

    original = _save_sae(tmp_path / "sae")
    sae = load_dictionary(str(tmp_path / "sae"), subject)
    assert isinstance(sae, StandardSAE)
    assert site_of(sae) == "resid_pre.1"
    x = subject.activations("the cat", [site_of(sae)])[site_of(sae)]
    assert torch.allclose(sae(x), original(x))  # same weights: SAELens's forward still works


def test_transcoder_maps_both_sites(tmp_path, subject):
    from sae_lens.saes.transcoder import Transcoder

    _save_sae(tmp_path / "tc", hook_name="blocks.1.hook_mlp_in", transcoder=True)
    tc = load_dictionary(str(tmp_path / "tc"), subject)
    assert isinstance(tc, Transcoder)
    assert (site_of(tc), output_site_of(tc)) == ("resid_mid.1", "mlp_out.1")


def test_width_mismatch_and_missing_metadata_are_clear(tmp_path, subject):
    _save_sae(tmp_path / "wide", d_in=48)
    with pytest.raises(UsageError, match="d_in=48, but .* has d_model=32"):
        load_dictionary(str(tmp_path / "wide"), subject)
    _save_sae(tmp_path / "nohook", hook_name=None)
    with pytest.raises(UsageError, match="no cfg.metadata.hook_name"):
        load_dictionary(str(tmp_path / "nohook"), subject)
    with pytest.raises(UsageError, match="not a SAELens dictionary directory"):
        load_dictionary(str(tmp_path), subject)
    with pytest.raises(UsageError, match="should be saelens:RELEASE/SAE_ID"):
        load_dictionary("saelens:gpt2-small-res-jb")
