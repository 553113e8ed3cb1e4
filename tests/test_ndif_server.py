"""The loopback NDIF server (``tests/ndif/server.py``) against nnsight 0.8.1's real client.

A remote trace on a meta model (no weights on the client, as with NDIF) must give what the
same trace gives locally; the server counts requests, sees the API key, cannot import the
project, and its failure modes each surface as the exception nnsight raises for them.
The ``die_*`` and shutdown tests end the server, so they come last (the fixture restarts it
as needed).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import mi_ideas.remote as remote

PROMPT = "the cat is red and the dog is big"
API_KEY = "test-key-123"


@pytest.fixture(scope="module")
def models(ndif_model_dir):
    """(reference, client): a dispatched local model and a weightless meta model.

    The meta model is built with an explicit tokenizer: with transformers 5.x, nnsight
    0.8.1's meta pipeline does not source the tokenizer itself ("Impossible to guess which
    tokenizer to use").
    """
    from nnsight import TransformersModel
    from transformers import AutoTokenizer

    reference = TransformersModel(str(ndif_model_dir), task="text-generation", dispatch=True)
    client = TransformersModel(str(ndif_model_dir), task="text-generation",
                               tokenizer=AutoTokenizer.from_pretrained(str(ndif_model_dir)))
    remote.prepare_model_key(client)
    return reference, client


@pytest.fixture
def url(ndif_server, ndif_config):
    ndif_config.APP.REMOTE_LOGGING = False
    return remote.configure(ndif_server.url, api_key=API_KEY)


def trace(model, **kwargs):
    with model.trace(PROMPT, **kwargs):
        hidden = model.transformer.h[0].output.save()
        logits = model.lm_head.output.save()
    return hidden, logits


@pytest.fixture(scope="module")
def expected(models):
    return trace(models[0])


def assert_same(got, want):
    for g, w in zip(got, want):
        assert isinstance(g, torch.Tensor) and g.shape == w.shape
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


# -- the happy paths --------------------------------------------------------------------------


def test_remote_trace_equals_local_and_is_counted(models, expected, ndif_server, url):
    assert_same(trace(models[1], remote=url), expected)

    stats = ndif_server.stats()
    assert (stats["requests"], stats["completed"], stats["errors"]) == (1, 1, 0)
    (request,) = stats["requests_log"]
    assert request["headers"]["ndif-api-key"] == API_KEY
    assert request["headers"]["nnsight-version"] == "0.8.1"
    assert stats["ws_headers"][0]["ndif-api-key"] == API_KEY
    assert request["session_id"] and request["compress"] is True
    assert request["model_key"] == remote.model_key(models[1])
    assert request["model_key"] in stats["models"]

    assert_same(trace(models[1], remote=url), expected)
    assert ndif_server.stats()["requests"] == 2


def test_url_result_transport_uncompressed(models, expected, ndif_server, url, ndif_config):
    ndif_server.set_result_transport("url")
    ndif_config.API.COMPRESS = False
    assert_same(trace(models[1], remote=url), expected)
    stats = ndif_server.stats()
    assert stats["requests"] == 1 and stats["requests_log"][0]["compress"] is False


def test_non_blocking_job_is_polled(models, expected, ndif_server, url):
    import time

    model = models[1]
    with model.trace(PROMPT, remote=url, blocking=False) as tracer:
        hidden = model.transformer.h[0].output.save()  # noqa: F841
        logits = model.lm_head.output.save()  # noqa: F841
    backend = tracer.backend
    assert backend.job_id
    deadline = time.monotonic() + 30
    while (result := backend()) is None:
        assert time.monotonic() < deadline, "the non-blocking job never completed"
        time.sleep(0.05)
    assert_same((result["hidden"], result["logits"]), expected)
    stats = ndif_server.stats()
    assert stats["requests"] == 1 and stats["requests_log"][0]["session_id"] == ""
    assert stats["poll_headers"][0]["ndif-api-key"] == API_KEY


def test_project_is_not_importable_on_the_server(models, ndif_server, url):
    for name in ("mi_ideas", "mi_ideas_plugins"):
        probe = ndif_server.can_import(name)
        assert probe["importable"] is False
        assert probe["error"] == f"ModuleNotFoundError: No module named '{name}'"
    assert ndif_server.can_import("nnsight")["importable"] is True

    # A trace that needs the project (pickled by reference: it is installed) fails remotely.
    from nnsight.intervention.backends.remote import RemoteError

    from mi_ideas.errors import UsageError

    model = models[1]
    with pytest.raises(RemoteError, match="No module named 'mi_ideas'"):
        with model.trace(PROMPT, remote=url):
            marker = UsageError  # noqa: F841
            model.lm_head.output.save()


# -- model keys and configuration (no server) ---------------------------------------------------


def test_model_key_of_a_local_directory_skips_the_hub(ndif_model_dir, models, monkeypatch):
    key = remote.model_key(models[1])
    cls, _, suffix = key.partition(":")
    assert cls == "nnsight.modeling.transformers.TransformersModel"
    assert json.loads(suffix) == {"repo_id": str(ndif_model_dir.resolve()), "revision": None,
                                  "task": "text-generation"}

    monkeypatch.chdir(ndif_model_dir.parent)
    relative = type("M", (), {"repo_id": ndif_model_dir.name})()
    assert remote.prepare_model_key(relative) is True
    from nnsight.modeling.huggingface import _ID_CACHE

    assert _ID_CACHE[ndif_model_dir.name] == str(ndif_model_dir.resolve())
    assert remote.prepare_model_key(type("M", (), {"repo_id": "org/not-a-dir"})()) is False


def test_configure(ndif_config, monkeypatch):
    from mi_ideas.errors import UsageError

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.delenv("NDIF_HOST", raising=False)
    monkeypatch.setenv("NNSIGHT_CONFIG", os.devnull + ".missing")  # ignore any user config
    assert remote.configure("http://127.0.0.1:1/", api_key="k") == "http://127.0.0.1:1"
    assert (ndif_config.API.HOST, ndif_config.API.APIKEY) == ("http://127.0.0.1:1", "k")
    monkeypatch.setenv("NDIF_API_KEY", "from-env")
    assert remote.configure("ndif") is True
    assert ndif_config.API.HOST == remote.default_host() == "https://api.ndif.us"
    assert ndif_config.API.APIKEY == "from-env"
    assert remote.configure("local") == "local" and remote.configure(None) is False
    with pytest.raises(UsageError, match="self-hosted NDIF server"):
        remote.configure("ftp://x")


# -- failure modes: what the client raises ------------------------------------------------------


def test_server_error_status_raises_remote_error(models, ndif_server, url):
    from nnsight.intervention.backends.remote import RemoteError

    ndif_server.set_mode("error", "CUDA out of memory (simulated)")
    with pytest.raises(RemoteError) as info:
        trace(models[1], remote=url)
    assert str(info.value) == "CUDA out of memory (simulated)"
    stats = ndif_server.stats()
    assert (stats["requests"], stats["errors"], stats["completed"]) == (1, 1, 0)


def test_unauthorized_raises_remote_error(models, ndif_server, url):
    from nnsight.intervention.backends.remote import RemoteError

    ndif_server.set_mode("401", "Invalid API key.")
    with pytest.raises(RemoteError) as info:
        trace(models[1], remote=url)
    assert str(info.value) == "Failed to send request: Invalid API key."
    stats = ndif_server.stats()
    assert (stats["requests"], stats["rejected"]) == (1, 1)
    assert stats["requests_log"][0]["headers"]["ndif-api-key"] == API_KEY


@pytest.mark.parametrize("code", [400, 404, 500, 503, 504])
def test_http_error_status_raises_remote_error_from_http_status_error(
        models, ndif_server, url, code):
    import httpx
    from nnsight.intervention.backends.remote import RemoteError

    ndif_server.set_mode("http", f"injected {code}", code=code)
    with pytest.raises(RemoteError) as info:
        trace(models[1], remote=url)
    assert str(info.value) == f"Failed to send request: injected {code}"
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)
    assert info.value.__cause__.response.status_code == code
    stats = ndif_server.stats()
    assert (stats["requests"], stats["rejected"], stats["accepted"]) == (1, 1, 0)


def test_stalled_request_raises_remote_error_from_read_timeout(
        models, ndif_server, url, monkeypatch):
    import time

    import httpx
    import nnsight.intervention.backends.remote as backend
    from nnsight.intervention.backends.remote import RemoteError

    monkeypatch.setattr(backend, "_READ_TIMEOUT", 0.5)  # nnsight's is 600 s
    ndif_server.set_mode("stall", stall=3)
    start = time.monotonic()
    with pytest.raises(RemoteError, match="^Failed to send request: timed out$") as info:
        trace(models[1], remote=url)
    assert time.monotonic() - start < 2.5
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_status_answer_can_be_an_http_error(ndif_server, url):
    import httpx

    ndif_server.set_status_answer(503, "down for maintenance")
    response = httpx.get(ndif_server.url + "/status", timeout=10)
    assert (response.status_code, response.json()) == (503, {"detail": "down for maintenance"})
    ndif_server.set_status_answer(None)
    assert httpx.get(ndif_server.url + "/status", timeout=10).status_code == 200
    # A URL with a path after the server's root (not an NDIF endpoint there).
    assert httpx.get(ndif_server.url + "/api/status", timeout=10).status_code == 404


def test_wrong_path_refuses_the_websocket(models, ndif_server, url):
    """Starlette refuses a websocket route that does not exist with 403, not 404."""
    from websocket import WebSocketBadStatusException

    with pytest.raises(WebSocketBadStatusException) as info:
        trace(models[1], remote=url + "/api")
    assert info.value.status_code == 403
    assert ndif_server.stats()["requests"] == 0


@pytest.mark.parametrize("mode", ["die_received", "die_running"])
def test_server_dying_mid_job(models, ndif_server, url, mode):
    from websocket import WebSocketConnectionClosedException

    pid = ndif_server.stats()["pid"]
    assert pid == ndif_server.proc.pid  # (the 2nd mode runs on a restarted process)
    ndif_server.set_mode(mode)
    lost = "Connection to remote host was lost"
    with pytest.raises(WebSocketConnectionClosedException, match=lost):
        trace(models[1], remote=url)
    assert ndif_server.wait_exit() == 75
    assert f"dying on purpose (mode {mode})" in ndif_server.log()

    # With the server gone, the next trace cannot even subscribe.
    with pytest.raises(ConnectionRefusedError):
        trace(models[1], remote=url)



def test_server_shutting_down_mid_job_sends_an_empty_frame(models, ndif_server, url):
    """A graceful shutdown (SIGTERM: a deploy, a restart) closes the websocket with a close
    frame; websocket-client's ``recv`` returns ``""`` for it, and nnsight's parse of that is
    a pydantic ``ValidationError`` (not a connection error)."""
    from pydantic import ValidationError

    ndif_server.set_mode("shutdown_running")
    with pytest.raises(ValidationError, match="Invalid JSON: EOF") as info:
        trace(models[1], remote=url)
    assert info.value.title == "ResponseModel" and info.value.errors()[0]["input"] == ""
    assert ndif_server.wait_exit() == -15
    assert "shutting down on purpose (mode shutdown_running)" in ndif_server.log()
