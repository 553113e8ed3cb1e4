"""Test set-up of the example plugin: offline, and a private harvest cache and runs folder."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

_VARS = ("MI_IDEAS_CACHE", "MI_IDEAS_RUNS_DIR")


@pytest.fixture(scope="session", autouse=True)
def _private_cache_and_runs(tmp_path_factory):
    """Harvests and runs of these tests never touch the user's ~/.cache/mi-ideas or ./runs."""
    saved = {k: os.environ.get(k) for k in _VARS}
    os.environ["MI_IDEAS_CACHE"] = str(tmp_path_factory.mktemp("mi-ideas-cache"))
    os.environ["MI_IDEAS_RUNS_DIR"] = str(tmp_path_factory.mktemp("mi-ideas-runs"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
