"""Tests for the embedded zoo (mi_ideas.zoo): shipped files, model, dictionaries, corpus, training script."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mi_ideas import zoo
from mi_ideas.data import stories as corpus

TEST_SEED = 12345  # not used to train anything (training uses seed 0, held-out metrics seed 1)


# --------------------------------------------------------------------------- shipped files


def test_shipped_files_match_manifest_sha256():
    man = zoo.manifest()
    assert man["files"], "manifest lists no files"
    assert zoo.verify() == []
    # every entry directory is non-empty and covered by the file list
    for name, e in man["entries"].items():
        listed = [f for f in man["files"] if f.startswith(e["path"] + "/")]
        assert listed, name
    assert man["total_bytes"] == sum(f["bytes"] for f in man["files"].values())
    assert man["total_bytes"] <= 20_000_000
    assert man["smoke"] is False


def test_verify_detects_a_changed_file(tmp_path):
    import shutil

    root = tmp_path / "zoo"
    root.mkdir()
    shutil.copy(zoo.MANIFEST_PATH, root / "manifest.json")
    man = zoo.manifest()
    for rel in man["files"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(zoo.ZOO_DIR / rel, root / rel)
    assert zoo.verify(root) == []
    victim = next(r for r in man["files"] if r.endswith("config.json"))
    text = (root / victim).read_text()
    (root / victim).write_text(text.replace("{", "{ ", 1))  # same content, one more byte
    (root / next(r for r in man["files"] if r.endswith("cfg.json"))).unlink()
    (root / man["entries"][zoo.DEFAULT_MODEL]["path"] / "stray.bin").write_bytes(b"x")
    problems = {(m.path.rsplit("/", 1)[-1], m.problem) for m in zoo.verify(root)}
    assert ("config.json", "size mismatch") in problems
    assert ("cfg.json", "missing") in problems
    assert ("stray.bin", "not in manifest") in problems


def test_api_paths_and_rows():
    assert zoo.model_dir("stories-gpt2") == zoo.ZOO_DIR / "models" / "stories-gpt2"
    assert zoo.model_dir("zoo:stories-gpt2") == zoo.model_dir()
    assert (zoo.model_dir() / "config.json").is_file()
    assert (zoo.sae_dir(zoo.DEFAULT_SAE) / "cfg.json").is_file()
    assert (zoo.sae_dir(zoo.DEFAULT_TRANSCODER) / "cfg.json").is_file()
    with pytest.raises(KeyError):
        zoo.sae_dir("stories-gpt2")  # a model, not a dictionary
    with pytest.raises(KeyError):
        zoo.model_dir("no-such-model")
    rows = {r.name: r for r in zoo.list_entries()}
    assert {r.kind for r in rows.values()} == {"model", "checkpoint", "sae", "transcoder"}
    assert rows["stories-gpt2"].key_numbers["heldout_loss"] < rows["stories-gpt2"].key_numbers["bigram_loss"]
    assert rows[zoo.DEFAULT_SAE].key_numbers["hook"] == "blocks.2.hook_resid_pre"
    assert rows[zoo.DEFAULT_TRANSCODER].key_numbers["hook_out"] == "blocks.1.hook_mlp_out"


def test_whole_zoo_directory_stays_under_20_mb():
    # everything under mi_ideas/zoo (weights, checkpoints, tokenizer, code), as `du` would count it
    total = sum(p.stat().st_size for p in zoo.ZOO_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 20_000_000, total


def test_checkpoints_api_and_manifest_entries():
    from safetensors import safe_open

    man = zoo.manifest()
    final = man["entries"]["stories-gpt2"]
    rows = zoo.checkpoints()
    assert [c.step for c in rows] == sorted({c.step for c in rows})  # sorted, no duplicates
    assert len(rows) == 6 and rows[-1].name == "stories-gpt2" and rows[-1].step == final["training"]["steps"]
    assert [c.name for c in rows[:-1]] == [f"stories-gpt2@step-{c.step:04d}" for c in rows[:-1]]
    assert zoo.checkpoints(include_final=False) == rows[:-1]
    tr = final["training"]
    for c in rows:
        assert c.tokens_seen == c.step * tr["batch_size"] * tr["n_ctx"]
        assert (c.path / "config.json").is_file() and (c.path / "model.safetensors").is_file()
    for c in rows[:-1]:
        e = zoo.entry(c.name)
        assert (e["kind"], e["of"], e["dtype"]) == ("checkpoint", "stories-gpt2", "float16")
        assert e["metrics"]["n_heldout_positions"] == final["metrics"]["n_heldout_positions"]
        assert sorted(p.name for p in c.path.iterdir()) == ["config.json", "model.safetensors"]  # no tokenizer copy
        with safe_open(str(c.path / "model.safetensors"), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
        assert zoo.model_dir(c.name) == c.path and zoo.tokenizer_dir(c.name) == zoo.model_dir()
    # an early checkpoint is still n-gram-like (worse than the final by a lot); the curve goes down
    losses = [c.heldout_loss for c in rows]
    assert losses[0] > final["metrics"]["bigram_kneser_ney_loss"] > losses[-1] + 0.5
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    with pytest.raises(KeyError):
        zoo.checkpoints(zoo.DEFAULT_SAE)


def test_import_is_cheap():
    code = ("import sys, mi_ideas.zoo, mi_ideas.data.stories; "
            "bad = [m for m in ('torch', 'transformers', 'sae_lens', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# --------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def model_and_tokenizer():
    import torch

    torch.set_num_threads(1)
    model, tok = zoo.load_model()
    return model, tok


def _rows(tok, n_stories, seed, n_ctx=128):
    from mi_ideas.zoo.build.lm import encode_texts, pack_rows

    texts = [s.text for s in corpus.generate_stories(n_stories, seed)]
    return pack_rows(encode_texts(tok, texts), n_ctx, tok.eos_token_id)


def test_model_loads_offline_and_beats_ngrams(model_and_tokenizer):
    from mi_ideas.zoo.build.lm import lm_loss
    from mi_ideas.zoo.build.ngram import ngram_losses

    model, tok = model_and_tokenizer
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert tok.bos_token == tok.eos_token == "<|endoftext|>"
    assert model.config.vocab_size == len(tok)
    m = zoo.entry("stories-gpt2")["metrics"]

    heldout = _rows(tok, 80, TEST_SEED)
    loss = lm_loss(model, heldout)
    # the recorded figure is reproduced on fresh held-out stories
    assert abs(loss - m["heldout_loss"]) < 0.1, (loss, m["heldout_loss"])
    # baselines refitted here on training-seed stories, scored on the same positions
    base = ngram_losses(_rows(tok, 3000, 0), heldout, len(tok))
    assert base["bigram_add_one"] < base["unigram_add_one"] - 1.0, base
    assert loss < base["bigram_kneser_ney"] - 0.5, (loss, base)
    assert loss < base["bigram_add_one"] - 0.5, (loss, base)
    assert m["heldout_loss"] < m["bigram_loss"] - 0.5 and m["bigram_loss"] < m["unigram_loss"] - 1.0


def _next_logprobs(model, tok, prompt):
    import torch

    ids = torch.tensor([[tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits[0, -1], -1)


def _tid(tok, word):
    ids = tok(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (word, ids)
    return ids[0]


def test_model_uses_long_range_structure(model_and_tokenizer):
    """Things no bigram model can do: pronoun gender from a name, a reaction that depends on
    an intensity adverb three tokens back.

    (The corpus-v1 zoo also copied an object's colour from 20 tokens back, 10 of 10 colours
    at "... sat on the soft"; the corpus-v2 retrain, same 550 steps, gets 1 of 10 and no
    longer has that ability: the zoo README says so. It is not asserted either way.)"""
    model, tok = model_and_tokenizer
    he, she = _tid(tok, " He"), _tid(tok, " She")
    for name, want, other in [("Lily", she, he), ("Tom", he, she), ("Grace", she, he), ("Oscar", he, she)]:
        lp = _next_logprobs(model, tok, f"Once upon a time, there was a kind farmer named {name}. "
                                        f"One sunny morning, {name} went to the park. "
                                        f"{name} lost a red ball. {name} felt very sad.")
        assert lp[want] > lp[other] + 1.0, name
    # the reaction depends on the intensity adverb three tokens back ("slightly sad. She" vs "extremely sad. She")
    ladder = {(p.attrs["concept"], p.attrs["level"]): p.text
              for p in corpus.intensity_ladder_prompts(names=["Mia"], intensities=["slightly", "extremely"])}
    differ = sum(int(_next_logprobs(model, tok, ladder[(e, 1)]).argmax())
                 != int(_next_logprobs(model, tok, ladder[(e, 4)]).argmax()) for e in corpus.EMOTIONS)
    assert differ >= 7, differ


# --------------------------------------------------------------------------- dictionaries


def test_sae_and_transcoder_load_and_reach_manifest_figures(model_and_tokenizer):
    from sae_lens import SAE, TopKSAE, Transcoder

    from mi_ideas.zoo.build.lm import dictionary_metrics, hf_activations

    model, tok = model_and_tokenizer
    sae = SAE.load_from_disk(str(zoo.sae_dir(zoo.DEFAULT_SAE)))
    tc = Transcoder.load_from_disk(str(zoo.sae_dir(zoo.DEFAULT_TRANSCODER)))
    assert isinstance(sae, TopKSAE) and isinstance(tc, Transcoder)
    assert sae.cfg.metadata.hook_name == "blocks.2.hook_resid_pre"
    assert tc.cfg.metadata.hook_name == "blocks.1.hook_mlp_in"
    assert tc.cfg.metadata.hook_name_out == "blocks.1.hook_mlp_out"
    assert sae.cfg.metadata.model_name == tc.cfg.metadata.model_name == "zoo:stories-gpt2"
    assert sae.cfg.d_in == tc.cfg.d_in == tc.cfg.d_out == model.config.n_embd

    rows = _rows(tok, 6, TEST_SEED)[:4]  # 4 rows x 127 positions = 508 tokens
    acts = hf_activations(model, rows, ["blocks.2.hook_resid_pre", "blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"])
    ms = dictionary_metrics(sae, acts["blocks.2.hook_resid_pre"])
    mt = dictionary_metrics(tc, acts["blocks.1.hook_mlp_in"], acts["blocks.1.hook_mlp_out"])
    es = zoo.entry(zoo.DEFAULT_SAE)["metrics"]
    et = zoo.entry(zoo.DEFAULT_TRANSCODER)["metrics"]
    assert abs(ms["explained_variance"] - es["explained_variance"]) < 0.05, (ms, es)
    assert abs(mt["explained_variance"] - et["explained_variance"]) < 0.07, (mt, et)
    assert abs(ms["l0"] - es["l0"]) <= max(1.0, 0.1 * es["l0"]), (ms, es)
    assert abs(mt["l0"] - et["l0"]) <= max(2.0, 0.25 * et["l0"]), (mt, et)
    assert es["explained_variance"] > 0.7 and et["explained_variance"] > 0.6
    # the transcoder really computes the MLP: fed the wrong layer's input it fails
    wrong = dictionary_metrics(tc, acts["blocks.2.hook_resid_pre"], acts["blocks.1.hook_mlp_out"])
    assert wrong["explained_variance"] < mt["explained_variance"] - 0.3


# --------------------------------------------------------------------------- corpus


def test_corpus_is_deterministic_and_seed_dependent():
    a = corpus.generate_stories(40, seed=7)
    b = corpus.generate_stories(40, seed=7)
    c = corpus.generate_stories(40, seed=8)
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert [s.text for s in a] != [s.text for s in c]
    assert corpus.generate_stories(10, seed=7)[5].text == a[5].text  # prefix-stable
    assert len({s.text for s in corpus.generate_stories(300, seed=7)}) == 300


def test_corpus_labels_line_up_with_text():
    stories = corpus.generate_stories(200, seed=TEST_SEED)
    seen = set()
    for st in stories:
        for sp in st.spans:
            assert st.text[sp.start:sp.end] == sp.text, sp
            assert sp.value.lower() == sp.text.lower(), sp
            assert sp.category in corpus.CATEGORIES, sp
            seen.add(sp.category)
            if sp.category == "intensity":
                assert sp.level == corpus.INTENSITY_LEVEL[sp.value]
        # labelled attributes agree with the spans
        hero = st.attrs["hero"]
        assert any(sp.category == "name" and sp.value == hero["name"] and sp.entity == 0 for sp in st.spans)
        emo = [sp for sp in st.spans if sp.category == "emotion" and sp.entity == 0]
        assert emo and all(sp.value == st.attrs["emotion"] for sp in emo)
        if st.attrs["furniture"]:
            f = st.attrs["furniture"]
            got = {(sp.category, sp.value) for sp in st.spans if sp.entity == 2}
            assert {("texture", f["texture"]), ("colour", f["colour"]), ("furniture", f["furniture"])} <= got
        pron = [sp.value for sp in st.spans if sp.category == "pronoun" and sp.entity == 0]
        allowed = {"she", "her"} if hero["gender"] == "f" else {"he", "him", "his"}
        assert set(pron) <= allowed
    assert seen == set(corpus.CATEGORIES)


def test_template_families():
    grid = corpus.furniture_grid()
    assert len(grid) == len(corpus.TEXTURES) * len(corpus.COLOURS) * len(corpus.FURNITURE)
    assert len({p.text for p in grid}) == len(grid)
    g = grid[0]
    assert [(s.category, s.text) for s in g.spans[-3:]] == [
        ("texture", g.attrs["texture"]), ("colour", g.attrs["colour"]), ("furniture", g.attrs["furniture"])]
    lad = corpus.intensity_ladder_prompts(concepts=["happy"], names=["Mia"])
    assert [p.attrs["level"] for p in lad] == [1, 2, 3, 4]
    assert lad[-1].text.endswith(". Mia felt extremely happy. She")
    assert lad[-1].text.startswith(corpus.PREAMBLE.format(person="girl", name="Mia"))
    people = corpus.person_adjective_prompts(n_names=2)
    assert len(people) == len(corpus.TRAITS) * 2 * 2
    assert all(p.text.endswith(p.attrs["name"]) for p in people)
    ev = corpus.emotion_event_prompts()
    assert {p.attrs["emotion"] for p in ev} == set(corpus.EMOTIONS)
    for fam in (grid, lad, people, ev, corpus.topic_prompts("animals"), corpus.story_prefixes(5, seed=3)):
        for p in fam:
            for sp in p.spans:
                assert p.text[sp.start:sp.end] == sp.text


def test_token_labels_map_each_concept_word_to_one_token(model_and_tokenizer):
    _, tok = model_and_tokenizer
    never = [st for st in corpus.generate_stories(200, seed=TEST_SEED) if st.attrs["never"]][:5]
    assert never
    for p in (corpus.furniture_grid()[::37] + corpus.intensity_ladder_prompts()[::9]
              + corpus.ignore_prompts("food")[::3] + corpus.ignore_prompts("places")[::4] + never):
        enc = tok(p.text, add_special_tokens=False, return_offsets_mapping=True)
        labels = corpus.token_labels(enc["offset_mapping"], p.spans)
        labelled = [(lab.category, tok.decode([i]).strip()) for i, lab in zip(enc["input_ids"], labels) if lab]
        assert labelled == [(s.category, s.text) for s in p.spans], (p.text, labelled)
    # every concept word of the corpus is a single token after a space
    for words in corpus.CONCEPTS.values():
        for w in words:
            _tid(tok, " " + w)


# --------------------------------------------------------------------------- training script


def test_train_smoke_end_to_end(tmp_path):
    import torch
    from sae_lens import SAE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mi_ideas.zoo.build import train

    threads = torch.get_num_threads()
    try:
        assert train.main(["--smoke", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["smoke"] is True
    assert zoo.verify(tmp_path) == []
    md = zoo.model_dir(root=tmp_path)
    model = AutoModelForCausalLM.from_pretrained(str(md), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(md), local_files_only=True)
    ids = torch.tensor([tok("Mia went to the park.")["input_ids"]])
    assert model(ids).logits.shape[-1] == len(tok)
    sae = SAE.load_from_disk(str(zoo.sae_dir(zoo.DEFAULT_SAE, root=tmp_path)))
    tc = SAE.load_from_disk(str(zoo.sae_dir(zoo.DEFAULT_TRANSCODER, root=tmp_path)))
    assert type(tc).__name__ == "Transcoder"
    assert sae.cfg.metadata.hook_name == man["entries"][zoo.DEFAULT_SAE]["hook_name"]
    x = torch.randn(3, model.config.n_embd)
    assert sae(x).shape == x.shape and tc(x).shape == x.shape
    m = man["entries"]["stories-gpt2"]["metrics"]
    assert {"heldout_loss", "unigram_loss", "bigram_loss"} <= set(m)
    # checkpoints: float16 on disk, float32 and the final model's tokenizer when loaded
    ck = zoo.checkpoints(root=tmp_path)
    steps = list(train.smoke_config().lm.checkpoint_steps)
    assert [c.step for c in ck] == steps + [man["entries"]["stories-gpt2"]["training"]["steps"]]
    early, tok2 = zoo.load_model(ck[0].name, root=tmp_path)
    assert next(early.parameters()).dtype == torch.float32 and len(tok2) == len(tok)
    assert not torch.allclose(early(ids).logits, model(ids).logits)
