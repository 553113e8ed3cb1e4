"""pytest fixtures for the loopback NDIF server (``tests/ndif/server.py``).

To share them with every test module, add to ``tests/conftest.py``::

    from tests.ndif.fixtures import (  # noqa: F401
        ndif_config, ndif_model_dir, ndif_server, ndif_server_process)

Fixtures:

``ndif_server_process`` (session)
    One server process for the whole session (a module-level singleton, so importing these
    fixtures into several modules still starts one), stopped at the end.
``ndif_server`` (function)
    The same :class:`NDIFTestServer`, restarted if a previous test killed it, with its mode
    back to ``normal`` and its counters cleared. Use ``.url``, ``.stats()``,
    ``.set_mode(...)``, ``.set_status_answer(...)``, ``.set_result_transport(...)``,
    ``.can_import(name)``, ``.wait_exit()``, ``.log()``.
``ndif_model_dir`` (session)
    A tiny random GPT-2 directory (``tests/tiny_models.build_tiny("gpt2", ...)``).
``ndif_config`` (function)
    Snapshot nnsight's ``CONFIG.API`` / ``CONFIG.APP.REMOTE_LOGGING`` and restore them after
    the test, so a test may call ``mi_ideas.remote.configure(...)`` freely.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

SERVER_SCRIPT = Path(__file__).with_name("server.py")
START_TIMEOUT = 120.0


class NDIFTestServer:
    """A handle on one loopback NDIF server process (see ``tests/ndif/server.py``)."""

    def __init__(self, workdir: str | Path | None = None, allow: list[str | Path] = ()):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="ndif-test-server-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.allow = [str(a) for a in allow]
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.starts = 0

    # -- process ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the NDIF test server has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def start(self, timeout: float = START_TIMEOUT) -> NDIFTestServer:
        """Start the process (reusing the previous port when restarting) and wait until it
        answers ``/ping``."""
        if self.alive:
            return self
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        # -I: no script dir / PYTHONPATH / user site on sys.path (the server also blocks
        # mi_ideas and mi_ideas_plugins itself, since the editable install is in site-packages).
        cmd = [sys.executable, "-I", str(SERVER_SCRIPT), "--port", str(self.port or 0),
               "--port-file", str(port_file), "--log-level", "info", "--exit-with-parent"]
        for root in self.allow:
            cmd += ["--allow", root]
        with open(self.log_path, "a") as log:
            log.write(f"\n===== start #{self.starts + 1}: {' '.join(cmd)}\n")
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         cwd=str(self.workdir))
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                if self.port is not None:  # the old port was taken meanwhile: any port
                    self.port = None
                    return self.start(timeout)
                raise RuntimeError(f"NDIF test server exited ({self.proc.returncode}):\n"
                                   + self.log())
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("NDIF test server did not start in time:\n" + self.log())
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        while True:
            try:
                if self._get("/ping").status_code == 200:
                    return self
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("NDIF test server never answered /ping:\n" + self.log())
            time.sleep(0.05)

    def ensure_running(self) -> NDIFTestServer:
        return self if self.alive else self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def wait_exit(self, timeout: float = 10.0) -> int | None:
        """Wait for the process to end by itself (a ``die_*`` or ``shutdown_running`` mode);
        its exit code, or None."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self, tail: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    # -- test controls --------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        import httpx

        return httpx.get(self.url + path, timeout=10)

    def _post(self, path: str, payload: dict | None = None) -> Any:
        import httpx

        response = httpx.post(self.url + path, json=payload or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        """Counters (``requests``, ``accepted``, ``rejected``, ``completed``, ``errors``),
        ``requests_log`` (each POST's model key, session id, compress, env and headers),
        ``ws_headers``, ``poll_headers``, ``mode``, ``models``, ``blocked_imports``, ``pid``."""
        response = self._get("/_test/stats")
        response.raise_for_status()
        return response.json()

    def set_mode(self, mode: str, description: str | None = None, *, code: int | None = None,
                 stall: float | None = None) -> None:
        """``normal`` | ``error`` (ERROR status carrying ``description``) | ``401`` (POST
        /request refused, ``description`` as the detail) | ``http`` (POST /request answers
        HTTP ``code``, default 500, with ``description`` as the detail) | ``stall`` (POST
        /request answers only after ``stall`` seconds, default 30; the job is dropped) |
        ``die_received`` | ``die_running`` (the process exits, the TCP connection drops) |
        ``shutdown_running`` (RUNNING, then a graceful shutdown: a websocket close frame,
        exit status -15). Sticky until changed; the result transport and ``/status`` are kept."""
        payload: dict[str, Any] = {"mode": mode, "description": description}
        if code is not None:
            payload["code"] = code
        if stall is not None:
            payload["stall"] = stall
        self._post("/_test/config", payload)

    def set_status_answer(self, code: int | None, detail: str | None = None) -> None:
        """Make ``GET /status`` answer HTTP ``code`` with ``{"detail": detail}`` (``None``:
        answer normally again). Sticky until changed; the mode is kept."""
        self._post("/_test/config", {"status_code": code, "status_detail": detail})

    def set_result_transport(self, kind: str) -> None:
        """``inline`` (COMPLETED as a binary frame carrying the blob) or ``url`` (COMPLETED
        as JSON naming ``/result/{id}``, downloaded by the client)."""
        self._post("/_test/config", {"result": kind})

    def can_import(self, name: str) -> dict:
        """Try ``import name`` inside the server process: ``{"importable", "error"}``."""
        response = self._get(f"/_test/import/{name}")
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._post("/_test/reset")


_SERVER: NDIFTestServer | None = None


@pytest.fixture(scope="session")
def ndif_server_process(tmp_path_factory) -> NDIFTestServer:
    global _SERVER
    owner = _SERVER is None
    if owner:
        _SERVER = NDIFTestServer(tmp_path_factory.mktemp("ndif-server"))
    yield _SERVER.ensure_running()
    if owner:
        _SERVER.stop()
        _SERVER = None


@pytest.fixture
def ndif_server(ndif_server_process) -> NDIFTestServer:
    ndif_server_process.ensure_running()
    ndif_server_process.reset()
    return ndif_server_process


@pytest.fixture(scope="session")
def ndif_model_dir(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny

    return build_tiny("gpt2", tmp_path_factory.mktemp("ndif-model") / "gpt2-tiny")


@pytest.fixture
def ndif_config():
    from nnsight.schema.config import CONFIG

    api, logging = CONFIG.API.model_copy(), CONFIG.APP.REMOTE_LOGGING
    yield CONFIG
    for name in type(api).model_fields:
        setattr(CONFIG.API, name, getattr(api, name))
    CONFIG.APP.REMOTE_LOGGING = logging
