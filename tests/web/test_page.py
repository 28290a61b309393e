"""The web view in real headless Chromium, against the fake API
(:mod:`tests.web.fake_api`).

Chromium (Debian's, which .ci/run installs) runs once per module with
``--remote-debugging-port``; :class:`DevTools` is a small client of its
DevTools protocol over a websocket written with the standard library.  The
tests read what the page says about itself (``window.lpmView``, documented
in ``lpm/web/app.js``) and its DOM with ``Runtime.evaluate``, click and
hover with ``Input.dispatchMouseEvent``, and keep a screenshot of each page
in the test's tmp_path.  Every wait polls with a generous deadline; no sleep
is a timing assertion.  Without Chromium the tests skip, or fail under
LPM_REQUIRE_PEERS=1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from lpm.web import ASSETS, asset

from ..ghc import peers
from .fake_api import FakeApi, FakeData, start

DEADLINE = 15.0  #: seconds any one wait may take
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- a DevTools protocol client --------------------------------------------------


class DevTools:
    """One DevTools target over a websocket (RFC 6455): text frames out,
    masked as a client must; frames in, reassembled; pings answered.

    Events the target sends are dropped, except uncaught exceptions, which
    are kept in ``exceptions`` (a test fails on any).
    """

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        url = urllib.parse.urlsplit(ws_url)
        assert url.hostname is not None and url.port is not None, ws_url
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            byte = self.file.read(1)
            if not byte:
                raise ConnectionError("the browser closed the websocket handshake")
            head += byte
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].split(" ")[1] == "101", lines[0]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert any(line.lower() == f"sec-websocket-accept: {accept}".lower() for line in lines), head
        self.next_id = 0
        self.exceptions: List[str] = []

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        """Send a command and return its result (raises on an error reply)."""
        self.next_id += 1
        number = self.next_id
        self._send(0x1, json.dumps({"id": number, "method": method, "params": params}).encode())
        while True:
            message = json.loads(self._receive())
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: Dict[str, Any] = message.get("result", {})
                return result
            if message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))

    def close(self) -> None:
        try:
            self._send(0x8, b"")
        except OSError:
            pass
        self.file.close()
        self.sock.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, 0x80 | n])
        elif n < 1 << 16:
            head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        pad = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big") if n else b""
        self.sock.sendall(head + mask + masked)

    def _read(self, n: int) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise ConnectionError("the browser closed the websocket")
        return data

    def _receive(self) -> str:
        """The next whole text message."""
        parts: List[bytes] = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            mask = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("the browser closed the websocket")
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode in (0x1, 0x2, 0x0):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode("utf-8")


class Browser:
    """Headless Chromium with one page, driven through :class:`DevTools`."""

    def __init__(self, binary: str, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's is stale
        self.log = (profile / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=1400,1000", "--no-first-run",
             "--no-default-browser-check", "--disable-background-networking", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            port = self._devtools_port(profile / "DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
                targets = json.load(reply)
            page = next(t for t in targets if t.get("type") == "page")
            self.devtools = DevTools(page["webSocketDebuggerUrl"])
            self.devtools.call("Runtime.enable")
        except BaseException:
            self.process.kill()
            self.process.wait()
            self.log.close()
            raise

    def _devtools_port(self, path: Path) -> int:
        """Chromium writes the port it picked into the profile."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Chromium exited with status {self.process.returncode}")
            try:
                lines = path.read_text().splitlines()
                if len(lines) >= 2:  # the port, then the browser's websocket path: written whole
                    return int(lines[0])
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError("Chromium did not open its DevTools port")

    def close(self) -> None:
        self.devtools.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def goto(self, url: str) -> None:
        """Open the page and wait until its script has run."""
        self.devtools.exceptions.clear()
        self.devtools.call("Page.navigate", url=url)
        self.wait(f"location.href === {json.dumps(url)} && document.readyState === 'complete' && !!window.lpmView",
                  "the page to load")

    def eval(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (awaited if a promise)."""
        reply = self.devtools.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = DEADLINE) -> Any:
        """Poll until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.eval(expression)
            except RuntimeError as err:  # e.g. the page navigating away under us
                last = err
            if last and not isinstance(last, RuntimeError):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting {timeout} s for {what}: {expression} is {last!r}")
            time.sleep(0.05)

    def view(self) -> Dict[str, Any]:
        found: Dict[str, Any] = self.eval("window.lpmView")
        return found

    def mouse(self, kind: str, x: float, y: float) -> None:
        """A mouse event at viewport coordinates: "move" or "click"."""
        if kind == "move":
            self.devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
            return
        for event in ("mousePressed", "mouseReleased"):
            self.devtools.call("Input.dispatchMouseEvent", type=event, x=x, y=y, button="left", clickCount=1)

    def click(self, selector: str) -> None:
        """A real click in the middle of the element, scrolled into view."""
        box = self.eval(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: "center"}});
            const r = e.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2];
        }})()""")
        self.mouse("click", *box)

    def screenshot(self, path: Path) -> None:
        """The whole page as a PNG."""
        metrics = self.devtools.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.devtools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        path.write_bytes(base64.b64decode(shot["data"]))


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    peers.missing_peer("chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(chromium(), tmp_path_factory.mktemp("chromium"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def serve(browser: Browser, tmp_path: Path) -> Iterator[Callable[..., FakeApi]]:
    """Starts a fake API (arguments as :func:`fake_api.start`), opens the
    page on it; afterwards keeps a screenshot and fails on any uncaught
    exception in the page."""
    apis: List[FakeApi] = []

    def open_page(*args: Any, **kwargs: Any) -> FakeApi:
        api = start(*args, **kwargs)
        apis.append(api)
        browser.goto(api.url)
        return api

    try:
        yield open_page
        if apis:
            browser.screenshot(tmp_path / "page.png")
            assert (tmp_path / "page.png").stat().st_size > 10_000
        assert browser.devtools.exceptions == [], browser.devtools.exceptions
    finally:
        for api in apis:
            api.stop()


# -- the assets ------------------------------------------------------------------


def test_assets_are_served_from_the_package() -> None:
    for name, content_type in ASSETS.items():
        found = asset(name)
        assert found is not None and found[1] == content_type and len(found[0]) > 500
    assert asset("../__init__.py") is None and asset("__init__.py") is None and asset("") is None
    page = asset("index.html")
    assert page is not None and b'src="app.js"' in page[0] and b'href="app.css"' in page[0]


def test_assets_load_nothing_from_elsewhere() -> None:
    for name in ASSETS:
        found = asset(name)
        assert found is not None
        text = found[0].decode()
        for needle in ("http://", "https://", "//cdn", "@import", "url("):
            assert needle not in text.replace("http://www.w3.org/2000/svg", ""), (name, needle)


# -- the page --------------------------------------------------------------------


def test_updates_are_applied_and_the_charts_grow(browser: Browser, serve: Callable[..., FakeApi]) -> None:
    api = serve(FakeData(sources=3, threads=6), interval=0.2)
    browser.wait("lpmView.updates >= 2 && lpmView.points >= 2", "the first updates")
    first = browser.view()
    assert first["selected"] == 1 and first["mode"] == "stream"
    browser.wait(f"lpmView.points >= {first['points'] + 5}", "the heap series to grow")
    later = browser.view()
    assert later["updates"] > first["updates"]
    # The heap chart draws one point per update in its RSS path.
    points = browser.eval("document.querySelector('#heap-chart path').getAttribute('d').split('L').length")
    assert points >= first["points"] + 5
    assert browser.eval("document.querySelectorAll('#gc-chart path')[0].getAttribute('d').length") > 0
    lines = browser.eval("Array.from(document.querySelectorAll('#threads-chart path')).filter(p => p.getAttribute('d')).length")
    assert lines == 6  # every thread spends CPU
    sources = browser.eval("document.getElementById('sources').innerText")
    for n in (1, 2, 3):
        assert f"python-400{n}" in sources
    process = browser.eval("document.getElementById('process').innerText")
    assert "4001" in process and "app.py --workers 4 --token=<redacted>" in process
    loss = browser.eval("document.getElementById('loss').innerText")
    assert "events received" in loss
    assert "updated" in browser.eval("document.getElementById('status').textContent")
    assert api.stream_messages >= later["updates"]


def test_the_flame_graph_shows_zooms_and_follows_the_range(browser: Browser,
                                                           serve: Callable[..., FakeApi]) -> None:
    api = serve(FakeData(sources=1, threads=2, functions=5), interval=0.2)
    expected = ["all", "main", "serve", "handle_request", "parse_json", "render_page", "window_all",
                "Thread._bootstrap", "worker_loop", "Spinner.spin"]
    names = browser.wait(f"{json.dumps(expected)}.every(n => lpmView.flameNames.includes(n)) && lpmView.flameNames",
                         "the flame graph")
    assert "func_0" in names
    # Outermost frame on top: row 0 is "all", row 1 starts with its biggest
    # child, "main" (the fake gives it more samples than the worker thread).
    left, top = browser.eval("""(() => {
        const c = document.getElementById('flame'); c.scrollIntoView({block: "center"});
        const r = c.getBoundingClientRect(); return [r.left, r.top]; })()""")
    browser.mouse("move", left + 5, top + 18 * 1.5)
    tip = browser.wait("!document.getElementById('flame-tip').hidden && document.getElementById('flame-tip').textContent",
                       "the hover tip")
    assert "main" in tip and "/srv/app/app.py:1" in tip and "samples" in tip and "% of all" in tip
    browser.mouse("click", left + 5, top + 18 * 1.5)
    zoomed = browser.wait("lpmView.flameFocus === 'main' && lpmView.flameNames", "the zoom into main")
    assert "worker_loop" not in zoomed and "parse_json" in zoomed and "all" in zoomed
    assert browser.eval("document.getElementById('flame-reset').disabled") is False
    browser.click("#flame-reset")
    browser.wait("lpmView.flameFocus === 'all' && lpmView.flameNames.includes('worker_loop')", "the zoom reset")
    browser.eval("""(() => { const s = document.getElementById('flame-range');
        s.value = '10'; s.dispatchEvent(new Event('change')); })()""")
    browser.wait("lpmView.flameNames.includes('window_10') && !lpmView.flameNames.includes('window_all')",
                 "the last 10 s")
    asked = {r.query.get("seconds") for r in api.requested("GET", "/api/flame")}
    assert {"0", "10"} <= asked


def test_pause_and_resume_post_and_report(browser: Browser, serve: Callable[..., FakeApi]) -> None:
    api = serve(FakeData(sources=2), interval=0.2)
    browser.wait("lpmView.updates >= 1 && !document.getElementById('pause').disabled", "the buttons")
    browser.click("#pause")
    browser.wait("lpmView.paused === true", "the pause reply")
    assert [(r.path, r.query) for r in api.posts()] == [("/api/pause", {"source": "1"})]
    assert "paused" in browser.eval("document.getElementById('control-msg').textContent")
    browser.wait("document.querySelector('#sources li .badge').textContent === 'paused'", "the paused badge")
    browser.click("#resume")
    browser.wait("lpmView.paused === false && /resumed/.test(document.getElementById('control-msg').textContent)",
                 "the resume reply")
    assert [r.path for r in api.posts()] == ["/api/pause", "/api/resume"]
    with api.lock:
        api.control_error = (409, "source 1 (python-4001) is not a running leech: it takes no commands")
    browser.click("#pause")
    message = browser.wait("/not a running leech/.test(document.getElementById('control-msg').textContent)"
                           " && document.getElementById('control-msg').className", "the error")
    assert "bad" in message
    assert browser.view()["paused"] is False
    assert len(api.posts()) == 3


def test_clicking_a_source_selects_it(browser: Browser, serve: Callable[..., FakeApi]) -> None:
    api = serve(FakeData(sources=3), interval=0.2)
    browser.wait("document.querySelectorAll('#sources li:not([hidden])').length === 3", "the sources")
    browser.click("#sources li:nth-child(2) button")
    browser.wait("lpmView.selected === 2 && document.getElementById('source-title').textContent === 'python-4002'",
                 "the second source")
    assert browser.eval("location.hash") == "#source=2"
    deadline = time.monotonic() + DEADLINE
    while not any(r.query.get("source") == "2" for r in api.requested("GET", "/api/flame")):
        assert time.monotonic() < deadline, "no flame graph asked for source 2"
        time.sleep(0.05)
    # The heap of source 2 grows twice as fast: the chart shows its own figures.
    browser.wait("lpmView.points >= 2", "source 2's points")
    assert "pid\n4002\n" in browser.eval("document.getElementById('process').innerText")


def test_the_page_polls_when_the_stream_fails(browser: Browser, serve: Callable[..., FakeApi]) -> None:
    api = serve(FakeData(sources=2), interval=0.2, stream=False)
    browser.wait("lpmView.mode === 'poll' && lpmView.updates >= 3", "updates by polling")
    first = browser.view()["points"]
    browser.wait(f"lpmView.points > {first}", "the heap series to grow by polling")
    states = api.requested("GET", "/api/state")
    assert len(states) >= 3 and {r.query["source"] for r in states} == {"1"}
    assert "(polling)" in browser.eval("document.getElementById('status').textContent")


def test_series_are_rings_of_300_points(browser: Browser, serve: Callable[..., FakeApi]) -> None:
    serve(FakeData(sources=1, threads=3, markers=5), interval=0.01)
    browser.wait("lpmView.updates >= 330", "330 updates", timeout=30)
    assert browser.view()["points"] == 300
    assert browser.eval("document.querySelector('#heap-chart path').getAttribute('d').split('L').length") == 300


def test_twenty_sources_of_a_thousand_threads_stay_bounded(browser: Browser,
                                                          serve: Callable[..., FakeApi]) -> None:
    # Started 50 s into the programs' runs, so every list is full from the first update.
    serve(FakeData(sources=20, threads=1000, functions=300, markers=100, tick=50), interval=0.4)
    count = "document.getElementsByTagName('*').length"
    start_updates = browser.wait("lpmView.updates >= 3 && lpmView.flameNames.length > 0 && lpmView.updates",
                                 "the first updates", timeout=30)
    early = browser.eval(count)
    browser.wait(f"lpmView.updates >= {start_updates + 4}", "four more updates", timeout=30)
    late = browser.eval(count)
    assert late == early, "the page made DOM nodes for updates that brought nothing new"
    assert late < 3000, late
    visible = "(sel) => Array.from(document.querySelectorAll(sel)).filter(e => !e.hidden).length"
    assert browser.eval(f"({visible})('#sources li')") == 20
    assert browser.eval(f"({visible})('#threads tbody tr')") == 20
    assert browser.eval(f"({visible})('#functions tbody tr')") == 50
    assert browser.eval(f"({visible})('#threads-legend .item')") == 20
    assert browser.eval("Array.from(document.querySelectorAll('#threads-chart path'))"
                        ".filter(p => p.getAttribute('d')).length") == 20
    assert browser.eval("document.querySelectorAll('#markers li').length") == 20
    view = browser.view()
    assert 0 < len(view["flameNames"]) <= 400
    assert "window_all" in view["flameNames"]
