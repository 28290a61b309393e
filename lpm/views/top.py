"""``lpm client top``: a live terminal view of the server's sources.

:class:`TopView` is the view without a terminal: snapshots in, lines out, keys
change what it shows; :func:`run_curses` and :func:`run_plain` drive it.
The plain mode (stdout not a terminal) prints the view every interval.

Keys: ``s`` sort functions by total or own samples; ``/`` filter functions
(Enter ends, an empty filter clears); ``n``/``p`` (or Tab) next/previous
source; space freezes the display; ``P`` pauses or resumes the selected
program's leech; ``q`` quits.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

from ..client.model import Snapshot

SORTS = ("total", "own")


class TopView:
    def __init__(self) -> None:
        self.snapshots: Dict[int, Snapshot] = {}
        self.names: Dict[int, str] = {}
        self.selected: Optional[int] = None
        self.sort = "total"
        self.filter = ""
        self.editing: Optional[str] = None  # the filter being typed
        self.frozen = False
        self.paused: Dict[int, bool] = {}
        self.status = ""

    # -- input ------------------------------------------------------------------

    def update(self, snapshot: Snapshot) -> None:
        if self.frozen:
            return
        self.snapshots[snapshot.source] = snapshot
        self.names[snapshot.source] = snapshot.name
        if self.selected is None:
            self.selected = snapshot.source

    def key(self, key: str, pause: Optional[Callable[[int, bool], str]] = None) -> bool:
        """Handle a key; False to quit."""
        if self.editing is not None:
            if key in ("\n", "\r"):
                self.filter, self.editing = self.editing, None
            elif key in ("\x1b",):
                self.editing = None
            elif key in ("\x7f", "\b", "KEY_BACKSPACE"):
                self.editing = self.editing[:-1]
            elif len(key) == 1 and key.isprintable():
                self.editing += key
            return True
        if key == "q":
            return False
        if key == "s":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif key == "/":
            self.editing = ""
        elif key in ("n", "\t", "p", "KEY_BTAB"):
            ids = sorted(self.snapshots)
            if ids:
                at = ids.index(self.selected) if self.selected in ids else 0
                step = -1 if key in ("p", "KEY_BTAB") else 1
                self.selected = ids[(at + step) % len(ids)]
        elif key == " ":
            self.frozen = not self.frozen
        elif key == "P" and self.selected is not None and pause is not None:
            now_paused = not self.paused.get(self.selected, False)
            self.status = pause(self.selected, now_paused)
            self.paused[self.selected] = now_paused
        return True

    # -- output ------------------------------------------------------------------

    def lines(self, width: int = 100, height: int = 40) -> List[str]:
        out: List[str] = []
        tabs = " ".join(
            f"[{sid}:{self.names[sid]}]" if sid == self.selected else f" {sid}:{self.names[sid]} "
            for sid in sorted(self.snapshots)
        )
        flags = [f"sort {self.sort}"]
        if self.filter:
            flags.append(f"filter '{self.filter}'")
        if self.frozen:
            flags.append("FROZEN")
        out.append(f"lpm top  {tabs or '(no sources yet)'}")
        out.append("  ".join(flags) + "   keys: s sort  / filter  n/p source  space freeze  P pause  q quit")
        if self.editing is not None:
            out.append(f"filter: {self.editing}_")
        elif self.status:
            out.append(self.status)
        s = self.snapshots.get(self.selected) if self.selected is not None else None
        if s is None:
            return [line[:width] for line in out][:height]
        program = s.program
        out.append("")
        out.append(f"{s.name}  pid {program.get('pid', '-')}  {program.get('rts', '')}  "
                   f"{s.events:,} events  {s.samples:,} samples")
        gc = s.gc
        heap = s.heap
        rss = heap.get("rss")
        out.append(f"GC {gc.collections:,} {dict(sorted(gc.by_generation.items()))}  pause last "
                   f"{_ms(gc.last_pause_ns)} max {_ms(gc.max_pause_ns)}  "
                   f"heap {'-' if rss is None else f'{rss / 2**20:.1f} MiB RSS'}  "
                   f"loss {s.loss.reported_lost} reported, {s.loss.unreported} unreported")
        aio = s.raw.get("asyncio") or {}
        if aio.get("created"):
            lag = aio.get("lag_ms")
            out.append(f"asyncio {aio['open']:,} open  {aio['done']:,} done  {aio['failed']:,} failed  "
                       f"{aio['cancelled']:,} cancelled  loop lag {'-' if lag is None else f'{lag:.1f} ms'}")
        if s.traced_calls:
            out.append(f"traced {s.traced_calls:,} calls; busiest: " + ", ".join(
                f"{fn.name} {fn.total_ns / 1e6:.1f} ms" for fn in s.traced[:3]))
        allocs = s.allocations.get("threads") or []
        if allocs:
            out.append(f"allocated {sum(t['allocated'] for t in allocs) / 1e6:,.1f} MB, freed "
                       f"{sum(t['freed'] for t in allocs) / 1e6:,.1f} MB")
        out.append("")
        out.append(f"{'THREAD':<7}{'NAME':<28}{'STATUS':<14}{'CPU s':>8}")
        for t in s.threads[: max(3, height // 3)]:
            cpu = "-" if t.cpu_ns is None else f"{t.cpu_ns / 1e9:.2f}"
            out.append(f"{t.id:<7}{t.label[:27]:<28}{t.status[:13]:<14}{cpu:>8}")
        out.append("")
        out.append(f"{'TOTAL':>7} {'OWN':>7}  FUNCTION")
        functions = [f for f in s.functions if self.filter.lower() in f"{f.name} {f.file}".lower()]
        functions.sort(key=lambda f: (f.total, f.own) if self.sort == "total" else (f.own, f.total), reverse=True)
        for f in functions[: max(0, height - len(out) - 3)]:
            out.append(f"{f.total:>7} {f.own:>7}  {f.name}  {f.file}:{f.line}")
        if s.markers:
            out.append(f"last marker: {s.markers[-1][1]}")
        return [line[:width] for line in out][:height]


def _ms(ns: Optional[int]) -> str:
    return "-" if ns is None else f"{ns / 1e6:.2f} ms"


def run_plain(view: TopView, refresh: Callable[[], None], interval: float, rounds: Optional[int], write: Callable[[str], None]) -> None:
    """Print the view every ``interval`` seconds (``rounds`` times, or forever)."""
    n = 0
    while rounds is None or n < rounds:
        refresh()
        write("\n".join(view.lines(120, 60)) + "\n\n")
        n += 1
        if rounds is None or n < rounds:
            time.sleep(interval)


def run_curses(view: TopView, refresh: Callable[[], None], interval: float,
               pause: Callable[[int, bool], str]) -> None:
    import curses

    def main(screen: "curses.window") -> None:
        curses.curs_set(0)
        screen.timeout(100)
        next_refresh = 0.0
        while True:
            now = time.monotonic()
            if now >= next_refresh:
                refresh()
                next_refresh = now + interval
            height, width = screen.getmaxyx()
            screen.erase()
            for y, line in enumerate(view.lines(width - 1, height)):
                screen.addstr(y, 0, line)
            screen.refresh()
            try:
                key = screen.getkey()
            except curses.error:
                continue
            if not view.key(key, pause):
                return

    curses.wrapper(main)
