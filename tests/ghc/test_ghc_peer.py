"""lpm's eventlog reader against logs written by real GHC 9.0.2 programs.

Each log is checked against the ghc-events library (the ``EventCounts``
checker: counts per event type), fed to lpm's reader in every chunking, and
searched for what a user would look for (thread labels, messages, heap
samples, program arguments).  A program killed mid-run and logs cut short
must read as incomplete, and ``lpm show`` must print what ``ghc-events show``
prints.
"""

from __future__ import annotations

import json
import random
import signal
from collections import Counter
from itertools import chain, repeat
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Union

import pytest

from lpm.eventlog import EndOfStream, Event, EventLogReader, RawEvent, read_events
from lpm.eventlog import events as ev
from lpm.eventlog.format import EVENT_HEAD, PAYLOAD_LEN
from lpm.eventlog.reader import Item

from . import peers

def decoded_events(path: Path) -> List[Event]:
    return peers.events_of(read_events(path.read_bytes()))


# -- a. counts per type equal ghc-events' ---------------------------------------


@pytest.mark.parametrize("name", peers.ALL_LOGS)
def test_counts_match_ghc_events(
    request: pytest.FixtureRequest, name: str, checker: Callable[[Path], peers.Counts]
) -> None:
    path = peers.log_path(request, name)
    data = path.read_bytes()
    theirs = checker(path)
    fast, end = peers.lpm_fast_counts(data)
    decoded = peers.decoded_counts(read_events(data))
    assert fast == decoded, "lpm's count() fast path disagrees with its decoder"
    assert fast.header_types == theirs.header_types
    assert fast.by_name == theirs.by_name
    assert sum(fast.by_name.values()) > 0
    assert end.complete is (name != "killed")


# -- b. any chunking decodes the same -------------------------------------------


def random_sizes(rnd: random.Random, total: int) -> List[int]:
    sizes: List[int] = []
    while sum(sizes) < total:
        sizes.append(rnd.choice([1, 2, 3, 5, 9, 10, 11, 24, 26, 100, 1000, 4096, 70000]))
    return sizes


#: Logs up to this size are fed a byte at a time throughout; larger ones only
#: BYTEWISE_EDGE bytes at each end.
BYTEWISE_LIMIT = 512 * 1024
BYTEWISE_EDGE = 128 * 1024


@pytest.mark.parametrize("name", peers.ALL_LOGS)
def test_any_chunking_decodes_the_same(request: pytest.FixtureRequest, name: str) -> None:
    data = peers.log_path(request, name).read_bytes()
    whole = read_events(data)
    assert isinstance(whole[-1], EndOfStream)
    assert whole[-1].offset == len(data)
    for seed in range(4):
        chunked = peers.decode_in_chunks(data, random_sizes(random.Random(seed), len(data)))
        assert chunked == whole, f"chunking with seed {seed} decodes differently"
    if len(data) <= BYTEWISE_LIMIT:
        sizes: Iterable[int] = repeat(1)
    else:
        # The killed log is a 2 MiB capability buffer of near-identical user
        # messages: feed its header and its cut end a byte at a time.
        sizes = chain(repeat(1, BYTEWISE_EDGE), [len(data) - 2 * BYTEWISE_EDGE], repeat(1, BYTEWISE_EDGE))
    assert peers.decode_in_chunks(data, sizes) == whole, "one byte at a time decodes differently"


# -- c. what a user looks for ---------------------------------------------------

OUR_LABELS = ("main-thread ✓", "worker-1", "worker-2", "worker-3", "worker-4", "masked", "helper")


def test_thread_labels(ghc_logs: Dict[str, peers.GhcLog]) -> None:
    events = decoded_events(ghc_logs["threads"].path)
    labels = [(e.label, e.thread) for e in events if isinstance(e, ev.ThreadLabel)]
    # The RTS labels its own threads too ("IOManager on cap 0", "TimerManager").
    ours = {label: thread for label, thread in labels if label in OUR_LABELS}
    assert sorted(ours) == sorted(OUR_LABELS), f"labels seen: {labels}"
    assert len(labels) == len({label for label, _ in labels}), f"a label appears twice: {labels}"
    threads = set(ours.values())
    assert len(threads) == len(OUR_LABELS)
    created = {e.thread for e in events if isinstance(e, ev.CreateThread)}
    assert threads <= created
    finished = {e.thread for e in events if isinstance(e, ev.StopThread) and e.status == ev.THREAD_FINISHED}
    workers = {ours[f"worker-{i}"] for i in range(1, 5)}
    assert workers <= finished


def test_blocked_in_throw_to(ghc_logs: Dict[str, peers.GhcLog]) -> None:
    """Main throws to a thread in uninterruptibleMask_ and blocks: the RTS writes
    status 18 (BlockedOnMsgThrowTo 12 + 6), which lpm names right."""
    events = decoded_events(ghc_logs["threads"].path)
    main = next(e.thread for e in events if isinstance(e, ev.ThreadLabel) and e.label == "main-thread ✓")
    stops = [e for e in events if isinstance(e, ev.StopThread) and e.thread == main and e.status == 18]
    assert stops, "main never stopped blocked in throwTo"
    assert stops[0].describe() == f"stopping thread {main} (blocked in throwTo)"


MESSAGES = [
    "lpmtest héllo wörld ✓",
    *(f"lpmtest step {i}" for i in range(1, 6)),
    "lpmtest tab\tand 日本語 \U0001f40d",
]
MARKERS = ["lpmtest begin", "lpmtest end ✓"]


@pytest.mark.parametrize(
    "name, payload",
    [("messages", peers.ALL_BYTES_PAYLOAD), ("messages-printable", peers.PRINTABLE_PAYLOAD)],
)
def test_user_messages(ghc_logs: Dict[str, peers.GhcLog], name: str, payload: bytes) -> None:
    data = ghc_logs[name].data()
    events = peers.events_of(read_events(data))
    assert [e.message for e in events if isinstance(e, ev.UserMessage)] == MESSAGES
    assert [e.marker for e in events if isinstance(e, ev.UserMarker)] == MARKERS
    assert [e.data for e in events if isinstance(e, ev.UserBinaryMessage)] == [payload, b""]
    # The file holds exactly these bytes: head, length, the program's payload.
    for e in events:
        if isinstance(e, (ev.UserMessage, ev.UserBinaryMessage)):
            payload_bytes = e.message.encode() if isinstance(e, ev.UserMessage) else e.data
            framed = EVENT_HEAD.pack(e.ID, e.ts) + PAYLOAD_LEN.pack(len(payload_bytes)) + payload_bytes
            assert framed in data, f"{e} is not framed in the file as written"


def test_heap_profile_by_closure_type(ghc_logs: Dict[str, peers.GhcLog]) -> None:
    events = decoded_events(ghc_logs["heap"].path)
    begins = [e for e in events if isinstance(e, ev.HeapProfBegin)]
    assert len(begins) == 1
    assert begins[0].breakdown == 7  # closure type (-hT)
    assert begins[0].sampling_period == 0  # -i0: a census at every major GC
    samples: List[Dict[str, int]] = []
    current: Union[Dict[str, int], None] = None
    for e in events:
        if isinstance(e, ev.HeapProfSampleBegin):
            assert current is None, "a sample began inside another"
            current = {}
        elif isinstance(e, ev.HeapProfSampleString):
            assert current is not None, f"a sample string outside a sample: {e}"
            assert e.heap_prof_id == begins[0].heap_prof_id
            current[e.label] = current.get(e.label, 0) + e.residency
        elif isinstance(e, ev.HeapProfSampleEnd):
            assert current is not None
            samples.append(current)
            current = None
    assert current is None
    # The program forces seven major collections itself.
    assert len(samples) >= 7
    labels = set().union(*samples)
    assert {"ghc-prim:GHC.Types.:", "TSO", "STACK", "ARR_WORDS"} <= labels
    assert any(label.endswith(":Data.Map.Internal.Bin") for label in labels)
    # At its peak the program holds lists of 62,985 Ints: 3 words per cons cell.
    assert max(s.get("ghc-prim:GHC.Types.:", 0) for s in samples) >= 62985 * 3 * 8


@pytest.mark.parametrize("name", peers.LOG_NAMES)
def test_program_args(ghc_logs: Dict[str, peers.GhcLog], name: str) -> None:
    log = ghc_logs[name]
    args = [e.args for e in decoded_events(log.path) if isinstance(e, ev.ProgramArgs)]
    assert args == [log.argv]


def test_parallel_gc_events(ghc_logs: Dict[str, peers.GhcLog]) -> None:
    events = decoded_events(ghc_logs["pargc"].path)
    kinds = Counter(type(e) for e in events)
    for cls in (ev.RequestParGC, ev.GlobalSyncGC, ev.GCWork, ev.GCIdle, ev.GCDone, ev.GCStatsGHC):
        assert kinds[cls] > 0, f"no {cls.__name__} events"
    assert kinds[ev.StartGC] == kinds[ev.EndGC]
    assert {e.cap for e in events if isinstance(e, ev.GCWork)} == {0, 1}
    stats = [e for e in events if isinstance(e, ev.GCStatsGHC)]
    assert all(s.par_balanced_copied is not None for s in stats), "9.0.2 writes the 58-byte form"
    assert any(s.par_n_threads == 2 for s in stats)
    assert all(s.par_tot_copied >= s.par_max_copied for s in stats)


def test_nonmoving_collector_events(ghc_logs: Dict[str, peers.GhcLog]) -> None:
    events = decoded_events(ghc_logs["nonmoving"].path)
    kinds = Counter(type(e) for e in events)
    for begin, end in ((ev.ConcMarkBegin, ev.ConcMarkEnd), (ev.ConcSyncBegin, ev.ConcSyncEnd),
                       (ev.ConcSweepBegin, ev.ConcSweepEnd)):
        assert kinds[begin] > 0 and kinds[begin] == kinds[end], f"{begin.__name__} and {end.__name__}"
    # Each census covers every allocator: block sizes 2^3 .. 2^14 on 9.0.2.
    sizes = Counter(e.log_block_size for e in events if isinstance(e, ev.NonmovingHeapCensus))
    assert set(sizes) == set(range(3, 15))
    assert len(set(sizes.values())) == 1
    assert "Marking roots for nonmoving GC" in {e.message for e in events if isinstance(e, ev.Message)}


# -- d. a killed program, and logs cut short ------------------------------------


def test_killed_program_log_is_incomplete(killed_log: peers.KilledLog) -> None:
    # The 9.0.2 RTS installs no SIGTERM handler: the signal kills the process
    # outright and nothing more is flushed, so the end marker is never written.
    assert killed_log.returncode == -signal.SIGTERM
    proc = peers.lpm_command("show", "--stats", "--json", str(killed_log.path))
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, stderr
    result = json.loads(proc.stdout)
    assert result["complete"] is False
    assert "stream stops without its end marker" in stderr
    assert result["bytes"] == len(killed_log.data())
    assert result["by_id"].get(str(ev.UserMessage.ID), 0) > 0
    shown = peers.lpm_command("show", str(killed_log.path))
    assert shown.returncode == 0, shown.stderr.decode("utf-8", "replace")
    assert b"lpmtest tick 1 of a program" in shown.stdout


def event_ends(data: bytes) -> List[int]:
    """The stream offset just past each event of ``data``."""
    reader = EventLogReader()
    reader.feed(data)
    reader.close()
    ends: List[int] = []
    while True:
        item = reader.next_raw()
        if isinstance(item, EndOfStream):
            return ends
        if isinstance(item, RawEvent):
            ends.append(item.offset + len(item.raw))


def test_cut_logs_are_incomplete(ghc_logs: Dict[str, peers.GhcLog], tmp_path: Path) -> None:
    data = ghc_logs["threads"].data()
    whole: List[Union[Item, Event]] = read_events(data)
    events = [item for item in whole if isinstance(item, Event)]
    ends = event_ends(data)
    assert len(ends) == len(events)
    data_start = data.index(b"hdredatb") + 8
    rnd = random.Random(20240518)
    cuts = sorted(
        {data_start, data_start + 1, data_start + 13, len(data) - 2, len(data) - 1}
        | {rnd.randrange(data_start + 2, len(data) - 2) for _ in range(40)}
    )
    cli_cuts = {data_start, cuts[len(cuts) // 2], len(data) - 1}
    for cut in cuts:
        items = read_events(data[:cut])
        end = items[-1]
        assert isinstance(end, EndOfStream) and end.complete is False, f"cut at {cut}"
        got = [item for item in items if isinstance(item, Event)]
        n = sum(1 for e in ends if e <= cut)
        assert got == events[:n], f"cut at {cut}: the events are not the full log's first {n}"
        assert end.pending == cut - (ends[n - 1] if n else data_start), f"cut at {cut}"
        if cut in cli_cuts:
            path = tmp_path / f"cut-{cut}.eventlog"
            path.write_bytes(data[:cut])
            proc = peers.lpm_command("show", "--stats", "--json", str(path))
            assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
            result = json.loads(proc.stdout)
            assert result["complete"] is False
            assert result["total"] == n
            assert result["pending_bytes"] == end.pending


def test_log_cut_inside_its_header(ghc_logs: Dict[str, peers.GhcLog], tmp_path: Path) -> None:
    data = ghc_logs["threads"].data()
    path = tmp_path / "cut-header.eventlog"
    path.write_bytes(data[:1000])
    proc = peers.lpm_command("show", "--stats", "--json", str(path))
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    result = json.loads(proc.stdout)
    assert result["complete"] is False
    assert result["total"] == 0
    assert result["header_types"] == 0


# -- f. `lpm show` next to `ghc-events show` ------------------------------------


def is_user_line(line: peers.ShowLine) -> bool:
    text = line[2]
    return text.startswith(("lpmtest", "marker: lpmtest")) or (text.startswith("thread ") and " has label " in text)


@pytest.mark.parametrize("name", ["messages-printable", "threads"])
def test_show_prints_user_messages_like_ghc_events(
    ghc_logs: Dict[str, peers.GhcLog], ghc_events_command: str, name: str
) -> None:
    path = ghc_logs[name].path
    theirs = peers.ghc_events_show(ghc_events_command, path)
    assert theirs.returncode == 0, theirs.stderr.decode("utf-8", "replace")
    ours = peers.lpm_command("show", str(path))
    assert ours.returncode == 0, ours.stderr.decode("utf-8", "replace")
    their_lines = peers.show_lines(theirs.stdout.decode("utf-8"), after_events_heading=True)
    our_lines = peers.show_lines(ours.stdout.decode("utf-8"), after_events_heading=True)
    want = Counter({line: n for line, n in their_lines.items() if is_user_line(line)})
    got = Counter({line: n for line, n in our_lines.items() if is_user_line(line)})
    assert got == want
    if name == "messages-printable":
        texts = sorted(text for _, _, text in got.elements() if not text.startswith("thread "))
        assert texts == sorted(MESSAGES + [f"marker: {m}" for m in MARKERS])
    else:
        labels = {text for _, _, text in got}
        assert all(any(text.endswith(f'has label "{label}"') for text in labels) for label in OUR_LABELS)


#: Event types whose ``lpm show`` text differs from ``ghc-events show`` 0.17's.
SHOW_TEXT_DIFFERS = {
    ev.UserBinaryMessage.ID: "lpm prints the length and the first 32 bytes in hex, ghc-events the bytes as text",
    ev.ConcMarkEnd.ID: "lpm says \"N objects marked\", ghc-events \"marked N objects\"",
    ev.ConcUpdRemSetFlush.ID: "lpm says \"flushed by cap N\", ghc-events \"flushed by N\"",
}


def show_text_differs(e: Event) -> bool:
    if isinstance(e, ev.StopThread):
        # Also: ghc-events says "owned by thread 0" for a black hole without an
        # owner, and "No stop thread status" for codes it does not know.
        return (
            e.status in peers.GHC_EVENTS_STOP_STATUS_DIFFERS
            or e.status not in ev.STOP_STATUS
            or (e.status == 8 and e.blocked_on == 0)
        )
    return peers.type_id_of(e) in SHOW_TEXT_DIFFERS


@pytest.mark.parametrize("name", peers.SHOWABLE_LOGS)
def test_show_matches_ghc_events_show(
    ghc_logs: Dict[str, peers.GhcLog], ghc_events_command: str, name: str
) -> None:
    """Every event line is the same in both tools, but for known differences."""
    path = ghc_logs[name].path
    theirs = peers.ghc_events_show(ghc_events_command, path)
    assert theirs.returncode == 0, theirs.stderr.decode("utf-8", "replace")
    ours = peers.lpm_command("show", "--no-header", str(path))
    assert ours.returncode == 0, ours.stderr.decode("utf-8", "replace")
    their_lines = peers.show_lines(theirs.stdout.decode("utf-8"), after_events_heading=True)
    our_lines = peers.show_lines(ours.stdout.decode("utf-8"), after_events_heading=False)
    exempt = {(e.ts, e.cap) for e in decoded_events(path) if show_text_differs(e)}
    only_ours = sorted(line for line in (our_lines - their_lines) if line[:2] not in exempt)
    only_theirs = sorted(line for line in (their_lines - our_lines) if line[:2] not in exempt)
    assert (only_ours[:20], only_theirs[:20]) == ([], [])
    assert sum(our_lines.values()) == sum(their_lines.values())


def test_show_prints_a_binary_message_ghc_events_cannot(ghc_logs: Dict[str, peers.GhcLog]) -> None:
    # `ghc-events show` stops on this log with "Cannot decode byte": it maps
    # unprintable bytes to '.' and decodes the rest as UTF-8.  lpm prints hex.
    proc = peers.lpm_command("show", str(ghc_logs["messages"].path))
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    payload = peers.ALL_BYTES_PAYLOAD
    assert f"binary message of {len(payload)} bytes: {payload[:32].hex()}".encode() in proc.stdout
