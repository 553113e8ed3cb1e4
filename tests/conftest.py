"""Shared test set-up: offline, headless, and a tiny idea plugin for host tests."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests never touch the user's harvest cache or ./runs.
os.environ["MI_IDEAS_CACHE"] = tempfile.mkdtemp(prefix="mi-ideas-test-cache-")
os.environ["MI_IDEAS_RUNS_DIR"] = tempfile.mkdtemp(prefix="mi-ideas-test-runs-")
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


@pytest.fixture(scope="module")
def local(ndif_model_dir):
    """The loopback server's tiny model, run locally through nnsight."""
    from mi_ideas import load_subject

    return load_subject(f"hf:{ndif_model_dir}")


@pytest.fixture
def remote(ndif_model_dir, ndif_server, ndif_config):
    """The same model as a remote subject on the loopback NDIF server."""
    from mi_ideas import load_subject

    ndif_config.APP.REMOTE_LOGGING = False
    return load_subject(f"hf:{ndif_model_dir}", remote=ndif_server.url)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): tiny models on a shared 2-core machine
    run many times faster (OpenMP threads contend with other processes). Restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def toy_host(register_plugin, mi_ideas_host):
    """The installed host plus the `toy` plugin (ideas `toy-dict`, `toy-echo`, `toy-fail`, `toy-probe`, `toy-steps`)."""
    register_plugin(toy_plugin, name="toy")
    return mi_ideas_host


@pytest.fixture(scope="session", autouse=True)
def _remove_test_dirs():
    """Delete the test cache and runs directories at the end of the session."""
    import shutil

    yield
    for var in ("MI_IDEAS_CACHE", "MI_IDEAS_RUNS_DIR"):
        shutil.rmtree(os.environ[var], ignore_errors=True)
