"""The web view in headless Chromium against a real server watching a live
sample program (``lpm.cli.sample_app`` under ``lpm run``): the charts gain
points, the flame graph names the program's functions, pause stops the
stream and resume brings it back, all as the page itself sees it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from lpm.eventlog import events as ev

from ..leech.conftest import native_available
from ..leech.helpers import decode, recorded
from ..server.wire import PATIENCE, PROGRAMS, start_server, web_address
from .browser import DEADLINE, Browser, browser

__all__ = ["browser"]  # the fixture


HEAP_POINTS = "document.querySelector('#heap-chart path').getAttribute('d').split('L').length"
THREAD_LINES = "Array.from(document.querySelectorAll('#threads-chart path')).filter(p => p.getAttribute('d')).length"
MARKER_LINES = "document.querySelectorAll('#heap-chart .markers line[visibility=visible]').length"


@contextlib.contextmanager
def page_of(browser: Browser, tmp_path: Path, *run: str) -> Iterator[Browser]:
    """The page of a server watching ``lpm run RUN...``; no script errors in
    it when done."""
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    server, _ = start_server(tmp_path, "--dir", str(lpm_dir), "--http", "127.0.0.1:0")
    program = subprocess.Popen(
        [sys.executable, "-m", "lpm", "run", *run],
        env=dict(os.environ, LPM_DIR=str(lpm_dir)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        host, port = web_address(tmp_path)
        browser.goto(f"http://{host}:{port}/")
        yield browser
        assert browser.devtools.exceptions == [], browser.devtools.exceptions
    finally:
        program.terminate()
        program.wait(PATIENCE)
        server.terminate()
        server.wait(PATIENCE)


@pytest.fixture
def live_page(browser: Browser, tmp_path: Path) -> Iterator[Tuple[Browser, Path]]:
    with page_of(browser, tmp_path, "-m", "lpm.cli.sample_app", "--seconds", "60") as page:
        yield page, tmp_path


def test_the_page_follows_a_live_program_and_pauses_it(live_page: Tuple[Browser, Path]) -> None:
    page, tmp_path = live_page
    page.wait("window.lpmView.selected !== null && window.lpmView.updates >= 2", "the first updates")
    first = page.view()["points"]
    page.wait(f"window.lpmView.points >= {first + 3}", "the heap chart to gain points", timeout=PATIENCE)
    page.wait("['crunch', 'parse', 'worker'].every(n => window.lpmView.flameNames.includes(n))",
              "the sample program's functions in the flame graph", timeout=PATIENCE)
    # Its "job" spans drawn on the counters chart's time axis.
    page.wait("window.lpmView.spans > 5 && document.querySelectorAll('#counters-chart .spans rect[visibility=visible]')"
              ".length > 5", "the program's spans on the time axis")
    # Its markers drawn as lines on the charts' shared time axis.
    page.wait(f"{MARKER_LINES} > 0", "the program's markers on the heap chart")
    page.screenshot(tmp_path / "live.png")

    page.click("#pause")
    page.wait("window.lpmView.paused === true", "the pause reply")
    # What the leech had buffered drains within its flush interval and the
    # server's update; after that the count holds.
    time.sleep(1.5)
    held = page.view()["events"]
    updates = page.view()["updates"]
    page.wait(f"window.lpmView.updates >= {updates + 2}", "two more updates while paused")
    assert page.view()["events"] == held, "no events reach the page while the program is paused"
    page.screenshot(tmp_path / "paused.png")

    page.click("#resume")
    page.wait("window.lpmView.paused === false", "the resume reply")
    page.wait(f"window.lpmView.events > {held}", "events again after resume", timeout=DEADLINE)
    assert (tmp_path / "live.png").stat().st_size > 10_000


def test_the_same_page_shows_a_recording(browser: Browser, tmp_path: Path) -> None:
    """A recording served as a source (``lpm server --file``) fills the page
    as a live program does, and pause is refused: nobody is there to pause."""
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    recording = tmp_path / "stacks.eventlog"
    recording.write_bytes(recorded("stacks.py", ["2"], lpm_dir, "auto",
                                   ["--sample-rate", "200", "--heap-interval", "0.1"]))
    # Every heap figure the program wrote: about 20, fewer when its two
    # spinning threads keep the monitor from the GIL on a loaded machine.
    figures = len(decode(recording.read_bytes()).of_type(ev.PyHeap))
    assert figures >= 5
    server, _ = start_server(tmp_path, "--no-discover", "--file", str(recording), "--http", "127.0.0.1:0")
    try:
        host, port = web_address(tmp_path)
        browser.goto(f"http://{host}:{port}/")
        browser.wait("window.lpmView.selected !== null && window.lpmView.updates >= 1", "the recording's source")
        qualified = "Spinner.spin" if sys.version_info >= (3, 11) else "spin"
        browser.wait(f"['{qualified}', 'worker_outer', 'main_spin', 'sleeper'].every("
                     "n => window.lpmView.flameNames.includes(n))", "the recording's functions in the flame graph")
        assert browser.view()["events"] > 100
        # The server read the file whole before the page opened: the charts
        # come from its history of the run (/api/history), every heap figure
        # of it, and a CPU line per busy thread.
        browser.wait("window.lpmView.seeded > 0", "the recording's history")
        assert browser.view()["points"] >= figures
        assert browser.eval(HEAP_POINTS) >= figures
        assert browser.eval(THREAD_LINES) >= 2
        collections = int(browser.eval("(document.getElementById('gc-summary').textContent.match(/^[0-9,]+/) "
                                        "|| ['0'])[0].replace(/,/g, '')"))
        if collections:  # each pause at its time
            assert browser.eval("document.querySelector('#gc-chart path').getAttribute('d') || ''") != ""
        assert browser.eval("document.querySelector('#pause').disabled") is True, "an ended source cannot be paused"
        browser.screenshot(tmp_path / "recording.png")
        assert browser.devtools.exceptions == [], browser.devtools.exceptions
    finally:
        server.terminate()
        server.wait(PATIENCE)


def test_the_deep_instrumentation_panels(browser: Browser, tmp_path: Path) -> None:
    """A program traced, with its asyncio tasks and allocations tracked: the
    page shows its traced functions, its tasks and its allocations."""
    native = native_available()
    options = ["--trace", "--asyncio"] + (["--alloc"] if native else [])
    with page_of(browser, tmp_path, *options, str(PROGRAMS / "deep_app.py"), "60"):
        browser.wait("!document.getElementById('traced-panel').hidden && [...document.querySelectorAll("
                     "'#traced tbody tr:not([hidden]) td:first-child')].some(td => td.textContent === 'parse')",
                     "parse() among the traced functions", timeout=PATIENCE)
        browser.wait("!document.getElementById('asyncio-panel').hidden && [...document.querySelectorAll("
                     "'#asyncio-tasks tr:not([hidden])')].some(tr => tr.textContent.includes('request-'))",
                     "finished request tasks", timeout=PATIENCE)
        if native:
            browser.wait("!document.getElementById('allocs-panel').hidden && [...document.querySelectorAll("
                         "'#allocs tbody tr:not([hidden])')].some(tr => tr.textContent.includes('MainThread'))",
                         "the main thread's allocations", timeout=PATIENCE)
        browser.screenshot(tmp_path / "deep.png")
