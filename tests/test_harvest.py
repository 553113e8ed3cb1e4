"""Harvesting: one forward for many sites, streamed shards, row bookkeeping, caching."""

from __future__ import annotations

import pytest
import torch

from mi_ideas.cli import main
from mi_ideas.data import Dataset
from mi_ideas.harvest import harvest_to_cache, list_cache
from tests.tiny_models import build_tiny

TEXTS = ["the cat was red", "a dog ran to the big house", "one two", "the sun and the moon",
         "red blue green", "go come make take give"]


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from mi_ideas import load_subject

    return load_subject(f"hf:{build_tiny('gpt2', tmp_path_factory.mktemp('h') / 'gpt2-tiny')}")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MI_IDEAS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_rows_are_every_real_token_with_their_origin(subject):
    data = Dataset("t", TEXTS)
    acts = harvest_to_cache(subject, data, ["resid_pre.1", "mlp_out.0"], batch_size=4, budget_mb=0.001)
    assert len(acts.manifest["shards"]) > 1  # the tiny budget forced several shards
    lengths = [len(subject.tokenize(t).input_ids[0]) - 1 for t in TEXTS]  # minus BOS
    assert acts.n_rows == sum(lengths)
    doc, pos, tok = acts.load("doc"), acts.load("pos"), acts.load("token")
    # row i of text j is that text's token at position pos (after BOS)
    for j, text in enumerate(TEXTS):
        ids = subject.tokenize(text).input_ids[0]
        rows = doc == j
        assert torch.equal(pos[rows], torch.arange(1, len(ids)))
        assert torch.equal(tok[rows], ids[1:])
        direct = subject.activations(text, ["resid_pre.1"])["resid_pre.1"][0, 1:]
        assert torch.allclose(acts.load("resid_pre.1")[rows], direct, atol=1e-5)


def test_iter_batches_streams_every_row_in_order(subject):
    acts = harvest_to_cache(subject, Dataset("t", TEXTS), ["resid_post.1"], batch_size=2, budget_mb=0.001)
    whole = acts.load("resid_post.1")
    streamed = list(acts.iter_batches("resid_post.1", 5))
    assert all(len(b) == 5 for b in streamed[:-1])
    assert torch.equal(torch.cat(streamed), whole)


def test_last_position_harvest(subject):
    acts = harvest_to_cache(subject, Dataset("t", TEXTS), ["resid_post.0"], positions="last")
    assert acts.n_rows == len(TEXTS)
    direct = subject.activations(TEXTS, ["resid_post.0"], positions="last")["resid_post.0"]
    assert torch.allclose(acts.load("resid_post.0"), direct, atol=1e-5)


def test_second_harvest_reuses_the_cache(subject, monkeypatch, cache_dir, capsys):
    data = Dataset("t", TEXTS)
    first = harvest_to_cache(subject, data, ["resid_pre.1"])
    monkeypatch.setattr(type(subject), "forward", lambda *a, **k: pytest.fail("recomputed"))
    again = harvest_to_cache(subject, Dataset("same texts, other name", list(TEXTS)), ["resid_pre.1"])
    assert again.path == first.path
    assert [r["key"] for r in list_cache()] == [first.path.name]
    # another site set or another dataset is another entry
    monkeypatch.undo()
    monkeypatch.setenv("MI_IDEAS_CACHE", str(cache_dir))
    other = harvest_to_cache(subject, Dataset("t", TEXTS[:3]), ["resid_pre.1"])
    assert other.path != first.path
    assert main(["cache", "ls"]) == 0
    assert first.path.name in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert list_cache() == []


def test_an_interrupted_harvest_leaves_no_cache_entry(subject, monkeypatch, cache_dir):
    calls = {"n": 0}
    real = type(subject).forward

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(type(subject), "forward", flaky)
    with pytest.raises(KeyboardInterrupt):
        harvest_to_cache(subject, Dataset("t", TEXTS), ["resid_pre.1"], batch_size=2)
    assert list_cache() == []
    assert not any((cache_dir / "harvest").iterdir())


def test_a_mask_function_selects_rows_and_names_the_cache_entry(subject):
    from mi_ideas.errors import UsageError

    red = subject.tokenizer("red", add_special_tokens=False)["input_ids"][0]

    def red_tokens(batch):
        return batch.input_ids == red

    acts = harvest_to_cache(subject, Dataset("t", TEXTS), ["resid_pre.1"], positions=red_tokens,
                   positions_key="red")
    assert acts.n_rows == sum(t.split().count("red") for t in TEXTS) == 2
    assert (acts.load("token") == red).all()
    with pytest.raises(UsageError, match="needs positions_key"):
        harvest_to_cache(subject, Dataset("t", TEXTS), ["resid_pre.1"], positions=red_tokens)
