"""Shared test set-up: offline, headless, and a tiny idea plugin for host tests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from tests import toy_plugin  # noqa: E402
from tests.ndif.fixtures import (  # noqa: E402,F401 - the loopback NDIF server
    ndif_config,
    ndif_model_dir,
    ndif_server,
    ndif_server_process,
)


@pytest.fixture
def toy_host(register_plugin, mi_ideas_host):
    """The installed host plus the `toy` plugin (ideas `toy-echo`, `toy-fail`, `toy-probe`)."""
    register_plugin(toy_plugin, name="toy")
    return mi_ideas_host
