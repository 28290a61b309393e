"""Exports opened by the real tools: a speedscope file validated against the
schema the npm package ``speedscope`` ships, then loaded by that package's own
viewer in headless Chromium (the sandwich view's table must list the sample
program's functions; a screenshot is kept beside the test's files).

The npm packages are installed by the test run into a cache directory
(``$XDG_CACHE_HOME/lpm-tests/npm``); Chromium is Debian's, which .ci/run
installs.  Without them the tests skip, or fail under LPM_REQUIRE_PEERS=1.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path
from typing import Iterator

import pytest

from lpm.eventlog import read_events
from lpm.views import export

from ..ghc import peers
from ..web.browser import Browser, chromium

SPEEDSCOPE = "speedscope@1.25.0"
AJV = "ajv@8"

VALIDATE = r"""
const fs = require("fs");
const Ajv = require("ajv");
const schema = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const data = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const ajv = new Ajv({strict: false, allErrors: true});
const validate = ajv.compile(schema);
if (!validate(data)) { console.error(JSON.stringify(validate.errors, null, 1)); process.exit(1); }
console.log("valid");
"""


@pytest.fixture(scope="module")
def npm_dir() -> Path:
    npm = shutil.which("npm")
    if npm is None:
        peers.missing_peer("npm is not installed")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lpm-tests" / "npm"
    marker = cache / "node_modules" / "speedscope" / "dist" / "release" / "file-format-schema.json"
    if not marker.exists() or not (cache / "node_modules" / "ajv").exists():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", SPEEDSCOPE, AJV],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            peers.missing_peer(f"npm install {SPEEDSCOPE} {AJV} failed: {done.stderr.strip()[-300:]}")
    return cache


def test_speedscope_file_validates_against_the_packages_schema(npm_dir: Path, stacks_log: bytes, tmp_path: Path) -> None:
    profile = tmp_path / "stacks.speedscope.json"
    profile.write_text(export.speedscope(read_events(stacks_log), name="stacks"))
    script = tmp_path / "validate.js"
    script.write_text(VALIDATE)
    schema = npm_dir / "node_modules" / "speedscope" / "dist" / "release" / "file-format-schema.json"
    done = subprocess.run(["node", str(script), str(schema), str(profile)], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, NODE_PATH=str(npm_dir / "node_modules")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "valid"


@pytest.fixture
def served(npm_dir: Path, stacks_log: bytes, tmp_path: Path) -> Iterator[str]:
    """speedscope's viewer and a profile, on a loopback HTTP server."""
    site = tmp_path / "site"
    shutil.copytree(npm_dir / "node_modules" / "speedscope" / "dist" / "release", site)
    (site / "stacks.json").write_text(export.speedscope(read_events(stacks_log), name="stacks"))
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass




def test_speedscope_renders_the_profile_in_chromium(served: str, tmp_path: Path) -> None:
    url = f"{served}/index.html#profileURL={urllib.parse.quote(served + '/stacks.json')}&view=sandwich"
    # The first profile is the main thread's (1 of 3 threads): its functions
    # are listed by the sandwich view, with the thread's name in the title.
    names = ["MainThread", "(1/3)", "main_spin", "main_outer"]
    browser = Browser(chromium(), tmp_path / "chromium")
    try:
        browser.devtools.call("Page.navigate", url=url)
        # speedscope fills the table once it has measured the page, after the
        # load: a page dumped at once could show the title and no rows yet.
        listed = f"{json.dumps(names)}.filter(n => document.documentElement.outerHTML.includes(n))"
        try:
            browser.wait(f"{listed}.length === {len(names)}", "speedscope's sandwich table", timeout=60)
        except AssertionError:
            pass  # the assertions below say which are missing
        found = browser.eval(listed)
        (tmp_path / "speedscope.html").write_text(browser.eval("document.documentElement.outerHTML"))
        shot = tmp_path / "speedscope.png"
        browser.screenshot(shot)
    finally:
        browser.close()
    assert shot.stat().st_size > 10_000, "Chromium took no screenshot"
    for name in names:
        assert name in found, f"{name} is not in speedscope's page"
