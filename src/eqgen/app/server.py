"""`eqgen app`: a local web page that grows an image column by column (paper Fig. 6).

The page starts a session (class, seed, cfg, width), then asks for a few more columns at a time and shows
the image as it grows. Clicking a column rejects it: the session rolls back to that column and generates
from there again, with fresh randomness; everything to its left stays bit-identical. The result downloads
as PNG.

A JSON API on Python's standard HTTP server (nothing to install): GET / (the page), GET /api/info,
POST /api/start, POST /api/step, POST /api/reject, GET /api/image?session=… . It binds to 127.0.0.1 by
default, bounds the width a request may ask for and the number of live sessions, and answers bad input
with a 400 and a one-line message that the page shows.
"""
from __future__ import annotations

import io
import json
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch
from PIL import Image

from ..errors import EqgenError
from ..imageio import to_uint8
from ..pipeline import Pipeline
from ..sampling import TokenSampler

PAGE = Path(__file__).with_name("page.html")


TILE, OVERLAP = 16, 4  # decode in small tiles: a rejected column changes only the pixels of nearby tiles


@dataclass
class Session:
    sampler: TokenSampler
    num_tokens: int

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
    """The model and the live sessions; every method takes and returns plain JSON-able values."""

    def __init__(self, pipe: Pipeline, max_width: int = 4096, max_sessions: int = 8, **options):
        """options: the sampler's (steps, solver, rho, temperature); the pipeline's defaults otherwise."""
        self.pipe, self.max_width, self.max_sessions, self.options = pipe, max_width, max_sessions, options
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.lock = threading.Lock()  # one generation at a time: the CPU is the bottleneck anyway

    def info(self) -> dict:
        f = self.pipe.token_width
        return {"classes": self.pipe.classes, "token_width": f, "height": self.pipe.height,
                "max_width": self.max_width, "default_width": self.pipe.generator.config.train_tokens * f * 4}

    def start(self, request: dict) -> dict:
        cls = str(request.get("class", ""))
        seed, width = _int(request, "seed", 0), _int(request, "width", self.info()["default_width"])
        cfg = _float(request, "cfg", 3.0)
        if not 1 <= cfg <= 20:
            raise EqgenError("cfg must be between 1 and 20")
        if width > self.max_width:
            raise EqgenError(f"width {width} is more than this server allows ({self.max_width} px)")
        num_tokens = self.pipe.tokens_for_width(width)
        sampler = self.pipe.sampler(cls, num_tokens, seed=seed, cfg=cfg, cfg_schedule="constant", **self.options)
        sid = uuid.uuid4().hex
        self.sessions[sid] = Session(sampler, num_tokens)
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)
        return {"session": sid, "num_tokens": num_tokens, "done": 0}

    def step(self, request: dict) -> dict:
        session = self._session(request)
        count = min(max(_int(request, "columns", 4), 1), 64)
        for _ in range(min(count, session.num_tokens - session.sampler.length)):
            session.sampler.step()
        return {"done": session.sampler.length, "num_tokens": session.num_tokens}

    def reject(self, request: dict) -> dict:
        """Roll back to the column under pixel x: that token and everything after it is generated again."""
        session = self._session(request)
        column = _int(request, "x", 0) // self.pipe.token_width
        if not 0 <= column < session.sampler.length:
            raise EqgenError(f"column {column} has not been generated yet")
        session.sampler.rollback(column)
        return {"done": session.sampler.length, "num_tokens": session.num_tokens, "column": column}

    def image(self, request: dict) -> bytes:
        return self._session(request).png(self.pipe)

    def _session(self, request: dict) -> Session:
        session = self.sessions.get(str(request.get("session", "")))
        if session is None:
            raise EqgenError("unknown or expired session; press Generate to start a new one")
        return session


def _int(request: dict, key: str, default: int) -> int:
    try:
        return int(request.get(key, default))
    except (TypeError, ValueError):
        raise EqgenError(f"{key} must be a whole number") from None


def _float(request: dict, key: str, default: float) -> float:
    try:
        return float(request.get(key, default))
    except (TypeError, ValueError):
        raise EqgenError(f"{key} must be a number") from None


def make_handler(app: App):
    routes = {"/api/start": app.start, "/api/step": app.step, "/api/reject": app.reject}

    class Handler(BaseHTTPRequestHandler):
        app_state = app

        def log_message(self, *args):  # quiet: the terminal shows the URL, not every request
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: dict) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def _guard(self, work):
            try:
                with app.lock:
                    return work()
            except EqgenError as err:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})

        def do_GET(self):
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/":
                self._send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif url.path == "/api/info":
                self._json(HTTPStatus.OK, app.info())
            elif url.path == "/api/image":
                png = self._guard(lambda: app.image(query))
                if png is not None:
                    self._send(HTTPStatus.OK, png, "image/png")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})

        def do_POST(self):
            route = routes.get(urlparse(self.path).path)
            if route is None:
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
            try:
                length = min(int(self.headers.get("Content-Length", 0)), 65536)
                request = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(request, dict):
                    raise ValueError
            except ValueError:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": "the request body must be a JSON object"})
            result = self._guard(lambda: route(request))
            if result is not None:
                self._json(HTTPStatus.OK, result)

    return Handler


def serve(pipe: Pipeline, host: str = "127.0.0.1", port: int = 7860, **options) -> ThreadingHTTPServer:
    """Create the server (call `.serve_forever()`); port 0 picks a free port."""
    try:
        return ThreadingHTTPServer((host, port), make_handler(App(pipe, **options)))
    except OSError as err:
        raise EqgenError(f"cannot listen on {host}:{port} ({err.strerror})") from None
