"""The web page's API over real HTTP on 127.0.0.1, and the page itself in headless Chromium."""
import io
import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from eqgen.app import App, serve
from eqgen.cli import main


@pytest.fixture(scope="module")
def server(pipe):
    with serve(pipe, "127.0.0.1", 0, max_width=512, steps=2) as srv:
        yield srv, srv.url.rstrip("/")


def post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def image(base, sid):
    with urllib.request.urlopen(f"{base}/api/image?session={sid}", timeout=60) as response:
        return np.array(Image.open(io.BytesIO(response.read())))


def test_generate_reject_and_regenerate(server, pipe):
    srv, base = server
    f = pipe.token_width
    status, state = post(f"{base}/api/start", {"class": "b", "seed": 3, "cfg": 2, "width": 12 * f})
    assert status == 200 and state["num_tokens"] == 12
    sid = state["session"]
    while state["done"] < state["num_tokens"]:
        status, state = post(f"{base}/api/step", {"session": sid, "columns": 5})
    before = image(base, sid)
    assert before.shape == (pipe.height, 12 * f, 3)
    sampler = srv.app.sessions[sid].sampler
    tokens_before = sampler.tokens.clone()
    status, state = post(f"{base}/api/reject", {"session": sid, "x": 7 * f + 1})
    assert status == 200 and state["column"] == 7 and state["done"] == 7
    while state["done"] < state["num_tokens"]:
        status, state = post(f"{base}/api/step", {"session": sid, "columns": 5})
    assert torch.equal(sampler.tokens[:, :7], tokens_before[:, :7])   # the prefix is kept bit for bit
    assert not torch.allclose(sampler.tokens[:, 7], tokens_before[:, 7])  # the rejected column is redrawn
    assert not np.array_equal(image(base, sid), before)


@pytest.mark.parametrize("body,message", [
    ({"class": "zebra"}, "unknown class"),
    ({"class": "a", "width": 100000}, "more than this server allows"),
    ({"class": "a", "width": "wide"}, "whole number"),
    ({"class": "a", "width": 13}, "multiple of"),
])
def test_bad_requests_get_a_clear_message(server, body, message):
    status, value = post(f"{server[1]}/api/start", body)
    assert status == 400 and message in value["error"]
    status, value = post(f"{server[1]}/api/step", {"session": "nope"})
    assert status == 400 and "session" in value["error"]


def test_the_server_defaults_fill_what_a_request_leaves_out(pipe):
    app = App(pipe, max_width=512, seed=5, cfg=2.0, temperature=0.5, steps=2)
    assert {k: app.info()[k] for k in ("seed", "cfg", "temperature")} == {"seed": 5, "cfg": 2.0, "temperature": 0.5}
    width = 4 * pipe.token_width
    sessions = [app.start({"class": "a", "width": width})["session"],
                app.start({"class": "a", "width": width, "seed": "5", "cfg": 2, "temperature": 0.5})["session"]]
    for sid in sessions:
        app.step({"session": sid, "columns": 2})
    implicit, explicit = (app.sessions[sid].sampler for sid in sessions)
    assert (implicit.options.cfg, implicit.options.temperature) == (2.0, 0.5)
    assert torch.equal(implicit.tokens, explicit.tokens)


@pytest.mark.parametrize("flags,message", [  # what depends on the model; bad numbers: test_cli_values.py
    (["--max-width", "100"], "maximum width must be a multiple of the token width"),
    (["--temperature", "11"], "temperature must be between 0 and 10"),
])
def test_bad_app_flags_get_one_line(flags, message, capsys):
    assert main(["app", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eqgen: error: ") and message in err and err.count("\n") == 1


def test_a_taken_port_gets_one_line(server, capsys):
    assert main(["app", "--port", str(server[0].address[1])]) == 2
    assert capsys.readouterr().err.startswith("eqgen: error: cannot listen on 127.0.0.1:")


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_page_in_headless_chromium(server, pipe, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    _, base = server
    f = pipe.token_width
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        page = browser.new_page()
        page.goto(base)
        page.wait_for_function("document.querySelectorAll('#cls option').length == 4")
        page.select_option("#cls", "c")
        page.fill("#width", str(40 * f))
        page.click("#generate")
        page.wait_for_function("document.getElementById('image').dataset.ready == '1'", timeout=60000)
        first = page.evaluate("document.getElementById('image').naturalWidth")
        assert first == 40 * f
        shot_before = page.locator("#image").screenshot()
        page.locator("#image").click(position={"x": 30 * f * 3 + 2, "y": 5})  # the page shows the image 3× enlarged
        page.wait_for_function("document.getElementById('image').dataset.ready == '1'", timeout=60000)
        assert "done" in page.inner_text("#status")
        shot_after = page.locator("#image").screenshot()
        page.screenshot(path=str(tmp_path / "page.png"))
        # Column 30 was rejected. The page decodes in tiles of 16 tokens overlapping by 4 (starts 0, 12, 24):
        # pixels of columns 0..23 come from tiles without column 30 and stay; from column 30 on they change.
        a = np.array(Image.open(io.BytesIO(shot_before)).convert("RGB")).astype(int)
        b = np.array(Image.open(io.BytesIO(shot_after)).convert("RGB")).astype(int)
        assert a.shape == b.shape
        changed = np.abs(a - b).sum(axis=(0, 2)) > 0
        assert not changed[: 23 * f * 3].any()
        assert changed[30 * f * 3:].any()
        page.fill("#width", str(8 * 12500))  # a multiple of the step, so the browser lets it through
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').className == 'error'")
        assert "more than this server allows" in page.inner_text("#status")
        browser.close()
