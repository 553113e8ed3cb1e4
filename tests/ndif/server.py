"""A loopback NDIF server for tests: speaks the protocol nnsight 0.8.1's ``RemoteBackend`` uses.

Run it as its own process, isolated from the project (what the fixture in
``tests/ndif/fixtures.py`` does)::

    python -I tests/ndif/server.py --port 0 --port-file /tmp/port [--allow DIR ...]

``-I`` keeps the script's directory, ``$PYTHONPATH`` and the user site off ``sys.path``; the
import blocker below (installed before anything else is imported) makes ``import mi_ideas``
and ``import mi_ideas_plugins`` raise ``ModuleNotFoundError`` even though the editable install
is in site-packages -- as on a real NDIF server, which has nnsight, torch and transformers
but not this project. (``python -m tests.ndif.server`` from the repository root also works,
but ``tests/__init__.py`` imports mi_ideas first; the blocker then evicts it again.)

The protocol, as implemented (the client side is ``nnsight/intervention/backends/remote.py``):

``GET /subscribe`` (websocket)
    Accepts, sends ``{"session_id": "<hex>"}`` as the first text frame, then pushes every
    status of the jobs POSTed with that session id: a ``ResponseModel`` as JSON text
    (RUNNING, ERROR with ``description``), and COMPLETED as a *binary* frame,
    ``ResponseModel.pickle()`` (torch.save) whose ``data`` is the result blob -- or, when
    the result transport is ``"url"``, as JSON whose ``data`` is ``<base>/result/<id>``.
``POST /request`` (multipart)
    ``data`` = ``RequestModel.metadata()`` (JSON: ``model_key``, ``session_id``, ``compress``,
    ``env``), ``blob`` = ``RequestModel.serialize(...)`` (zstd when ``compress``). Answers
    ``ResponseModel(status=RECEIVED)`` as JSON; the job id is ``response.id``. In mode
    ``"401"`` it answers HTTP 401 ``{"detail": ...}`` instead.
``GET /response/{id}``
    The job's latest status as ``ResponseModel`` JSON (404 before the first one), for
    non-blocking jobs (``blocking=False``: no websocket, empty session id). COMPLETED
    carries ``data = "<base>/result/<id>"``: JSON cannot carry the bytes.
``GET /result/{id}``
    The result blob: ``torch.save({name: value})`` of the saved values, zstd-compressed
    when the request was.
``GET /ping``, ``GET /env``
    ``"pong"``; the server's Python and packages (for ``nnsight.compare()``), minus the
    blocked project packages.

Execution follows nnsight's own ``remote="local"`` rehearsal (``LocalSimulationBackend``):
the model is rebuilt from the request's key with ``Remotable.from_model_key(key,
dispatch=True)`` (cached per key, loaded on first use), ``_remoteable_set_env(env)`` is
applied, the payload is rebuilt with ``RequestModel.deserialize(blob,
model._remoteable_persistent_objects(), compress)`` and run with ``tracer.execute(code)``
inside one trace scope; the values the block saved are what ``push_result`` would hand
back to the caller's frame. Jobs run one at a time on one worker thread.

Test controls (not part of NDIF):

``GET /_test/stats``
    Counters (``requests`` = POSTs to /request, also ``accepted``, ``rejected``,
    ``completed``, ``errors``), ``requests_log`` (model key, session id, compress, env and
    the headers of each POST), ``ws_headers`` (the headers of each /subscribe),
    ``poll_headers``, the mode, the models loaded, and ``blocked_imports`` (what importing
    each blocked package raised, checked at startup), ``pid``.
``GET /_test/import/{name}``
    Try ``import name`` in the server process now: ``{"importable": bool, "error": str}``.
``POST /_test/config`` (JSON)
    ``{"mode": "normal" | "error" | "401" | "http" | "stall" | "die_received" |
    "die_running" | "shutdown_running", "description": str | null, "code": int,
    "stall": float, "result": "inline" | "url", "status_code": int | null,
    "status_detail": str | null}`` -- sticky until changed (a key left out keeps its
    value).
    ``error``: the job gets RUNNING, then ERROR with ``description``; ``401``: every POST
    /request is refused; ``http``: every POST /request answers HTTP ``code`` (default 500)
    with ``{"detail": description}``; ``stall``: POST /request waits ``stall`` seconds
    (default 30) before answering RECEIVED, and the job is dropped (for a client read
    timeout shorter than that); ``die_received``: answer RECEIVED, then the process exits
    (code 75); ``die_running``: send RUNNING on the websocket, then exit (no close frame:
    the client sees the TCP connection drop); ``shutdown_running``: send RUNNING, then shut
    down gracefully as on SIGTERM (uvicorn sends each websocket a close frame, code 1012,
    then the process ends by the SIGTERM: exit status -15). ``status_code``: when set, ``GET /status`` answers that HTTP
    status with ``{"detail": status_detail}`` (whatever the mode).
``POST /_test/reset``
    Mode back to normal/inline, ``/status`` answering normally, and every counter and log
    cleared.
"""

from __future__ import annotations

import importlib.abc
import sys

# -- the project must not be importable here (installed before anything else) -------------

BLOCKED = ("mi_ideas", "mi_ideas_plugins")


class BlockProjectImports(importlib.abc.MetaPathFinder):
    """Refuse the project's packages, with the message a server without them gives."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ARG002
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, BlockProjectImports())
for _name in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
    del sys.modules[_name]

# -- the rest --------------------------------------------------------------------------------

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

# anyio imports parts of itself lazily, on the first large request; by then nnsight has
# added a `save` attribute to objects, which breaks that import (HTTP 500). Import them now.
import anyio._backends._asyncio  # noqa: E402,F401
import anyio.abc  # noqa: E402,F401
from fastapi import BackgroundTasks, FastAPI, Request, WebSocket  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402

log = logging.getLogger("ndif-test-server")

DIE_EXIT_CODE = 75
MODES = ("normal", "error", "401", "http", "stall", "die_received", "die_running",
         "shutdown_running")
DEFAULT_ERROR = "Injected failure from the loopback NDIF test server (mode 'error')."
UNAUTHORIZED = "Invalid API key (loopback NDIF test server in mode '401')."
HTTP_ERROR = "Injected HTTP error from the loopback NDIF test server (mode 'http')."
STATUS_ERROR = "Injected /status error from the loopback NDIF test server."


def probe_blocked() -> dict[str, str | None]:
    """What importing each blocked package raises (``None`` would mean it imported)."""
    out: dict[str, str | None] = {}
    for name in BLOCKED:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
        else:  # pragma: no cover - the assertion at startup catches this
            out[name] = None
    return out



@dataclass
class Job:
    id: str
    session_id: str
    model_key: str
    compress: bool
    env: dict
    blob: bytes
    last: str | None = None  # latest status as JSON, for GET /response/{id}
    result: bytes | None = None


@dataclass
class State:
    base_url: str = ""
    allow: list[str] = field(default_factory=list)
    mode: str = "normal"
    description: str | None = None
    code: int = 500
    stall: float = 30.0
    status_code: int | None = None
    status_detail: str | None = None
    result_transport: str = "inline"
    counters: dict[str, int] = field(default_factory=dict)
    requests_log: list[dict] = field(default_factory=list)
    ws_headers: list[dict] = field(default_factory=list)
    poll_headers: list[dict] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)
    sessions: dict[str, asyncio.Queue] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    blocked_imports: dict[str, str | None] = field(default_factory=dict)

    def reset(self) -> None:
        self.mode, self.description, self.result_transport = "normal", None, "inline"
        self.code, self.stall, self.status_code, self.status_detail = 500, 30.0, None, None
        self.counters = {k: 0 for k in ("requests", "accepted", "rejected", "completed", "errors")}
        self.requests_log.clear()
        self.ws_headers.clear()
        self.poll_headers.clear()


STATE = State()
EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ndif-exec")
JOBS: asyncio.Queue[Job] | None = None


# -- execution (on the single worker thread) -------------------------------------------------


def warm_up() -> None:
    """Import torch / nnsight on the worker thread so the first job does not pay for it."""
    import torch

    torch.set_num_threads(1)
    import nnsight.modeling.transformers  # noqa: F401
    from nnsight.schema.request import RequestModel  # noqa: F401


def check_allowed(model_key: str) -> None:
    if not STATE.allow:
        return
    try:
        repo_id = json.loads(model_key.split(":", 1)[1]).get("repo_id", "")
    except (IndexError, ValueError, AttributeError):
        repo_id = ""
    path = os.path.abspath(repo_id) if repo_id else ""
    if not any(path == root or path.startswith(root + os.sep) for root in STATE.allow):
        raise LookupError(f"Model {model_key!r} is not deployed on this server.")


def load_model(model_key: str) -> Any:
    """The model for ``model_key``, built with nnsight's own ``from_model_key`` (cached)."""
    if model_key not in STATE.models:
        check_allowed(model_key)
        from nnsight.modeling.mixins.remotable import Remotable

        log.info("loading %s", model_key)
        model = Remotable.from_model_key(model_key, dispatch=True)
        model._module.requires_grad_(False)
        STATE.models[model_key] = model
    return STATE.models[model_key]


def execute(job: Job) -> tuple[bytes, float]:
    """Run one request; return the (maybe compressed) torch.save of its saved values."""
    import torch
    from nnsight.schema.request import RequestModel
    from nnsight.tracing.tracer import _saves, dec, inc

    start = time.perf_counter()
    model = load_model(job.model_key)
    model._remoteable_set_env(job.env)
    tracer = RequestModel.deserialize(
        job.blob, model._remoteable_persistent_objects(), compress=job.compress
    )
    frame = tracer.info.frame  # a SerializedFrame: its f_locals is a plain dict
    # One trace scope around the run, as Tracer.__exit__ does client-side: at depth 1
    # push_result writes only the save()-marked values into the frame, and those are
    # exactly what the client gets back.
    inc()
    try:
        tracer.execute(tracer.info.code)
        saved = _saves()
        result = {k: v for k, v in frame.f_locals.items() if id(v) in saved}
    finally:
        dec()
        cancel = getattr(model.interleaver, "cancel", None)
        if cancel is not None:
            cancel()
    buffer = io.BytesIO()
    torch.save(result, buffer)
    data = buffer.getvalue()
    if job.compress:
        import zstandard

        data = zstandard.ZstdCompressor(level=6).compress(data)
    return data, time.perf_counter() - start


def describe(exc: BaseException) -> str:
    """``Type: message``, then the traceback without this server's, nnsight's and the thread
    pool's frames (what is left points at the user's block or the model)."""
    import concurrent.futures

    import nnsight
    from nnsight.tracing.util import filter_traceback

    hidden = tuple(os.path.dirname(m.__file__) for m in (nnsight, concurrent.futures))
    hidden += (os.path.abspath(__file__),)
    tb = filter_traceback(exc.__traceback__,
                          lambda frame: not frame.f_code.co_filename.startswith(hidden))
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if tb is None:
        return head
    return f"{head}\n\nTraceback (most recent call last):\n{''.join(traceback.format_tb(tb))}"


# -- status messages -------------------------------------------------------------------------


def response(job: Job, status: str, description: str = "", data: Any = None,
             meta: dict | None = None) -> Any:
    from nnsight.schema.response import ResponseModel

    kwargs: dict[str, Any] = {"id": job.id, "status": status, "description": description}
    if data is not None:
        kwargs["data"] = data
    if meta is not None:
        kwargs["meta"] = meta
    return ResponseModel(**kwargs)


async def emit(job: Job, status: str, description: str = "", *, result: bytes | None = None,
               meta: dict | None = None) -> None:
    """Record a status for polling and push it to the job's websocket, if any."""
    url = f"{STATE.base_url}/result/{job.id}" if result is not None else None
    as_json = response(job, status, description, url, meta).model_dump_json()
    job.last = as_json
    queue = STATE.sessions.get(job.session_id)
    if queue is None:
        return
    if result is not None and STATE.result_transport == "inline":
        await queue.put(response(job, status, description, result, meta).pickle())
    else:
        await queue.put(as_json)


async def _drain(session_id: str | None) -> None:
    """Let the session's queued websocket frames go out (at most about a second)."""
    queue = STATE.sessions.get(session_id) if session_id else None
    for _ in range(50):
        if queue is None or queue.empty():
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)


async def drain_and_die(session_id: str | None) -> None:
    """Let queued websocket frames go out, then exit without any cleanup."""
    await _drain(session_id)
    log.warning("dying on purpose (mode %s)", STATE.mode)
    logging.shutdown()
    os._exit(DIE_EXIT_CODE)


async def drain_and_shut_down(session_id: str | None) -> None:
    """Let queued websocket frames go out, then shut down as on SIGTERM: uvicorn closes
    every websocket with a close frame (1012, service restart), then re-raises the signal
    (the process ends with status -15)."""
    await _drain(session_id)
    log.warning("shutting down on purpose (mode %s)", STATE.mode)
    os.kill(os.getpid(), signal.SIGTERM)


async def worker() -> None:
    loop = asyncio.get_running_loop()
    while True:
        job = await JOBS.get()
        try:
            await emit(job, "RUNNING", "Your job has started running.")
            if STATE.mode == "die_running":
                await drain_and_die(job.session_id)
            if STATE.mode == "shutdown_running":
                await drain_and_shut_down(job.session_id)
                continue
            if STATE.mode == "error":
                STATE.counters["errors"] += 1
                await emit(job, "ERROR", STATE.description or DEFAULT_ERROR)
                continue
            try:
                data, seconds = await loop.run_in_executor(EXECUTOR, execute, job)
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the client
                log.exception("job %s failed", job.id)
                STATE.counters["errors"] += 1
                await emit(job, "ERROR", describe(exc))
                continue
            job.result = data
            STATE.counters["completed"] += 1
            await emit(job, "COMPLETED", "Your job has been completed.", result=data,
                       meta={"server": "loopback", "run_seconds": round(seconds, 4)})
        finally:
            job.blob = b""
            JOBS.task_done()


# -- the app ---------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):  # noqa: ANN201, ARG001
    global JOBS
    JOBS = asyncio.Queue()
    asyncio.get_running_loop().run_in_executor(EXECUTOR, warm_up)
    task = asyncio.create_task(worker())
    yield
    task.cancel()


app = FastAPI(title="loopback NDIF test server", lifespan=lifespan)


@app.websocket("/subscribe")
async def subscribe(websocket: WebSocket) -> None:
    await websocket.accept()
    session_id = uuid.uuid4().hex
    queue: asyncio.Queue = asyncio.Queue()
    STATE.sessions[session_id] = queue
    STATE.ws_headers.append(dict(websocket.headers))
    await websocket.send_text(json.dumps({"session_id": session_id}))

    async def until_closed() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    closed = asyncio.create_task(until_closed())
    try:
        while True:
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            message = getter.result()
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            else:
                await websocket.send_text(message)
            queue.task_done()
    except Exception:  # noqa: BLE001 - a client that went away
        pass
    finally:
        closed.cancel()
        STATE.sessions.pop(session_id, None)


@app.post("/request")
async def post_request(request: Request, background: BackgroundTasks) -> Any:
    from nnsight.schema.request import RequestModel

    STATE.counters["requests"] += 1
    headers = dict(request.headers)
    form = await request.form()
    meta = RequestModel.model_validate_json(form["data"])
    blob = await form["blob"].read()
    STATE.requests_log.append({
        "model_key": meta.model_key, "session_id": meta.session_id,
        "compress": meta.compress, "env": meta.env, "headers": headers,
        "blob_bytes": len(blob),
    })
    if STATE.mode == "401":
        STATE.counters["rejected"] += 1
        return JSONResponse(status_code=401, content={"detail": STATE.description or UNAUTHORIZED})
    if STATE.mode == "http":
        STATE.counters["rejected"] += 1
        return JSONResponse(status_code=STATE.code,
                            content={"detail": STATE.description or HTTP_ERROR})

    job = Job(id=uuid.uuid4().hex, session_id=meta.session_id, model_key=meta.model_key,
              compress=meta.compress, env=dict(meta.env), blob=blob)
    STATE.jobs[job.id] = job
    STATE.counters["accepted"] += 1
    received = response(job, "RECEIVED", "Your job has been received and is waiting to be "
                        "processed.")
    job.last = received.model_dump_json()
    if STATE.mode == "stall":
        await asyncio.sleep(STATE.stall)  # the client gave up meanwhile: drop the job
        return Response(content=job.last, media_type="application/json")
    if STATE.mode == "die_received":
        background.add_task(drain_and_die, None)
    else:
        await JOBS.put(job)
    return Response(content=job.last, media_type="application/json")


@app.get("/response/{job_id}")
async def get_response(job_id: str, request: Request) -> Any:
    STATE.poll_headers.append(dict(request.headers))
    job = STATE.jobs.get(job_id)
    if job is None or job.last is None:
        return JSONResponse(status_code=404, content={"detail": f"No job {job_id!r}."})
    return Response(content=job.last, media_type="application/json")


@app.get("/result/{job_id}")
async def get_result(job_id: str) -> Any:
    job = STATE.jobs.get(job_id)
    if job is None or job.result is None:
        return JSONResponse(status_code=404, content={"detail": f"No result for {job_id!r}."})
    return Response(content=job.result, media_type="application/octet-stream")


@app.get("/ping")
async def ping() -> Any:
    return "pong"


@app.get("/status")
async def status() -> Any:
    """What NDIF's ``/status`` reports, for the models this server has loaded (RUNNING)."""
    if STATE.status_code is not None:
        return JSONResponse(status_code=STATE.status_code,
                            content={"detail": STATE.status_detail or STATUS_ERROR})
    deployments = {}
    for key in STATE.models:
        info = json.loads(key.split(":", 1)[1])
        deployments[key] = {"repo_id": info.get("repo_id"), "revision": info.get("revision"),
                            "task": info.get("task"), "application_state": "RUNNING"}
    return {"deployments": deployments}


@app.get("/env")
async def env() -> Any:
    from nnsight.ndif import get_local_env

    data = get_local_env()
    blocked = {"mi-ideas", "mi_ideas", *BLOCKED}
    data["packages"] = {k: v for k, v in data["packages"].items() if k not in blocked}
    return data


@app.get("/_test/stats")
async def stats() -> Any:
    return {
        **STATE.counters,
        "mode": STATE.mode,
        "result_transport": STATE.result_transport,
        "requests_log": STATE.requests_log,
        "ws_headers": STATE.ws_headers,
        "poll_headers": STATE.poll_headers,
        "models": sorted(STATE.models),
        "blocked_imports": STATE.blocked_imports,
        "pid": os.getpid(),
    }


@app.get("/_test/import/{name}")
async def try_import(name: str) -> Any:
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        return {"module": name, "importable": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"module": name, "importable": True, "error": None}


@app.post("/_test/config")
async def config(request: Request) -> Any:
    body = await request.json()
    mode = body.get("mode", STATE.mode)
    transport = body.get("result", STATE.result_transport)
    code = body.get("code", STATE.code)
    stall = body.get("stall", STATE.stall)
    status_code = body.get("status_code", STATE.status_code)
    if (mode not in MODES or transport not in ("inline", "url")
            or not (isinstance(code, int) and 100 <= code <= 599)
            or not (isinstance(stall, (int, float)) and stall >= 0)
            or not (status_code is None or (isinstance(status_code, int)
                                            and 100 <= status_code <= 599))):
        return JSONResponse(status_code=400, content={"detail": f"bad config {body!r}"})
    STATE.mode, STATE.result_transport = mode, transport
    STATE.code, STATE.stall, STATE.status_code = code, float(stall), status_code
    STATE.description = body.get("description", STATE.description)
    STATE.status_detail = body.get("status_detail", STATE.status_detail)
    return {"mode": STATE.mode, "result": STATE.result_transport, "code": STATE.code,
            "stall": STATE.stall, "status_code": STATE.status_code}


@app.post("/_test/reset")
async def reset() -> Any:
    STATE.reset()
    return {"ok": True}


# -- entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--allow", action="append", default=[], metavar="DIR",
                        help="serve only local models under DIR (repeatable; default: any)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="exit when the launching process goes away (no orphans)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    STATE.blocked_imports = probe_blocked()
    leaked = [name for name, error in STATE.blocked_imports.items() if error is None]
    assert not leaked, f"{leaked} importable in the NDIF test server process"

    STATE.allow = [os.path.abspath(d) for d in args.allow]
    if args.exit_with_parent:
        parent = os.getppid()

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1)
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    STATE.reset()

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    STATE.base_url = f"http://{args.host}:{port}"
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, ws="auto",
                                           ws_max_size=1 << 30, lifespan="on"))

    if args.port_file:
        def announce() -> None:
            while not server.started:
                time.sleep(0.02)
            tmp = args.port_file + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(str(port))
            os.replace(tmp, args.port_file)

        threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
