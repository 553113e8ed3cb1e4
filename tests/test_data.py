"""Datasets by spec: zoo corpus, templates, text files, HF datasets; all deterministic."""

from __future__ import annotations

import json

import pytest

from mi_ideas import load_dataset
from mi_ideas.errors import UsageError


def test_zoo_stories_are_deterministic_per_seed():
    a, b = load_dataset("zoo:stories:5", seed=1), load_dataset("zoo:stories:5", seed=1)
    c = load_dataset("zoo:stories:5", seed=2)
    assert a.texts == b.texts and a.texts != c.texts and len(a) == 5
    # labelled spans point at the words they label
    for text, spans in zip(a.texts, a.spans):
        assert spans and all(text[s.start:s.end] == s.text for s in spans)


def test_template_family_labels_every_slot():
    grid = load_dataset("template:furniture_grid")
    textures = {lab["texture"] for lab in grid.labels}
    colours = {lab["colour"] for lab in grid.labels}
    furniture = {lab["furniture"] for lab in grid.labels}
    assert len(grid) == len(textures) * len(colours) * len(furniture)  # the full factorial grid
    for text, lab in zip(grid.texts, grid.labels):
        assert f"{lab['texture']} {lab['colour']} {lab['furniture']}" in text
    ladder = load_dataset("template:intensity_ladder")
    assert {lab["level"] for lab in ladder.labels} == {1, 2, 3, 4}


def test_text_files_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "from json"}) + "\n")
    assert load_dataset(f"text:{tmp_path / 'a.txt'}").texts == ["first line", "second line"]
    assert load_dataset(f"text:{tmp_path}").texts == ["first line", "second line", "from json"]
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n")
    with pytest.raises(UsageError, match="bad.jsonl:1 is not a JSON object"):
        load_dataset(f"text:{tmp_path / 'bad.jsonl'}")


def test_hf_dataset_saved_to_disk_loads_offline(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"id": [1, 2], "text": ["one story", "another"]}).save_to_disk(
        str(tmp_path / "ds"))
    assert load_dataset(f"hf:{tmp_path / 'ds'}").texts == ["one story", "another"]


@pytest.mark.parametrize("spec,message", [
    ("stories", "has no known prefix"),
    ("zoo:poems", "the zoo has one corpus"),
    ("template:nothing", "no template family 'nothing'"),
    ("text:/does/not/exist", "does not exist"),
    ("hf:/does/not/exist-either", "could not load the Hugging Face dataset"),
])
def test_bad_specs_are_clear(spec, message):
    with pytest.raises(UsageError, match=message):
        load_dataset(spec)


# --------------------------------------------------------------------------- instruction lines


def _words(text):
    import re

    return [w.lower() for w in re.findall(r"[A-Za-z]+", text)]


def _mentions(text, word):
    # an independent check (not the generator's regex): the word or its plural as a word
    return any(w in (word, word + "s", word + "es") for w in _words(text))


@pytest.fixture(scope="module")
def corpus_3000():
    from mi_ideas.data import stories

    return stories.generate_stories(3000, seed=0)


def test_never_mention_word_occurs_only_in_its_instruction_line(corpus_3000):
    from mi_ideas.data import stories

    n_never = 0
    for st in corpus_3000:
        never = st.attrs["never"]
        if never is None:
            assert "Never mention" not in st.text
            continue
        n_never += 1
        w, kind = never["value"], never["kind"]
        line = stories.IGNORE_TEMPLATE.format(word=w)
        at = st.text.find(line)
        assert at >= 0, st.text
        before, after = st.text[:at], st.text[at + len(line):]
        # the line opens the story, after a topic line when there is one
        if st.attrs["topic"] is None:
            assert at == 0, st.text
        else:
            assert before.startswith(("A story about", "This is a story about")) and before.count(".") == 1
        assert not _mentions(after, w) and not _mentions(before, w), st.text
        # the word inside the line is labelled like any other occurrence, and is the only span of it
        spans = [sp for sp in st.spans if sp.value == w]
        assert [(sp.start, sp.category) for sp in spans] == [(at + len("Never mention "), kind)]
        # W is the kind of word the story would otherwise contain: its slot was re-drawn
        assert kind in ("food", "place", "animal")
        if kind == "food":
            assert st.attrs["food"] != w
        elif kind == "place":
            assert st.attrs["place"] != w
        else:
            assert st.attrs["animal"] is not None and st.attrs["animal"]["animal"] != w
    assert n_never > 200


def test_instruction_and_topic_line_rates(corpus_3000):
    # binomial counts over 3000 independent stories; bounds are about +-3.5 standard deviations
    never = [st for st in corpus_3000 if st.attrs["never"]]
    rest = [st for st in corpus_3000 if not st.attrs["never"]]
    assert 240 <= len(never) <= 360, len(never)  # 10%
    with_topic = sum(st.attrs["topic"] is not None for st in never)
    assert 0.35 <= with_topic / len(never) <= 0.65, with_topic  # about half
    topic_rest = sum(st.attrs["topic"] is not None for st in rest) / len(rest)
    assert 0.12 <= topic_rest <= 0.18, topic_rest  # the existing 15% topic lines
    kinds = {st.attrs["never"]["kind"] for st in never}
    assert kinds == {"food", "place", "animal"}
    # a topic line before an instruction is about a different word
    for st in never:
        if st.attrs["topic"]:
            assert st.attrs["topic"]["value"] != st.attrs["never"]["value"]


def test_spans_match_text_and_stories_are_deterministic_per_seed_and_index(corpus_3000):
    from mi_ideas.data import stories

    for st in corpus_3000:
        assert all(st.text[sp.start:sp.end] == sp.text for sp in st.spans)
    for i in (0, 17, 2999):
        assert stories.story(0, i).to_dict() == corpus_3000[i].to_dict()  # independent of the others
    assert stories.story(1, 17).text != corpus_3000[17].text


def test_ignore_prompts_and_neutral_prefixes():
    from mi_ideas.data import stories

    food = stories.ignore_prompts("food")
    assert [p.text for p in food] == [f"Never mention {w}." for w in stories.FOODS]
    for p in food:
        (sp,) = p.spans
        assert (p.text[sp.start:sp.end], sp.category) == (p.attrs["word"], "food")
    (dog,) = stories.ignore_prompts("dog")
    assert dog.text == "Never mention dog." and dog.spans[0].category == "animal"
    assert dog.attrs["concept"] == "animals"
    assert set(stories.IGNORE_CONCEPTS) <= set(stories.CONCEPTS)
    with pytest.raises(UsageError, match="neither a concept"):
        stories.ignore_prompts("spaceship")
    # neutral prefixes neither announce nor forbid a concept
    for p in stories.story_prefixes(200, seed=0):
        assert "Never mention" not in p.text and "story about" not in p.text
