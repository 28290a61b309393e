"""The web view in real headless Chromium, against the fake API
(:mod:`tests.web.fake_api`).

Chromium runs once per module (:mod:`tests.web.browser`).  The tests read
what the page says about itself (``window.lpmView``, documented in
``lpm/web/app.js``) and its DOM, click and hover, and keep a screenshot of
each page in the test's tmp_path.  Every wait polls with a generous deadline; no sleep
is a timing assertion.  Without Chromium the tests skip, or fail under
LPM_REQUIRE_PEERS=1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

from lpm.web import ASSETS, asset

from .browser import DEADLINE, Browser, browser
from .fake_api import FakeApi, FakeData, start

__all__ = ["browser"]  # the fixture, imported for the tests here



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


def flame_row(browser: Browser, row: int) -> tuple[float, float]:
    """A point in the flame graph's row ``row`` (18 px each), read once the
    canvas is in the same place twice running."""
    where = """(() => { const c = document.getElementById('flame'); c.scrollIntoView({block: "center"});
        const r = c.getBoundingClientRect(); return [r.left, r.top, r.height]; })()"""
    deadline = time.monotonic() + DEADLINE
    last = browser.eval(where)
    while True:
        time.sleep(0.1)
        here = browser.eval(where)
        if here == last:
            return here[0] + 5, here[1] + 18 * (row + 0.5)
        assert time.monotonic() < deadline, f"the flame graph was still moving after {DEADLINE} s"
        last = here


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
    # The page reflows every refresh, so a point read a moment before the
    # mouse gets there can be a row off on a loaded machine: each try reads it
    # afresh once the canvas stands still.
    tip = ""
    for _ in range(5):
        browser.mouse("move", *flame_row(browser, 1))
        tip = browser.wait("!document.getElementById('flame-tip').hidden"
                           " && document.getElementById('flame-tip').textContent", "the hover tip")
        if tip.startswith("main"):
            break
    assert "main" in tip and "/srv/app/app.py:1" in tip and "samples" in tip and "% of all" in tip
    for _ in range(5):
        browser.mouse("click", *flame_row(browser, 1))
        if browser.wait("lpmView.flameFocus", "a zoom") == "main":
            break
        browser.click("#flame-reset")  # a row off: undo it, try again
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
