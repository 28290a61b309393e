"""Headless Chromium driven over its DevTools protocol, for the web view's tests.

Chromium (Debian's, which .ci/run installs) runs once per module with
``--remote-debugging-port``; :class:`DevTools` is a small client of its
DevTools protocol over a websocket written with the standard library.  Tests
read what the page says about itself (``window.lpmView``, documented in
``lpm/web/app.js``) and its DOM with ``Runtime.evaluate``, click and hover
with ``Input.dispatchMouseEvent``, and keep screenshots.  Without Chromium
the tests skip, or fail under LPM_REQUIRE_PEERS=1.
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
from typing import Any, Dict, Iterator, List

import pytest

from ..ghc import peers

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
        keep(path)


#: Where screenshots are kept after the run (pytest's own temporary
#: directories go after three runs): ``$LPM_ARTIFACTS``, else ``artifacts/``
#: in the checkout, as ``screenshots/<test's directory>-<name>``.
ARTIFACTS = Path(os.environ.get("LPM_ARTIFACTS") or Path(__file__).resolve().parents[2] / "artifacts")


def keep(path: Path) -> Path:
    """A copy of the test's file ``path`` among the artifacts."""
    kept = ARTIFACTS / "screenshots" / f"{path.parent.name}-{path.name}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, kept)
    return kept


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


