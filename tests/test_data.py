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
