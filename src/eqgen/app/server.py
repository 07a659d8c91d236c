"""`eqgen app`: a local web page that grows an image column by column (paper Fig. 6).

The page starts a session (class, seed, cfg, temperature, width), then asks for a few more columns at a time
and shows the image as it grows. Clicking a column rejects it: the session rolls back to that column and
generates from there again, with fresh randomness; everything to its left stays bit-identical. The result
downloads as PNG.

A JSON API on Starlette, served by uvicorn: GET / (the page), GET /api/info, POST /api/start, POST /api/step,
POST /api/reject, GET /api/image?session=… . It binds to 127.0.0.1 by default. Every request field is checked
in `parse`; a bad one, an unknown session or a width over the server's maximum is answered with a 400 and a
one-line JSON error, which the page shows. `Limits` bounds what one client may cost: the body size, the time
to send it, idle keep-alive connections and the listen backlog.
"""
from __future__ import annotations

import io
import json
import math
import socket
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import torch
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..distill import distilled_head
from ..errors import EqgenError
from ..flow import DISTILLED
from ..imageio import to_uint8
from ..pipeline import Pipeline
from ..sampling import PANORAMA, SamplingOptions, TokenSampler

PAGE = Path(__file__).with_name("page.html")
TILE, OVERLAP = 16, 4  # decode in small tiles: a rejected column changes only the pixels of nearby tiles


# -- the request fields, checked in one place ------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    kind: type                    # int, float or str
    low: float = -math.inf        # the allowed range, both ends included
    high: float = math.inf


FIELDS = {
    "class": Field(str),
    "session": Field(str),
    "seed": Field(int, 0, 2**64 - 1),  # what torch.Generator.manual_seed takes
    "cfg": Field(float, 1, 20),
    "temperature": Field(float, 0, 10),
    "width": Field(int),              # the app checks it against the token width and its maximum
    "columns": Field(int, 1, 64),
    "x": Field(int),
}
REQUESTED = ("seed", "cfg", "temperature")  # the sampling options a request may set


def parse(body: object, wanted: dict[str, object]) -> dict:
    """The `wanted` fields of a request (a JSON body or a query), converted and range-checked.

    `wanted` maps each field name to its default; None makes the field required. Other keys are ignored
    (the page adds a cache-busting `t` to image URLs). Numbers may come as JSON numbers or as strings (form
    inputs send strings); booleans, NaN, infinities and fractions where a whole number is due are refused.
    """
    if not isinstance(body, dict):
        raise EqgenError("the request must be a JSON object")
    values = {}
    for name, default in wanted.items():
        value = body.get(name, default)
        if value is None:
            raise EqgenError(f"{name} is missing")
        values[name] = _convert(name, value, FIELDS[name])
    return values


def _convert(name: str, value: object, field: Field):
    if field.kind is str:
        if not isinstance(value, str):
            raise EqgenError(f"{name} must be a string")
        return value
    number = _number(value, field.kind)
    if number is None:
        raise EqgenError(f"{name} must be a {'whole' if field.kind is int else 'finite'} number")
    if not field.low <= number <= field.high:
        raise EqgenError(f"{name} must be between {field.low} and {field.high}, got {number}")
    return number


def _number(value: object, kind: type) -> int | float | None:
    """`value` as an int or a finite float, or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str):
        try:
            value = int(value) if kind is int else float(value)
        except ValueError:  # also a string of over 4300 digits
            return None
    if kind is int:
        return int(value) if isinstance(value, int) or value.is_integer() else None  # is_integer: no inf, NaN
    try:
        value = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return value if math.isfinite(value) else None


# -- the model and the sessions ---------------------------------------------------------------------------


@dataclass
class Session:
    sampler: TokenSampler

    def png(self, pipe: Pipeline) -> bytes:
        """The image so far, decoded tile by tile (a tile's pixels depend only on its own tokens, so columns
        well left of a rejected one keep their pixels exactly)."""
        tokens = self.sampler.tokens
        if tokens.shape[1] < 2:  # nothing to decode yet: a white column
            pixels = to_uint8(torch.ones(3, pipe.height, pipe.token_width))
        else:
            pixels = np.concatenate([p for _, p in pipe.decode_tiles(tokens, TILE, OVERLAP)], axis=1)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()


class App:
    """The model and the live sessions; every method takes and returns plain JSON-able values and may be
    called from many threads (the model runs one request at a time)."""

    def __init__(self, pipe: Pipeline, max_width: int = 4096, max_sessions: int = 8, *,
                 options: SamplingOptions = PANORAMA, **changes):
        """options (or keywords changing single fields): their seed, cfg and temperature are the defaults of a
        request that leaves them out, the others (cfg_schedule, steps, solver, rho) hold for every request."""
        f = pipe.token_width
        if max_width < 2 * f or max_width % f:
            raise EqgenError(f"the maximum width must be a multiple of the token width {f} px and at least "
                             f"{2 * f} px, got {max_width}")
        if max_sessions < 1:
            raise EqgenError(f"the number of sessions must be at least 1, got {max_sessions}")
        self.pipe, self.max_width, self.max_sessions = pipe, max_width, max_sessions
        self.options = options.replace(**changes)
        if self.options.solver == DISTILLED:   # a head the model lacks is refused at start, not at the first request
            distilled_head(pipe.generator, self.options)
        self.defaults = parse({name: getattr(self.options, name) for name in REQUESTED}, dict.fromkeys(REQUESTED))
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.lock = threading.Lock()  # the sampler and the model's caches are not thread-safe

    def info(self) -> dict:
        f = self.pipe.token_width
        width = min(self.pipe.generator.config.train_tokens * f * 4, self.max_width)
        return {"classes": self.pipe.classes, "token_width": f, "height": self.pipe.height,
                "max_width": self.max_width, "default_width": width, **self.defaults}

    def start(self, request: dict) -> dict:
        r = parse(request, {"class": None, "width": self.info()["default_width"], **self.defaults})
        if r["class"] not in self.pipe.classes:  # names only: the page sends names
            raise EqgenError(f"unknown class {r['class'][:40]!r}; this model knows: {', '.join(self.pipe.classes)}")
        if r["width"] > self.max_width:
            raise EqgenError(f"width {r['width']} is more than this server allows ({self.max_width} px)")
        num_tokens = self.pipe.tokens_for_width(r["width"])
        with self.lock:
            sampler = self.pipe.sampler(r["class"], num_tokens, self.options, **{name: r[name] for name in REQUESTED})
            sid = uuid.uuid4().hex
            self.sessions[sid] = Session(sampler)
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)
        return {"session": sid, "num_tokens": num_tokens, "done": 0}

    def step(self, request: dict) -> dict:
        r = parse(request, {"session": None, "columns": 4})
        with self.lock:
            session = self._session(r["session"])
            for _ in range(min(r["columns"], session.sampler.num_tokens - session.sampler.length)):
                session.sampler.step()
            return {"done": session.sampler.length, "num_tokens": session.sampler.num_tokens}

    def reject(self, request: dict) -> dict:
        """Roll back to the column under pixel x: that token and everything after it is generated again."""
        r = parse(request, {"session": None, "x": None})
        column = r["x"] // self.pipe.token_width
        with self.lock:
            session = self._session(r["session"])
            if not 0 <= column < session.sampler.length:
                raise EqgenError(f"column {column} has not been generated yet")
            session.sampler.rollback(column)
            return {"done": session.sampler.length, "num_tokens": session.sampler.num_tokens, "column": column}

    def image(self, request: dict) -> bytes:
        r = parse(request, {"session": None})
        with self.lock:
            return self._session(r["session"]).png(self.pipe)

    def _session(self, sid: str) -> Session:
        session = self.sessions.get(sid)
        if session is None:
            raise EqgenError("unknown or expired session; press Generate to start a new one")
        return session


# -- HTTP -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one client may cost the server."""
    body_bytes: int = 65536      # a request body; a larger one is answered 413
    body_seconds: float = 10.0   # to send the body once the headers are in; a slower client gets a 408
    idle_seconds: float = 5.0    # a connection that has not sent a whole request head this long after it
                                 # opened or after its last response is closed
    backlog: int = 2048          # connections the kernel queues before the server accepts them


NO_STORE = {"Cache-Control": "no-store"}
CLOSE = {"Connection": "close"}  # after a body we stopped reading, the connection is of no further use


def _json(value: dict, status: int = 200, headers: dict | None = None) -> Response:
    # ASCII JSON: an error may quote what the client sent, lone surrogates included
    return Response(json.dumps(value), status, {**NO_STORE, **(headers or {})}, media_type="application/json")


async def _read_json(request: Request, limits: Limits) -> object:
    """The JSON body, read as a stream: it stops at the size limit whatever Content-Length claims, and at the
    time limit however slowly the client sends."""
    body = bytearray()
    try:
        with anyio.fail_after(limits.body_seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limits.body_bytes:
                    raise HTTPException(413, f"the request body is over {limits.body_bytes} bytes", CLOSE)
    except TimeoutError:
        raise HTTPException(408, f"the request body took over {limits.body_seconds:g} s", CLOSE) from None
    except ClientDisconnect:  # no one is left to answer
        raise HTTPException(400, "the client closed the connection", CLOSE) from None
    try:
        return json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        raise EqgenError("the request body must be a JSON object") from None


def asgi_app(app: App, limits: Limits = Limits()) -> Starlette:
    """The page and the JSON API around `app`. The model's work is blocking: it runs in Starlette's
    threadpool, so that the event loop keeps reading, timing out and answering other clients."""
    async def index(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers=NO_STORE)

    async def info(request: Request) -> Response:
        return _json(app.info())

    async def image(request: Request) -> Response:
        png = await run_in_threadpool(app.image, dict(request.query_params))
        return Response(png, media_type="image/png", headers=NO_STORE)

    def post(method):
        async def endpoint(request: Request) -> Response:
            return _json(await run_in_threadpool(method, await _read_json(request, limits)))
        return endpoint

    async def bad_request(request: Request, err: EqgenError) -> Response:
        return _json({"error": str(err)}, 400)

    async def http_error(request: Request, err: HTTPException) -> Response:
        return _json({"error": f"{err.detail} ({request.method} {request.url.path})"}, err.status_code, err.headers)

    routes = [Route("/", index), Route("/api/info", info), Route("/api/image", image),
              Route("/api/start", post(app.start), methods=["POST"]),
              Route("/api/step", post(app.step), methods=["POST"]),
              Route("/api/reject", post(app.reject), methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={EqgenError: bad_request, HTTPException: http_error})


class _HTTP(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request head. uvicorn arms its keep-alive timer
    only after a response and cancels it at any byte received, so a client that connects and sends nothing,
    or sends its headers a byte at a time, would hold its connection for good. Here a connection must
    complete a request head within the keep-alive timeout of opening or of its previous response."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.head_deadline = self._deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.head_deadline.cancel()
        self.head_deadline = self._deadline()

    def connection_lost(self, exc) -> None:
        self.head_deadline.cancel()
        super().connection_lost(exc)

    def _deadline(self):
        return self.loop.call_later(self.timeout_keep_alive, self._head_overdue)

    def _head_overdue(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # no request in progress: its head is late
            self.timeout_keep_alive_handler()  # uvicorn's own way to close an idle connection


class Server:
    """`app` bound to a listening socket. `run()` serves until `stop()` (from another thread) or Ctrl-C;
    `with server:` serves from a background thread until the block ends (notebooks, tests)."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits()):
        self.app = app
        self.socket = _listen(host, port, limits.backlog)
        self.address = self.socket.getsockname()[:2]
        config = uvicorn.Config(asgi_app(app, limits), http=_HTTP, lifespan="off", log_config=None,
                                log_level="warning", access_log=False, timeout_keep_alive=limits.idle_seconds,
                                backlog=limits.backlog, timeout_graceful_shutdown=limits.idle_seconds)
        self.uvicorn = uvicorn.Server(config)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def run(self) -> None:
        self.uvicorn.run(sockets=[self.socket])  # closes the socket when it ends

    def stop(self) -> None:
        self.uvicorn.should_exit = True

    def __enter__(self) -> "Server":
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.thread.join()


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise EqgenError(f"port must be between 0 and 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as err:  # in use, no such address, not allowed
        raise EqgenError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None


def serve(pipe: Pipeline, host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits(),
          **options) -> Server:
    """The app's server, bound and ready to `run()`; port 0 picks a free port. options: `App`'s."""
    return Server(App(pipe, **options), host, port, limits)


