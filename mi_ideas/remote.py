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


@contextlib.contextmanager
def remote_errors(remote: Any, model: str) -> Iterator[None]:
    """Turn what nnsight raises for a failed remote request into one-paragraph errors.

    Each message names the cause and what to do: a server-side error (with the server's
    description), a rejected API key (401), an unreachable host, and a connection lost
    mid-job. The error is a :class:`mi_ideas.errors.RemoteRunError`; a run that hits it is
    marked failed with nothing half-written.
    """
    from mi_ideas.errors import RemoteRunError

    try:
        yield
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised otherwise
        host = _host_of(remote)
        name = type(exc).__name__
        text = str(exc).strip()
        cause = exc.__cause__
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if name == "RemoteError" and status in (401, 403):
            raise RemoteRunError(
                f"the NDIF server at {host} rejected the API key (HTTP {status}) for {model}. "
                f"Set a valid key in NDIF_API_KEY (or with nnsight's CONFIG.set_default_api_key) "
                f"and run again; keys are issued at login.ndif.us."
            ) from None
        if name == "RemoteError" and text.startswith("Failed to send request"):
            raise RemoteRunError(
                f"the NDIF server at {host} refused the request for {model}: {text}. Check "
                f"that the model is served there (`mi-ideas remote status {model}`)."
            ) from None
        if name == "RemoteError":
            first = text.splitlines()[0] if text else "no description"
            raise RemoteRunError(
                f"the NDIF server at {host} failed while running the request for {model}: "
                f"{first}. This is an error on the server's side of the trace (if it names a "
                f"module, the trace used code the server does not have); run the same idea "
                f"with --remote local to rehearse it without the server."
            ) from None
        if isinstance(exc, ConnectionRefusedError) or name in ("ConnectError", "ConnectTimeout"):
            raise RemoteRunError(
                f"cannot reach the NDIF server at {host} ({name}: {text}). Check the URL and "
                f"your network, or run locally without --remote; `mi-ideas remote status` "
                f"tells whether the server answers."
            ) from None
        if "WebSocket" in name or "Connection to remote host was lost" in text:
            raise RemoteRunError(
                f"the connection to the NDIF server at {host} was lost while it ran the "
                f"request for {model} ({name}: {text}); the server may have restarted or "
                f"dropped the job. Run again; if it keeps happening, check "
                f"`mi-ideas remote status`."
            ) from None
        raise


def status(remote: Any = "ndif", model: str | None = None) -> dict:
    """Whether the NDIF server answers and, given a model, whether it serves it.

    Uses nnsight's own ``/status`` query against the host ``remote`` names. Returns
    ``{"host", "reachable", "deployments", "model", "served"}``; an unreachable host is
    ``reachable=False`` rather than an exception.
    """
    configure("ndif" if remote in (None, True) else remote)
    from nnsight import ndif
    from nnsight.schema.config import CONFIG

    out: dict[str, Any] = {"host": CONFIG.API.HOST, "reachable": False, "deployments": [],
                           "model": model, "served": None}
    try:
        raw = ndif._get("/status", timeout=(5.0, 10.0))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        out["error"] = f"{type(exc).__name__}: {exc}"
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
