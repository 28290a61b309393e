"""The GHC peers: building the Haskell programs, running them, reading results.

The programs live in ``tests/haskell``.  Each is compiled once per source
hash: binaries are built in a per-session directory (``-outputdir`` keeps
``.o`` and ``.hi`` files out of the repository) and then kept in a cache
under the system temporary directory, so a second session starts at once.

``EventCounts`` is the checker: built from the ghc-events library, it prints
how many events of each ghc-events constructor a file holds.  Everything here
compares lpm against it by name; :func:`ghc_events_name` says which name
ghc-events gives to each lpm event id.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, NoReturn, Optional, Tuple, Union

import pytest

from lpm.eventlog import (
    EVENT_TYPES,
    NEED_DATA,
    EndOfStream,
    Event,
    EventBlock,
    EventLogReader,
    Header,
    MalformedEvent,
    UnknownEvent,
)
from lpm.eventlog.format import BLOCK_MARKER_ID, LPM_ID_FIRST, LPM_ID_LAST
from lpm.eventlog.reader import Item

REPO_ROOT = Path(__file__).resolve().parents[2]
HASKELL_DIR = REPO_ROOT / "tests" / "haskell"
GHC_FLAGS = ("-O", "-threaded", "-eventlog", "-rtsopts")
CHECKER = "EventCounts"
PROGRAMS = (CHECKER, "Threads", "ParGC", "HeapProf", "Messages", "Forever")

#: The environment for every peer process: GHC programs print non-ASCII text
#: only under a UTF-8 locale (``ghc-events show`` dies with "invalid
#: character" under C), and ``python -m lpm`` must find this checkout.
PEER_ENV: Dict[str, str] = {
    **os.environ,
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "PYTHONUTF8": "1",
    "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
}

#: GHC event ids lpm registers but ghc-events 0.17 has no constructor for, so
#: it reports them as ``UnknownEvent``: EVENT_HACK_BUG_T9003 (59) is declared
#: by every GHC since 7.8.3 and lpm calls it ``HackBugT9003``, but ghc-events
#: has no parser for it.  (GHC itself never posts it in these programs.)
GHC_EVENTS_UNKNOWN = frozenset({59})


def peers_required() -> bool:
    """CI sets LPM_REQUIRE_PEERS=1: a missing peer is then a failure, not a skip."""
    return os.environ.get("LPM_REQUIRE_PEERS") == "1"


def missing_peer(reason: str) -> NoReturn:
    if peers_required():
        pytest.fail(f"{reason}, and LPM_REQUIRE_PEERS=1 says the GHC peers must run "
                    "(apt-get install ghc libghc-ghc-events-dev)", pytrace=False)
    pytest.skip(reason)


def ghc_events_name(type_id: int) -> str:
    """The name the checker prints for events of lpm's id ``type_id``."""
    cls = EVENT_TYPES.get(type_id)
    if cls is None or LPM_ID_FIRST <= type_id <= LPM_ID_LAST or type_id in GHC_EVENTS_UNKNOWN:
        return f"Unknown:{type_id}"
    return cls.__name__


# -- building -----------------------------------------------------------------


def cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"lpm-ghc-peers-{os.getuid()}"


def _source_key(ghc: str, version: str, source: Path) -> str:
    h = hashlib.sha256()
    for part in (os.path.realpath(ghc), version, *GHC_FLAGS):
        h.update(part.encode() + b"\0")
    h.update(source.read_bytes())
    return h.hexdigest()[:24]


def build_programs(ghc: str, build_dir: Path, cache: Path) -> Dict[str, Path]:
    """Compile every program not already cached, all at once; their paths by name."""
    version = subprocess.run([ghc, "--numeric-version"], capture_output=True, text=True, check=True).stdout.strip()
    built: Dict[str, Path] = {}
    jobs: List[Tuple[str, Path, Path, "subprocess.Popen[bytes]"]] = []
    for name in PROGRAMS:
        source = HASKELL_DIR / f"{name}.hs"
        cached = cache / f"{name}-{_source_key(ghc, version, source)}"
        if os.access(cached, os.X_OK):
            built[name] = cached
            continue
        work = build_dir / name
        work.mkdir(parents=True, exist_ok=True)
        exe = work / name
        argv = [ghc, *GHC_FLAGS, "-outputdir", str(work / "obj"), "-o", str(exe), str(source)]
        proc = subprocess.Popen(argv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        jobs.append((name, exe, cached, proc))
    failures: List[str] = []
    no_ghc_events = False
    for name, exe, cached, proc in jobs:
        output = proc.communicate()[0].decode("utf-8", "replace")
        if proc.returncode != 0:
            if name == CHECKER and "GHC.RTS.Events" in output and "Could not find module" in output:
                no_ghc_events = True
            failures.append(f"ghc {name}.hs failed ({proc.returncode}):\n{output}")
            continue
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        shutil.copy2(exe, tmp)
        os.replace(tmp, cached)
        built[name] = cached
    if no_ghc_events:
        missing_peer("the ghc-events Haskell library is not installed")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    return built


# -- running ------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One run of a program: program arguments, then RTS options after -l -ol."""

    name: str
    program: str
    args: Tuple[str, ...] = ()
    rts: Tuple[str, ...] = ()


#: Binary message of ``Messages all-bytes`` and of ``Messages printable``.
ALL_BYTES_PAYLOAD = bytes(range(256)) + "✓".encode()
PRINTABLE_PAYLOAD = bytes(range(128)) + "é".encode()

RUNS = (
    RunSpec("threads", "Threads", rts=("-N2",)),
    RunSpec("pargc", "ParGC", rts=("-N2",)),
    # The non-moving collector; -ln adds its census and log messages.
    RunSpec("nonmoving", "ParGC", rts=("-ln", "-xn", "-N2")),
    RunSpec("heap", "HeapProf", rts=("-hT", "-i0")),
    RunSpec("messages", "Messages", args=("all-bytes", "ärg ✓", "two words")),
    RunSpec("messages-printable", "Messages", args=("printable",)),
)
LOG_NAMES = tuple(spec.name for spec in RUNS)
#: Logs whose ``ghc-events show`` output is readable: the all-bytes binary
#: message makes ghc-events 0.17 stop with "Cannot decode byte".
SHOWABLE_LOGS = ("threads", "pargc", "nonmoving", "heap", "messages-printable")


@dataclass(frozen=True)
class GhcLog:
    """An eventlog a GHC program wrote; ``argv`` is its full command line."""

    name: str
    path: Path
    argv: Tuple[str, ...]

    def data(self) -> bytes:
        return self.path.read_bytes()


def run_programs(binaries: Dict[str, Path], out_dir: Path) -> Dict[str, GhcLog]:
    """Run every program of :data:`RUNS` at once, each writing its own eventlog."""
    started: List[Tuple[GhcLog, "subprocess.Popen[bytes]"]] = []
    for spec in RUNS:
        path = out_dir / f"{spec.name}.eventlog"
        argv = (str(binaries[spec.program]), *spec.args, "+RTS", "-l", f"-ol{path}", *spec.rts, "-RTS")
        # The working directory collects what else the RTS writes (-hT's .hp file).
        cwd = out_dir / spec.name
        cwd.mkdir()
        proc = subprocess.Popen(argv, cwd=cwd, env=PEER_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append((GhcLog(spec.name, path, argv), proc))
    logs: Dict[str, GhcLog] = {}
    failures: List[str] = []
    for log, proc in started:
        output = proc.communicate()[0].decode("utf-8", "replace")
        if proc.returncode != 0:
            failures.append(f"{' '.join(log.argv)} exited with {proc.returncode}:\n{output}")
        logs[log.name] = log
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    return logs


@dataclass(frozen=True)
class KilledLog:
    """The eventlog of ``Forever``, killed with SIGTERM once the file had grown."""

    path: Path
    argv: Tuple[str, ...]
    returncode: int
    size_at_kill: int

    def data(self) -> bytes:
        return self.path.read_bytes()


#: Forever's eventlog must hold more than its header (2,688 bytes on 9.0.2)
#: before it is killed: then at least part of a capability buffer is written.
KILL_AFTER_BYTES = 64 * 1024


def run_until_killed(binary: Path, out_dir: Path) -> KilledLog:
    path = out_dir / "killed.eventlog"
    argv = (str(binary), "+RTS", "-l", f"-ol{path}", "-RTS")
    proc = subprocess.Popen(argv, cwd=out_dir, env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        size = 0
        while proc.poll() is None and size <= KILL_AFTER_BYTES:
            time.sleep(0.002)
            size = path.stat().st_size if path.exists() else 0
        if proc.poll() is not None:
            err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
            pytest.fail(f"Forever ended by itself ({proc.returncode}) with a {size}-byte eventlog "
                        f"before it could be killed: {err}", pytrace=False)
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    return KilledLog(path, argv, returncode, size)


#: Every log the tests read: the GHC programs' and the killed program's.
ALL_LOGS = (*LOG_NAMES, "killed")


def log_path(request: pytest.FixtureRequest, name: str) -> Path:
    """The path of log ``name``, starting only the fixture that makes it."""
    if name == "killed":
        killed: KilledLog = request.getfixturevalue("killed_log")
        return killed.path
    logs: Dict[str, GhcLog] = request.getfixturevalue("ghc_logs")
    return logs[name].path


#: STOP_THREAD statuses ghc-events 0.17 names differently from the RTS: the
#: 9.0.2 RTS writes why_blocked + 6 (rts/Constants.h: BlockedOnCCall 10,
#: BlockedOnCCall_Interruptible 11, BlockedOnMsgThrowTo 12, ThreadMigrating 13),
#: and lpm follows it; ghc-events shows 16 as "blocked in throwTo", 17 as
#: "thread migrating", 18 as "waiting for data to be globalised", 19 as "No
#: stop thread status"; and 0 as "No stop thread status" where lpm says "no status".
GHC_EVENTS_STOP_STATUS_DIFFERS = frozenset({0, 16, 17, 18, 19})


# -- the checker ----------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Events per ghc-events name (block markers excluded) and header size."""

    header_types: int
    by_name: Dict[str, int]


def run_checker(checker: Path, path: Path) -> Counts:
    """What ghc-events makes of ``path``; the test fails if it cannot read it."""
    proc = subprocess.run([str(checker), str(path)], capture_output=True, env=PEER_ENV)
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise AssertionError(f"ghc-events could not read {path} (exit {proc.returncode}): {stderr.strip()}")
    header_types: Optional[int] = None
    by_name: Dict[str, int] = {}
    for line in stdout.splitlines():
        name, count = line.split(" ")
        if name == "header_types":
            header_types = int(count)
        else:
            by_name[name] = int(count)
    assert header_types is not None, f"checker printed no header_types line: {stdout!r}"
    return Counts(header_types, by_name)


# -- lpm's side -----------------------------------------------------------------


def by_name(by_id: Dict[int, int]) -> Dict[str, int]:
    """Counts per lpm id as counts per ghc-events name, block markers dropped."""
    out: Counter[str] = Counter()
    for type_id, n in by_id.items():
        if type_id != BLOCK_MARKER_ID:
            out[ghc_events_name(type_id)] += n
    return dict(out)


def type_id_of(ev: Event) -> int:
    if isinstance(ev, (UnknownEvent, MalformedEvent)):
        return ev.type_id
    return ev.ID


def lpm_fast_counts(data: bytes) -> Tuple[Counts, EndOfStream]:
    """lpm's ``count`` fast path over the whole of ``data``."""
    reader = EventLogReader()
    reader.feed(data)
    reader.close()
    by_id: Dict[int, int] = {}
    header_types = 0
    end: Optional[EndOfStream] = None
    while True:
        item = reader.count(by_id)
        if item is NEED_DATA:
            break
        if isinstance(item, Header):
            header_types = len(item.types)
        elif isinstance(item, EndOfStream):
            end = item
    assert end is not None
    return Counts(header_types, by_name(by_id)), end


def decoded_counts(items: Iterable[Union[Item, Event]]) -> Counts:
    by_id: Counter[int] = Counter()
    header_types = 0
    for item in items:
        if isinstance(item, Header):
            header_types = len(item.types)
        elif isinstance(item, Event):
            by_id[type_id_of(item)] += 1
    return Counts(header_types, by_name(dict(by_id)))


def decode_in_chunks(data: bytes, sizes: Iterable[int]) -> List[Union[Item, Event]]:
    """Feed ``data`` in pieces of the given sizes (the rest in one piece), draining
    the reader after each."""
    reader = EventLogReader()
    out: List[Union[Item, Event]] = []
    pos = 0
    for size in sizes:
        if pos >= len(data):
            break
        reader.feed(data[pos : pos + size])
        pos += size
        out.extend(reader.events())
    if pos < len(data):
        reader.feed(data[pos:])
        out.extend(reader.events())
    reader.close()
    out.extend(reader.events())
    return out


def events_of(items: Iterable[Union[Item, Event]]) -> List[Event]:
    return [item for item in items if isinstance(item, Event) and not isinstance(item, EventBlock)]


def lpm_command(*args: str) -> "subprocess.CompletedProcess[bytes]":
    return subprocess.run([sys.executable, "-m", "lpm", *args], capture_output=True, env=PEER_ENV, cwd=REPO_ROOT)


# -- `show` output ----------------------------------------------------------------

ShowLine = Tuple[int, Optional[int], str]
_SHOW_LINE = re.compile(r"\s*(\d+): (?:cap (\d+): )?(.*)")


def show_lines(text: str, *, after_events_heading: bool) -> Counter[ShowLine]:
    """Event lines of ``ghc-events show`` or ``lpm show`` as (ts, cap, text).

    ``after_events_heading``: skip everything up to the "Events:" line (the
    header listing both tools print first).  lpm's own notes ("-- end of
    data") and its block marker lines, which ghc-events does not print, are
    dropped.
    """
    lines = text.splitlines()
    if after_events_heading:
        lines = lines[lines.index("Events:") + 1 :]
    out: Counter[ShowLine] = Counter()
    for line in lines:
        if not line.strip() or line.startswith("-- "):
            continue
        m = _SHOW_LINE.fullmatch(line)
        assert m is not None, f"not an event line: {line!r}"
        ts, cap, what = m.groups()
        if what.startswith("block of ") and " bytes for cap " in what:
            continue
        out[(int(ts), None if cap is None else int(cap), what)] += 1
    return out


def ghc_events_show(command: str, path: Path) -> "subprocess.CompletedProcess[bytes]":
    return subprocess.run([command, "show", str(path)], capture_output=True, env=PEER_ENV)

