"""Client-side helpers for running nnsight traces on an NDIF server (the public one or a
self-hosted / loopback one).

nnsight 0.8.1 picks the server in two places: ``CONFIG.API.HOST`` (from its shipped
``config.yaml``, the user's ``~/.config/nnsight/config.yaml`` or ``$NDIF_HOST``), and a
per-call override, ``model.trace(..., remote="http://host:port")``. The websocket scheme is
derived from the URL (``http`` -> ``ws``, ``https`` -> ``wss``), so a plain-``http`` URL *is*
the "SSL off" setting; nnsight 0.8.1 has no separate SSL flag. The API key travels as the
``ndif-api-key`` header and comes from ``CONFIG.API.APIKEY`` (``$NDIF_API_KEY`` is read once,
when nnsight is imported).

Everything nnsight (and so torch) is imported inside the functions: importing this module
is cheap.

Model keys for local directories
--------------------------------
A remote request names its model by ``model.to_model_key()``:
``"nnsight.modeling.transformers.TransformersModel:{"repo_id": ..., "revision": ..., "task":
...}"``. To canonicalize the repo id, nnsight asks the Hub (``HfApi().model_info(repo_id).id``)
and caches the answer in ``nnsight.modeling.huggingface._ID_CACHE`` (user-spelled id ->
canonical id). For a local model directory that lookup is wrong in every case: offline it
raises (``HFValidationError`` for an absolute path, ``OfflineModeIsEnabled`` otherwise),
online a relative path like ``models/gpt2`` would be resolved against an unrelated Hub repo.

:func:`model_key` handles that by answering the lookup *before* nnsight asks: when the
model's ``repo_id`` is an existing directory it seeds that cache with the directory's
absolute path -- a local directory is its own canonical id. Everything else about the key
(class import path, revision, task, ``trust_remote_code``) stays nnsight's own code, so the
key is exactly what nnsight would have sent, and ``model.trace(..., remote=...)`` on an
unmodified ``TransformersModel`` works afterwards. The alternatives were worse: a subclass
overriding ``_remoteable_model_key`` does nothing for the plain ``TransformersModel`` objects
users hand us, a per-instance method patch fights ``Envoy.__setattr__``, and rebuilding the
key by hand would duplicate nnsight's key format. The cost is one private name; if a future
nnsight drops it, :func:`model_key` raises a clear error instead of silently asking the Hub.

Such a key only means something to a server that sees the same filesystem (a self-hosted
or loopback server); the public NDIF serves Hub models and would reject it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

#: nnsight's ``remote=`` value for the public NDIF (``CONFIG.API.HOST``).
NDIF = True


def nnsight_remote_arg(remote: Any) -> Any:
    """Map an mi-ideas ``remote`` setting to nnsight's ``remote=`` argument.

    ``None`` / ``False`` / ``""`` / ``"off"`` -> ``False`` (run locally); ``"local"`` ->
    ``"local"`` (nnsight's serverless rehearsal); ``True`` / ``"ndif"`` -> ``True`` (the
    configured NDIF host); an ``http(s)://`` URL -> the URL (that server, for this call).
    """
    if remote in (None, False, "", "off"):
        return False
    if remote == "local":
        return "local"
    if remote is True or remote == "ndif":
        return NDIF
    if isinstance(remote, str) and remote.startswith(("http://", "https://")):
        return remote.rstrip("/")
    from mi_ideas.errors import UsageError

    raise UsageError(
        f"remote must be 'local' (nnsight's serverless rehearsal), 'ndif', or the URL of a "
        f"self-hosted NDIF server (http://host:port), not {remote!r}."
    )


def default_host() -> str:
    """The NDIF host nnsight uses when nothing overrides it (shipped config < user file <
    ``$NDIF_HOST``), re-read rather than taken from the live ``CONFIG``, which
    :func:`configure` may have changed."""
    from nnsight.schema.config import Config

    return Config.load().API.HOST


def resolve_api_key(explicit: str | None = None) -> str | None:
    """The API key a request would carry: ``explicit``, else ``$NDIF_API_KEY`` (read now,
    not at nnsight import), else nnsight's configured ``CONFIG.API.APIKEY``."""
    if explicit:
        return explicit
    env = os.environ.get("NDIF_API_KEY")
    if env:
        return env
    from nnsight.schema.config import CONFIG

    return CONFIG.API.APIKEY or None


def configure(remote: Any, *, api_key: str | None = None) -> Any:
    """Point nnsight at the server ``remote`` names and return the ``remote=`` argument to
    pass to ``model.trace`` / ``model.session``.

    For ``"ndif"`` / ``True`` the host is reset to :func:`default_host`; for a URL it becomes
    ``CONFIG.API.HOST`` (so ``nnsight.ndif`` helpers talk to the same server). The API key
    (see :func:`resolve_api_key`) is written to ``CONFIG.API.APIKEY`` when one is found. ``"local"``
    and "off" values change nothing. This mutates nnsight's process-wide ``CONFIG``.
    """
    arg = nnsight_remote_arg(remote)
    if arg is False or arg == "local":
        return arg
    from nnsight.schema.config import CONFIG

    CONFIG.API.HOST = default_host() if arg is NDIF else arg
    key = resolve_api_key(api_key)
    if key:
        CONFIG.API.APIKEY = key
    return arg


def is_local_model_dir(repo_id: Any) -> bool:
    """Whether ``repo_id`` names an existing local directory (not a Hub repo id)."""
    return isinstance(repo_id, (str, os.PathLike)) and os.path.isdir(repo_id)


def prepare_model_key(model: Any) -> bool:
    """Make ``model.to_model_key()`` work offline for a model loaded from a local directory.

    Seeds nnsight's repo-id cache (see the module docstring) with the directory's absolute
    path. Returns whether the model was a local directory (a Hub id is left to nnsight).
    Idempotent.
    """
    repo_id = getattr(model, "repo_id", None)
    if not is_local_model_dir(repo_id):
        return False
    from nnsight.modeling import huggingface

    cache = getattr(huggingface, "_ID_CACHE", None)
    if not isinstance(cache, dict):  # pragma: no cover - guards a future nnsight
        raise RuntimeError(
            "nnsight.modeling.huggingface._ID_CACHE is gone (nnsight changed how it "
            "canonicalizes repo ids); mi_ideas.remote.prepare_model_key needs updating "
            "before a local model directory can be used remotely."
        )
    cache[repo_id] = os.path.abspath(os.fspath(repo_id))
    return True


def model_key(model: Any) -> str:
    """``model.to_model_key()``, without asking the Hub when the model is a local
    directory (its absolute path is then the key's ``repo_id``)."""
    prepare_model_key(model)
    return model.to_model_key()


def _host_of(remote: Any) -> str:
    if isinstance(remote, str) and remote.startswith(("http://", "https://")):
        return remote
    from nnsight.schema.config import CONFIG

    return str(CONFIG.API.HOST)


#: HTTP statuses that mean "timed out" (a gateway or the server gave up waiting).
_TIMEOUT_STATUSES = (408, 504)


def _http_detail(response: Any) -> str:
    """The server's explanation in an HTTP error response, as one short line: FastAPI's
    ``{"detail": ...}`` (a string, or a 422's list of ``{"msg": ...}``), else the body's
    first line; ``""`` for an HTML page, an empty body or a bare reason phrase."""
    if response is None:
        return ""
    detail: Any
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - not JSON: the text, unless it is a page
        detail = getattr(response, "text", "") or ""
        if detail.lstrip().startswith("<"):
            detail = ""
    else:
        detail = body.get("detail", "") if isinstance(body, dict) else body
        if isinstance(detail, list):
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d)
                               for d in detail)
        elif not isinstance(detail, str):
            detail = ""
    lines = [line.strip() for line in str(detail).strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    if line.lower() == str(getattr(response, "reason_phrase", "")).lower():
        return ""
    return line if len(line) <= 200 else line[:197] + "..."


def _http_message(host: str, model: str, code: int, detail: str, where: str) -> str:
    """The message for an HTTP error status ``code`` the server gave to ``where``
    (``POST /request`` or the ``/subscribe`` websocket handshake)."""
    said = f"HTTP {code}: {detail}" if detail else f"HTTP {code}"
    if code == 401 or (code == 403 and where == "POST /request"):
        return (
            f"the NDIF server at {host} rejected the API key (HTTP {code}) for {model}. "
            f"Set a valid key in NDIF_API_KEY (or with nnsight's CONFIG.set_default_api_key) "
            f"and run again; keys are issued at login.ndif.us."
        )
    if code == 403:  # a websocket route that does not exist is refused with 403 as well
        return (
            f"the NDIF server at {host} refused the websocket subscription for {model} "
            f"({where} answered {said}): either the API key was rejected or there is no "
            f"NDIF server at this URL (a wrong path is refused with 403 too). Check "
            f"NDIF_API_KEY, and that the URL is the server's root (http://host:port); "
            f"`mi-ideas remote status --url URL` tells whether an NDIF server answers there."
        )
    if code == 404:
        return (
            f"the server at {host} answered HTTP 404 to {where} for {model}: there is no "
            f"NDIF server at this URL, or the path is wrong. Give the server's root URL "
            f"(http://host:port, no path after it); `mi-ideas remote status --url URL` "
            f"tells whether an NDIF server answers there."
        )
    if code in (400, 422):
        return (
            f"the NDIF server at {host} rejected the request for {model} as invalid "
            f"({said}). The server read the request and refused its content: fix what its "
            f"detail names -- it may be an nnsight or Python version the server does not "
            f"accept (`nnsight.compare()` lists how this environment differs from the "
            f"server's) -- and run again."
        )
    if code in _TIMEOUT_STATUSES:
        return (
            f"the request for {model} to the NDIF server at {host} timed out ({said}): the "
            f"server, or a gateway in front of it, gave up waiting -- it is overloaded, or "
            f"the job is too big for its time limit. Try again later or with smaller "
            f"batches; `mi-ideas remote status` tells whether the server answers."
        )
    if code >= 500:
        return (
            f"the NDIF server at {host} failed to take the request for {model} ({said}): "
            f"a fault on the server's side (an internal error, overload or maintenance), not "
            f"in the trace or the API key. Try again later; if it persists, tell the "
            f"server's operators (`mi-ideas remote status` tells whether it answers)."
        )
    return (
        f"the NDIF server at {host} refused the request for {model} ({said}). Check "
        f"that the model is served there (`mi-ideas remote status {model}`)."
    )


def _unreachable(host: str, exc: BaseException) -> str:
    return (
        f"cannot reach the NDIF server at {host} ({type(exc).__name__}: {str(exc).strip()}). "
        f"Check the URL and your network, or run locally without --remote; "
        f"`mi-ideas remote status` tells whether the server answers."
    )


def _lost(host: str, model: str, exc: BaseException) -> str:
    return (
        f"the connection to the NDIF server at {host} was lost while it ran the request "
        f"for {model} ({type(exc).__name__}: {str(exc).strip()}); the server may have "
        f"restarted or dropped the job. Run again; if it keeps happening, check "
        f"`mi-ideas remote status`."
    )


def _read_timeout() -> Any:
    from nnsight.intervention.backends import remote as backend

    return getattr(backend, "_READ_TIMEOUT", None)


def _is_unreachable(exc: BaseException) -> bool:
    import errno

    name = type(exc).__name__
    if name in ("ConnectError", "ConnectTimeout", "WebSocketAddressException", "gaierror"):
        return True
    return isinstance(exc, OSError) and exc.errno in (
        errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT)


def remote_failure_message(exc: BaseException, remote: Any, model: str) -> str | None:
    """The one-paragraph message for what nnsight raised when a remote request to the
    server ``remote`` names failed, or ``None`` when ``exc`` is not a remote failure.

    What nnsight 0.8.1 raises, by fault:

    - ``RemoteError(description)``: the job's ERROR status (the trace failed server-side);
    - ``RemoteError("Failed to send request: ...")`` from ``httpx.HTTPStatusError``: POST
      /request answered an HTTP error (401/403 key, 400/422 invalid, 404 wrong path,
      408/504 timed out, 5xx server fault), or from another ``httpx`` error: the POST
      timed out (``ReadTimeout``), could not connect, or lost its connection;
    - ``pydantic.ValidationError`` for ``ResponseModel``: a websocket frame (or the POST's
      answer) that is not a status message -- empty when the server closed the websocket
      with a close frame, as a server shutting down mid-job does;
    - ``websocket`` exceptions: ``WebSocketBadStatusException`` (the /subscribe handshake
      was refused), ``WebSocketConnectionClosedException`` (connection dropped);
    - ``ConnectionRefusedError`` and friends: nothing listens at the host.
    """
    host = _host_of(remote)
    name = type(exc).__name__
    text = str(exc).strip()
    cause = exc.__cause__
    if name == "RemoteError":
        response = getattr(cause, "response", None)
        code = getattr(response, "status_code", None)
        if type(cause).__name__ == "HTTPStatusError" and isinstance(code, int):
            return _http_message(host, model, code, _http_detail(response), "POST /request")
        if cause is not None and _is_unreachable(cause):
            return _unreachable(host, cause)
        if cause is not None and type(cause).__name__ in ("ReadTimeout", "WriteTimeout",
                                                            "PoolTimeout", "TimeoutException"):
            limit = _read_timeout()
            within = f" within nnsight's {limit:g} s read timeout" if isinstance(
                limit, (int, float)) else ""
            return (
                f"the NDIF server at {host} did not answer the request for {model}{within} "
                f"(POST /request timed out): it is overloaded or stuck, or the request is "
                f"very large. Try again later or with smaller batches; `mi-ideas remote "
                f"status` tells whether the server answers."
            )
        if cause is not None and type(cause).__name__ in ("RemoteProtocolError", "ReadError",
                                                            "WriteError", "NetworkError"):
            return _lost(host, model, cause)
        if text.startswith("Failed to send request"):
            return (
                f"the NDIF server at {host} refused the request for {model}: {text}. Check "
                f"that the model is served there (`mi-ideas remote status {model}`)."
            )
        first = text.splitlines()[0] if text else "no description"
        return (
            f"the NDIF server at {host} failed while running the request for {model}: "
            f"{first}. This is an error on the server's side of the trace (if it names a "
            f"module, the trace used code the server does not have); run the same idea "
            f"with --remote local to rehearse it without the server."
        )
    if name == "ValidationError" and getattr(exc, "title", None) == "ResponseModel":
        try:
            received = exc.errors()[0].get("input")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            received = None
        if received in ("", b""):
            return (
                f"the NDIF server at {host} closed the connection while it ran the request "
                f"for {model}, before sending a result: it shut down or restarted mid-job, "
                f"or dropped the job. Run again; if it keeps happening, check `mi-ideas "
                f"remote status` and the server's logs."
            )
        return (
            f"the server at {host} answered the request for {model} with something that is "
            f"not an NDIF status message: there may be no NDIF server at this URL (or the "
            f"path is wrong), or it speaks another nnsight version (`nnsight.compare()` "
            f"lists the differences). Check the URL with `mi-ideas remote status --url URL`."
        )
    if name == "WebSocketBadStatusException":
        code = getattr(exc, "status_code", None)
        if isinstance(code, int):
            return _http_message(host, model, code, "", "the /subscribe websocket")
    if name == "WebSocketTimeoutException":
        return (
            f"the NDIF server at {host} sent nothing on the websocket for the request for "
            f"{model} within the websocket timeout ({name}: {text}): it is overloaded or "
            f"stuck. Try again later, or raise the timeout (websocket.setdefaulttimeout); "
            f"`mi-ideas remote status` tells whether the server answers."
        )
    if _is_unreachable(exc):
        return _unreachable(host, exc)
    if ("WebSocket" in name or "Connection to remote host was lost" in text
            or isinstance(exc, (ConnectionResetError, BrokenPipeError))):
        return _lost(host, model, exc)
    return None


@contextlib.contextmanager
def remote_errors(remote: Any, model: str) -> Iterator[None]:
    """Turn what nnsight raises for a failed remote request into one-paragraph errors.

    Each message names the server's URL, the cause and what to try (see
    :func:`remote_failure_message`): a server-side error (with the server's description), a
    rejected API key (401/403), an invalid request (400), a wrong URL path (404), a
    timeout (the POST's read timeout, or 408/504), a server fault (5xx), an unreachable
    host, a server that closed the connection mid-job, and a connection lost mid-job. The
    error is a :class:`mi_ideas.errors.RemoteRunError` (raised ``from None``: no chained
    traceback); a run that hits it is marked failed.
    """
    from mi_ideas.errors import RemoteRunError

    try:
        yield
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised otherwise
        message = remote_failure_message(exc, remote, model)
        if message is None:
            raise
        raise RemoteRunError(message) from None


def status(remote: Any = "ndif", model: str | None = None) -> dict:
    """Whether the NDIF server answers and, given a model, whether it serves it.

    Uses nnsight's own ``/status`` query against the host ``remote`` names. Returns
    ``{"host", "reachable", "deployments", "model", "served"}``; an unreachable host is
    ``reachable=False`` rather than an exception (with ``"error"``). A host that answers,
    but not with an NDIF status (an HTTP error, a timeout, no JSON), is ``reachable=True``
    with ``"problem"``: a clause saying what it answered and what that means
    (``"/status answered 404: not an NDIF server at this URL, or the wrong path"``), plus
    ``"http_status"`` when there was one, and ``"error"``.
    """
    configure("ndif" if remote in (None, True) else remote)
    from nnsight import ndif
    from nnsight.schema.config import CONFIG

    out: dict[str, Any] = {"host": CONFIG.API.HOST, "reachable": False, "deployments": [],
                           "model": model, "served": None}
    read_timeout = 10.0
    try:
        raw = ndif._get("/status", timeout=(5.0, read_timeout))
    except Exception as exc:  # noqa: BLE001 - sorted below; anything else: not reachable
        out["error"] = f"{type(exc).__name__}: {exc}"
        name = type(exc).__name__
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
        if name == "HTTPStatusError" and isinstance(code, int):
            detail = _http_detail(response)
            said = f"/status answered {code}" + (f" ({detail})" if detail else "")
            out.update(reachable=True, http_status=code)
            if code == 404:
                out["problem"] = (f"/status answered 404: not an NDIF server at this URL, or "
                                  f"the wrong path (give the server's root, http://host:port)")
            elif code >= 500:
                out["problem"] = (f"{said}: the server has an internal error, is "
                                  f"overloaded or is down for maintenance; remote runs fail "
                                  f"until it recovers, so try again later")
            else:
                out["problem"] = (f"{said}: an NDIF server answers /status with its "
                                  f"deployments; check the URL (the server's root, "
                                  f"http://host:port)")
        elif name in ("ReadTimeout", "WriteTimeout", "PoolTimeout"):
            out.update(reachable=True, problem=(
                f"did not answer /status within {read_timeout:g} s: it is overloaded or "
                f"stuck; try again later"))
        elif isinstance(exc, ValueError):  # 200, but not JSON (json.JSONDecodeError)
            out.update(reachable=True, problem=(
                "/status did not answer JSON: not an NDIF server at this URL, or the wrong "
                "path (give the server's root, http://host:port)"))
        return out
    out["reachable"] = True
    deployments = raw.get("deployments", {}) if isinstance(raw, dict) else {}
    out["deployments"] = sorted({str(v.get("repo_id")) for v in deployments.values()})
    if model is not None:
        wanted = os.path.abspath(model) if is_local_model_dir(model) else model
        out["served"] = any(
            v.get("repo_id") in (model, wanted) and v.get("application_state") == "RUNNING"
            for v in deployments.values()
        )
    return out
