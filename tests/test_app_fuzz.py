"""The page's HTTP API against careless and hostile clients, over real sockets on 127.0.0.1 only.

A bounded, seeded fuzz of request bodies (odd numbers, Unicode class names, malformed JSON), then raw-socket
clients that lie about Content-Length, stall after their headers or never send a request, and 40 clients at
once. Every answer must be a 200 or a 400 with a one-line JSON error, nothing may be reset, and the server's
log must stay free of errors and tracebacks.
"""
import contextlib
import http.client
import json
import logging
import random
import socket
import threading
import urllib.parse

import pytest

from eqgen.app import Limits, serve

SHORT = Limits(body_seconds=1.0, idle_seconds=1.0)  # short timeouts, so that stalled clients are dropped soon
RESETS = (ConnectionResetError, ConnectionAbortedError, ConnectionRefusedError, BrokenPipeError,
          http.client.RemoteDisconnected)


@contextlib.contextmanager
def no_errors_logged():
    """Fails if anything logs an error (uvicorn logs a request it cannot parse as one warning). Checked once
    the server has stopped: uvicorn logs an exception after it has sent the 500."""
    handler = logging.Handler(logging.ERROR)
    handler.emit = (records := []).append
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
    assert [r.getMessage() for r in records] == []


@pytest.fixture(scope="module")
def server(pipe):
    with no_errors_logged(), serve(pipe, "127.0.0.1", 0, SHORT, max_width=256, max_sessions=64, steps=2) as srv:
        yield srv


def call(srv, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*srv.address, timeout=60)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def answered(status: int, body: bytes, png: bool = False) -> bool:
    """A 200 with a JSON object (or a PNG), or a 400 with a one-line JSON error."""
    if status == 200 and png:
        return body.startswith(b"\x89PNG")
    try:
        value = json.loads(body)
    except ValueError:
        return False
    if status == 400:
        return isinstance(value.get("error"), str) and "\n" not in value["error"]
    return status == 200 and isinstance(value, dict)


def start(srv, width: int = 32) -> str:
    status, body = call(srv, "POST", "/api/start", json.dumps({"class": "a", "width": width}).encode())
    assert status == 200
    return json.loads(body)["session"]


@pytest.mark.parametrize("body,message", [
    ('{"class": "a", "width": 1e400}', "width must be a whole number"),
    ('{"class": "a", "width": NaN}', "width must be a whole number"),
    ('{"class": "a", "width": -8}', "multiple of"),
    ('{"class": "a", "width": 1000000000000000000000000000000}', "more than this server allows"),
    ('{"class": "a", "seed": 1000000000000000000000000000000}', "seed must be between"),
    ('{"class": "a", "seed": 1e400}', "seed must be a whole number"),
    ('{"class": "a", "seed": 2.5}', "seed must be a whole number"),
    ('{"class": "a", "seed": true}', "seed must be a whole number"),
    ('{"class": "a", "cfg": Infinity}', "cfg must be a finite number"),
    ('{"class": "a", "cfg": 0.5}', "cfg must be between"),
    ('{"class": "a", "temperature": -1}', "temperature must be between"),
    ('{"class": "\\u00b2"}', "unknown class"),
    ('{"class": "\\ud800"}', "unknown class"),
    ('{"class": ["a"]}', "class must be a string"),
    ('{"width": 32}', "class is missing"),
    ("[" * 65536, "must be a JSON object"),
    ('{"class": "a"', "must be a JSON object"),
    (b"\xff\xfe{}", "must be a JSON object"),
], ids=lambda value: repr(value)[:30])
def test_bad_numbers_and_classes_get_a_400(server, body, message):
    status, answer = call(server, "POST", "/api/start", body if isinstance(body, bytes) else body.encode())
    assert status == 400 and message in json.loads(answer)["error"]


def test_step_and_reject_check_their_numbers(server):
    sid = start(server)
    for path, body, message in [
        ("/api/step", {"session": sid, "columns": 1e400}, "columns must be a whole number"),
        ("/api/step", {"session": sid, "columns": 0}, "columns must be between 1 and 64"),
        ("/api/reject", {"session": sid, "x": "²"}, "x must be a whole number"),
        ("/api/reject", {"session": sid, "x": 10**30}, "has not been generated yet"),
        ("/api/reject", {"session": sid}, "x is missing"),
    ]:
        status, answer = call(server, "POST", path, json.dumps(body).encode())
        assert status == 400 and message in json.loads(answer)["error"]


NUMBERS = ["0", "3", "-1", "8", "32", "1.5", "1e400", "-1e400", "NaN", "Infinity", "1e-400", "-0",
           str(10**30), str(2**64), str(2**64 - 1), '"3"', '" 8 "', '"3.0"', '"1e400"', '"NaN"', '"\\u0663"',
           '"\\u00b2"', "true", "false", "null", "[]", "{}", '""']
CLASSES = ['"a"', '"b"', '"\\u00b2"', '"\\u0663"', '"0"', '"\\u0000"', '"a\\nb"', '"\\ud800"', '"\\ud83e\\udd93"',
           '"' + "x" * 5000 + '"', "1", "null", '["a"]', '{"a": 1}']
JUNK = [b"{", b"}", b"{'a': 1}", b"\xff\xfe\x00", b"[]", b"1", b'"a"', b"null", b"\xef\xbb\xbf{}",
        b'{"a": ' * 5000, b"[" * 65536, b"9" * 5000]


def fuzz_body(rng: random.Random, sid: str) -> bytes:
    if rng.random() < 0.15:
        return rng.choice(JUNK + [rng.randbytes(rng.randrange(1, 200))])
    fields = {"class": CLASSES, "session": [json.dumps(sid), '"nope"', '""', '"\\u00b2"', "7", "null"]}
    pairs = []
    for name in rng.sample(["class", "session", "seed", "cfg", "temperature", "width", "columns", "x", "t"],
                           rng.randrange(0, 6)):
        pairs.append(f'"{name}": {rng.choice(fields.get(name, NUMBERS))}')
    return ("{" + ", ".join(pairs) + "}").encode()


def test_fuzzed_requests_get_a_200_or_a_one_line_400(server):
    rng = random.Random(0)
    sid = start(server, 64)
    tried = ok = 0
    for _ in range(240):
        endpoint = rng.choice(["start", "step", "step", "reject", "image"])
        if endpoint == "image":
            query = urllib.parse.urlencode({"session": rng.choice([sid, "nope", "²", "%FF"]), "t": 1})
            status, body = call(server, "GET", f"/api/image?{query}")
        else:
            status, body = call(server, "POST", f"/api/{endpoint}", fuzz_body(rng, sid))
        tried += 1
        ok += answered(status, body, png=endpoint == "image")
    print(f"fuzzed requests answered as expected: {ok}/{tried}")
    assert ok == tried


def raw(srv, data: bytes) -> socket.socket:
    sock = socket.create_connection(srv.address, timeout=30)  # the bound on waiting for the server
    sock.sendall(data)
    return sock


def response(sock: socket.socket) -> tuple[int, bytes]:
    """The server's next response on `sock`."""
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    return answer.status, answer.read()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    sock.close()
    return out


HEAD = b"POST /api/start HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1, 2", b"0x10", str(10**30).encode()])
def test_a_garbage_content_length_is_refused(server, length):
    answer = read_all(raw(server, HEAD + b"Content-Length: " + length + b"\r\n\r\n" + b"x" * 1000))
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_a_body_over_the_limit_is_cut_off_whatever_content_length_says(server):
    for head in (HEAD + b"Content-Length: 1000000000000\r\n\r\n", HEAD + b"Transfer-Encoding: chunked\r\n\r\n"):
        chunked = b"Transfer-Encoding" in head
        piece = b"x" * 65536
        sock = raw(server, head + (b"10000\r\n" + piece + b"\r\n" if chunked else piece) * 2)
        status, answer = response(sock)
        assert status == 413 and "over 65536 bytes" in json.loads(answer)["error"]
        with pytest.raises(RESETS):  # the server has stopped reading: sending on fails long before 256 MB
            for _ in range(4096):
                sock.sendall(piece)
        sock.close()


def test_a_body_shorter_than_its_content_length_times_out(server):
    for body in (b"", b'{"class": '):
        sock = raw(server, HEAD + b"Content-Length: 100\r\n\r\n" + body)
        status, answer = response(sock)
        assert status == 408 and "took over 1 s" in json.loads(answer)["error"]
        assert read_all(sock) == b""  # and the connection is closed


def test_idle_and_slow_clients_are_dropped(server):
    idle = [raw(server, b"") for _ in range(100)] + [raw(server, HEAD)]  # nothing; a head without its end
    status, body = call(server, "GET", "/api/info")  # the server still answers others meanwhile
    assert status == 200 and json.loads(body)["token_width"] > 0
    assert [read_all(sock) for sock in idle] == [b""] * len(idle)


def test_forty_clients_at_once_are_all_answered(pipe):
    clients, resets, answers = 40, [], []
    with no_errors_logged(), serve(pipe, "127.0.0.1", 0, max_width=256, max_sessions=clients, steps=2) as srv:
        barrier = threading.Barrier(clients)

        def client():
            barrier.wait()  # all connect at the same moment
            try:
                status, body = call(srv, "POST", "/api/start", b'{"class": "c", "width": 32}')
                sid = json.loads(body)["session"]
                answers.append(status == 200)
                status, body = call(srv, "POST", "/api/step", json.dumps({"session": sid, "columns": 2}).encode())
                answers.append(status == 200 and json.loads(body)["done"] == 2)
                status, body = call(srv, "GET", f"/api/image?session={sid}")
                answers.append(answered(status, body, png=True))
                status, body = call(srv, "POST", "/api/start", '{"class": "²"}'.encode())
                answers.append(status == 400 and "unknown class" in json.loads(body)["error"])
            except RESETS as err:
                resets.append(err)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(f"{clients} concurrent clients: {sum(answers)}/{4 * clients} answered as expected, {len(resets)} resets")
    assert not resets and answers == [True] * 4 * clients
