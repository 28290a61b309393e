"""The server's sans-IO core (lpm/server/hub.py), as a client of it sees it.

No sockets, no clocks: sources are fed eventlog bytes cut at arbitrary
offsets, clients send frames and read what :meth:`Hub.take_output` gives them.

1. Subscribing: the reply, then per source HEADER and STATE, then EVENTS; a
   subscriber from the start gets the source's bytes exactly, never
   re-encoded, however the input was cut.
2. Late joiners start at the next block marker (a source without blocks:
   right away) and their stream decodes and balances.
3. The service: filters, replies, errors, control, and a client that breaks
   the protocol is closed without touching the others.
4. Slow clients: bounded queues, dropped and counted events, the ``dropped``
   notice, resuming at a block boundary.
5. Limits and source notices.
6. A restarted source.
7. The recorder's sink.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest

from lpm.eventlog import EventLogWriter, EventType, read_events
from lpm.eventlog import events as ev
from lpm.eventlog import format as fmt
from lpm.eventlog.accounting import Accounting
from lpm.eventlog.reader import DataEnd, EndOfStream, EventLogReader, Header, RawEvent
from lpm.eventlog.sample import sample_eventlog
from lpm.protocol import service
from lpm.protocol.frames import HEAD, MAGIC, Frame, FrameDecoder, Kind, encode_frame
from lpm.server.hub import Client, Hub, HubLimits
from lpm.server.source import FILE, LEECH, Chunk, Source

FINISHED = ev.THREAD_FINISHED
Message = Dict[str, Any]


# == helpers =======================================================================


def leech_stream(seed: int = 7, threads: int = 3, blocks: int = 60, writer: EventLogWriter | None = None,
                 end: bool = True) -> bytes:
    """A leech-shaped stream: a global setup block, then blocks of one thread
    each (marker, PyBlockInfo, counted events, sometimes a PyDataLoss, a
    PySeqPoint last), each thread's last block stopping it.  Every event has
    its own timestamp, so no two events have the same bytes."""
    rnd = random.Random(seed)
    w = writer or EventLogWriter()
    clock = itertools.count(1_000, 7)
    seq = {t: 0 for t in range(1, threads + 1)}

    def ts() -> int:
        return next(clock)

    def block(t: int, extra: Sequence[ev.Event] = ()) -> bytes:
        n = seq[t]
        evs: List[ev.Event] = [ev.PyBlockInfo(ts(), t, t, n)]
        for _ in range(rnd.randrange(1, 10)):
            r = rnd.random()
            if r < 0.55:
                evs.append(ev.PySample(ts(), t, t, tuple(rnd.randrange(1, 6) for _ in range(rnd.randrange(1, 5)))))
            elif r < 0.75:
                evs.append(ev.UserMarker(ts(), t, f"m{rnd.randrange(100_000)}" * rnd.randrange(1, 4)))
            elif r < 0.9:
                evs.append(ev.PyCounter(ts(), t, float(rnd.randrange(1000)), "jobs"))
            else:
                lost = rnd.randrange(1, 20)
                evs.append(ev.PyDataLoss(ts(), t, t, n, lost, 40 * lost))
                n += lost
                continue
            n += 1
        for e in extra:
            evs.append(e)
            n += 1
        n += 1  # the sequence point counts itself
        evs.append(ev.PySeqPoint(ts(), t, t, n))
        seq[t] = n
        return w.block(t, evs)

    out = [w.header()]
    setup: List[ev.Event] = [ev.RtsIdentifier(ts(), None, 0, "CPython-3.11.7 lpm-test"), ev.OsProcessPid(ts(), None, 0, 4242)]
    setup += [ev.CreateThread(ts(), None, t) for t in seq]
    out.append(w.block(fmt.GLOBAL_CAP, setup))
    for _ in range(blocks):
        out.append(block(rnd.randrange(1, threads + 1)))
    for t in seq:
        out.append(block(t, [ev.StopThread(ts(), t, t, FINISHED, 0)]))
    if end:
        out.append(w.end())
    return b"".join(out)


def blockless_stream(n: int = 200, seed: int = 3) -> bytes:
    """A stream whose events are in no block (a GHC-less writer)."""
    rnd = random.Random(seed)
    w = EventLogWriter()
    evs: List[ev.Event] = []
    for i in range(n):
        if rnd.random() < 0.5:
            evs.append(ev.UserMarker(10 + i, None, f"marker {i}"))
        else:
            evs.append(ev.PyCounter(10 + i, None, float(i), "count"))
    return w.eventlog(evs)


def raw_events(data: bytes) -> List[RawEvent]:
    """The events of a stream as its writer framed them (strict reader)."""
    reader = EventLogReader(strict=True)
    reader.feed(data)
    reader.close()
    out: List[RawEvent] = []
    while True:
        item = reader.next_raw()
        if isinstance(item, RawEvent):
            out.append(item)
        elif isinstance(item, EndOfStream):
            assert item.pending == 0, "an event was cut"
            return out


def header_of(data: bytes) -> bytes:
    """The header bytes at the start of a stream (everything before the first event)."""
    first = raw_events(data)
    return data[: first[0].offset] if first else data[: len(data) - len(fmt.DATA_END)]


def cuts(data: bytes, rnd: random.Random, most: int) -> List[bytes]:
    """``data`` cut at random offsets into pieces of 1 to ``most`` bytes."""
    out: List[bytes] = []
    at = 0
    while at < len(data):
        n = rnd.randrange(1, most + 1)
        out.append(data[at : at + n])
        at += n
    assert b"".join(out) == data
    return out


def request(id: Any, op: str, **args: Any) -> bytes:
    return encode_frame(Frame(Kind.SERVICE, 0, service.request(id, op, **args)))


def service_frame(message: Any) -> bytes:
    return encode_frame(Frame(Kind.SERVICE, 0, json.dumps(message).encode()))


class View:
    """What one client receives: every frame, decoded, kept in order."""

    def __init__(self, hub: Hub, client: Client) -> None:
        self.hub = hub
        self.client = client
        self.decoder = FrameDecoder()
        self.frames: List[Frame] = []

    @classmethod
    def connect(cls, hub: Hub, peer: str = "peer") -> View:
        client = hub.add_client(peer)
        assert client is not None
        return cls(hub, client)

    def send(self, data: bytes) -> None:
        self.hub.client_data(self.client, data)

    def call(self, id: int, op: str, **args: Any) -> Message:
        """Send a request; the reply or error with its id."""
        self.send(request(id, op, **args))
        self.pump()
        answers = [m for m in self.messages() if m["type"] in ("reply", "error") and m["id"] == id]
        assert len(answers) == 1, f"request {id} got {answers}"
        return answers[0]

    def pump(self) -> List[Frame]:
        """Take everything queued (as a socket that always has room would)."""
        new: List[Frame] = []
        while True:
            data = self.hub.take_output(self.client, 1 << 12)
            if not data:
                break
            self.decoder.feed(data)
            while True:
                frame = self.decoder.next_frame()
                if frame is None:
                    break
                new.append(frame)
        assert self.decoder.buffered == 0, "take_output cut a frame"
        self.frames += new
        return new

    def messages(self) -> List[Message]:
        out: List[Message] = []
        for f in self.frames:
            if f.kind is Kind.SERVICE:
                assert f.source == 0
                out.append(service.decode(f.payload))
        return out

    def notices(self, what: str | None = None) -> List[Message]:
        return [m for m in self.messages() if m["type"] == "notice" and (what is None or m["notice"] == what)]

    def errors(self) -> List[Message]:
        return [m for m in self.messages() if m["type"] == "error"]

    def stream(self, source: int) -> bytes:
        """The HEADER and EVENTS payloads of ``source``, concatenated."""
        return b"".join(f.payload for f in self.frames if f.kind in (Kind.HEADER, Kind.EVENTS) and f.source == source)

    def states(self, source: int) -> List[Message]:
        out: List[Message] = []
        for f in self.frames:
            if f.kind is Kind.STATE and f.source == source:
                state = json.loads(f.payload)
                assert isinstance(state, dict)
                out.append(state)
        return out

    def kinds(self, since: int = 0) -> List[Tuple[Kind, int]]:
        return [(f.kind, f.source) for f in self.frames[since:]]


def feed(hub: Hub, source: Source, pieces: Sequence[bytes], after: Callable[[], object] | None = None) -> None:
    for piece in pieces:
        hub.source_data(source, piece)
        if after is not None:
            after()


def pumping(*views: View) -> Callable[[], None]:
    """Each view reads everything queued for it."""

    def pump() -> None:
        for view in views:
            view.pump()

    return pump


def new_source(hub: Hub, name: str = "app", kind: str = LEECH) -> Source:
    source = hub.add_source(name, kind, f"/tmp/{name}.eventlog", 4242)
    assert source is not None
    return source


def account(stream: bytes) -> Accounting:
    acct = Accounting()
    for item in read_events(stream):
        if isinstance(item, Header):
            acct.reset()
        elif isinstance(item, ev.Event):
            acct.add(item)
    return acct


def runs(client_events: Sequence[RawEvent], source_events: Sequence[RawEvent]) -> List[Tuple[int, int]]:
    """Match a client's events, in order, against the source's (every event's
    bytes are unique): the (start, end) index ranges of the source's events
    the client got, contiguous runs of them."""
    index = {e.raw: i for i, e in enumerate(source_events)}
    assert len(index) == len(source_events), "the test stream must not repeat an event"
    out: List[Tuple[int, int]] = []
    for e in client_events:
        i = index.get(e.raw)
        assert i is not None, f"the client got an event the source did not write: {e}"
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            assert not out or i > out[-1][1], "events out of order or twice"
            out.append((i, i + 1))
    return out


def whole_events(header: bytes, payload: bytes) -> None:
    """An EVENTS payload holds whole events only: after the header, it decodes
    on its own with nothing left over."""
    reader = EventLogReader(strict=True)
    reader.feed(header + payload)
    reader.close()
    while True:
        item = reader.next_raw()
        if isinstance(item, EndOfStream):
            assert item.pending == 0
            return


# == 1. Subscribing ==================================================================


def test_subscribe_reply_then_header_and_state_per_source_then_events() -> None:
    hub = Hub()
    a, b = new_source(hub, "a"), new_source(hub, "b", FILE)
    data_a, data_b = leech_stream(seed=1), sample_eventlog(seconds=1)
    # The headers (and nothing else) have arrived.
    hub.source_data(a, header_of(data_a))
    hub.source_data(b, header_of(data_b))
    view = View.connect(hub)
    view.send(request(1, "subscribe"))
    view.pump()
    assert view.kinds() == [(Kind.SERVICE, 0), (Kind.HEADER, a.id), (Kind.STATE, a.id), (Kind.HEADER, b.id), (Kind.STATE, b.id)]
    assert view.messages() == [{"type": "reply", "id": 1, "result": {"sources": [a.id, b.id]}}]
    assert view.frames[1].payload == header_of(data_a)
    assert view.frames[3].payload == header_of(data_b)
    for source, frame in ((a, view.frames[2]), (b, view.frames[4])):
        state = json.loads(frame.payload)
        assert set(state) == {"source", "name", "info", "state"}
        assert (state["source"], state["name"]) == (source.id, source.name)
        assert state["info"] == json.loads(json.dumps(source.info()))
        assert state["info"]["id"] == source.id and state["info"]["kind"] == source.kind
        assert state["state"]["headers"] == 1 and state["state"]["events"] == 0
    hub.source_data(a, data_a[len(header_of(data_a)):])
    hub.source_data(b, data_b[len(header_of(data_b)):])
    view.pump()
    rest = view.kinds(5)
    assert rest and all(kind is Kind.EVENTS for kind, _ in rest)
    assert view.stream(a.id) == data_a
    assert view.stream(b.id) == data_b


@pytest.mark.parametrize("seed", range(6))
def test_a_subscriber_from_the_start_gets_the_bytes_the_source_wrote(seed: int) -> None:
    """Whatever the cutting of the input and wherever in the header the client
    subscribes, its HEADER and EVENTS payloads are the input, byte for byte,
    and every EVENTS frame holds whole events."""
    rnd = random.Random(seed)
    data = leech_stream(seed=seed, blocks=80) if seed % 2 else sample_eventlog(seed=seed, seconds=1)
    header = header_of(data)
    hub = Hub()
    source = new_source(hub)
    join = rnd.randrange(0, len(header))  # bytes of the input fed before the client subscribes
    hub.source_data(source, data[:join])
    view = View.connect(hub)
    assert view.call(1, "subscribe", sources=[source.id])["result"] == {"sources": [source.id]}
    most = 1 if seed == 0 else rnd.choice([3, 50, 333, 700, 5000])  # seed 0: byte by byte
    feed(hub, source, cuts(data[join:], rnd, most), view.pump)
    hub.source_closed(source)
    view.pump()
    stream = view.stream(source.id)
    assert stream == data
    assert [f.payload for f in view.frames if f.kind is Kind.HEADER] == [header]
    for f in view.frames:
        if f.kind is Kind.EVENTS:
            whole_events(header, f.payload)
    assert read_events(stream, strict=True) == read_events(data, strict=True)


def test_many_subscribers_share_the_stream_and_each_gets_it_whole() -> None:
    rnd = random.Random(11)
    data = leech_stream(seed=11, blocks=50)
    hub = Hub()
    source = new_source(hub)
    views = [View.connect(hub, f"c{i}") for i in range(3)]
    for i, view in enumerate(views):
        view.call(i + 1, "subscribe")
    feed(hub, source, cuts(data, rnd, 300), pumping(*views))
    for view in views:
        assert view.stream(source.id) == data
        assert view.client.sent_events == len(raw_events(data))


# == 2. Late joiners =====================================================================


@pytest.mark.parametrize("seed", range(8))
def test_a_late_joiner_starts_at_the_next_block_marker(seed: int) -> None:
    rnd = random.Random(100 + seed)
    data = leech_stream(seed=seed, threads=2 + seed % 3, blocks=60)
    header = header_of(data)
    events = raw_events(data)
    hub = Hub()
    source = new_source(hub)
    join = rnd.randrange(len(header) + 1, len(data) * 3 // 4)
    feed(hub, source, cuts(data[:join], rnd, rnd.choice([5, 200, 2000])))
    joined_at = source.events_in
    assert source.blocks
    view = View.connect(hub)
    view.send(request(9, "subscribe", sources=[source.id]))
    view.pump()
    assert view.kinds() == [(Kind.SERVICE, 0), (Kind.HEADER, source.id), (Kind.STATE, source.id)]
    state = view.states(source.id)[0]
    assert state["info"]["events"] == joined_at and state["state"]["events"] == joined_at
    feed(hub, source, cuts(data[join:], rnd, rnd.choice([1, 64, 1500])), view.pump)
    hub.source_closed(source)
    view.pump()

    first = next(i for i in range(joined_at, len(events)) if events[i].type_id == fmt.BLOCK_MARKER_ID)
    stream = view.stream(source.id)
    assert stream == header + data[events[first].offset:], "from the header to the next block marker, then everything"
    items = read_events(stream, strict=True)
    got = [e for e in items if isinstance(e, ev.Event)]
    assert isinstance(got[0], ev.EventBlock)
    # Every event decodes as it did in the whole stream: the same capability,
    # so the client is inside the same blocks as the writer.
    whole = [e for e in read_events(data) if isinstance(e, ev.Event)]
    assert got == whole[first:]
    acct = account(stream)
    assert acct.threads, "the client saw some thread's blocks"
    for number, thread in acct.threads.items():
        assert thread.balanced, f"thread {number}: {thread}"
        assert thread.unreported == 0


def test_a_late_joiner_of_a_stream_without_blocks_starts_at_once() -> None:
    data = blockless_stream()
    events = raw_events(data)
    rnd = random.Random(5)
    hub = Hub()
    source = new_source(hub, kind=FILE)
    join = events[len(events) // 3].offset + 5  # mid-event
    hub.source_data(source, data[:join])
    joined_at = source.events_in
    assert not source.blocks and joined_at == len(events) // 3
    view = View.connect(hub)
    view.call(1, "subscribe")
    feed(hub, source, cuts(data[join:], rnd, 40), view.pump)
    stream = view.stream(source.id)
    assert stream == header_of(data) + data[events[joined_at].offset:]
    assert read_events(stream, strict=True)[-2:] == [DataEnd(len(stream) - 2), EndOfStream(len(stream), True, 0)]


def test_a_late_joiner_waits_through_a_block_that_is_cut_across_feeds() -> None:
    """A marker in an earlier feed: the client, joining after it, gets nothing
    of that block, even though the block's events arrive later."""
    w = EventLogWriter()
    block1 = w.block(0, [ev.UserMarker(1, 0, "a"), ev.UserMarker(2, 0, "b"), ev.UserMarker(3, 0, "c")])
    block2 = w.block(0, [ev.UserMarker(4, 0, "d")])
    data = w.header() + block1 + block2 + w.end()
    hub = Hub()
    source = new_source(hub)
    cut = len(w.header()) + 30  # the marker and part of "a"
    hub.source_data(source, data[:cut])
    view = View.connect(hub)
    view.call(1, "subscribe")
    hub.source_data(source, data[cut:len(w.header()) + len(block1)])
    view.pump()
    assert view.stream(source.id) == w.header(), "nothing of the block the client joined inside"
    hub.source_data(source, data[len(w.header()) + len(block1):])
    view.pump()
    assert view.stream(source.id) == w.header() + block2 + w.end()


# == 3. The service ==========================================================================


def two_sources() -> Tuple[Hub, Source, Source, bytes, bytes]:
    hub = Hub()
    a, b = new_source(hub, "a"), new_source(hub, "b")
    return hub, a, b, leech_stream(seed=21), leech_stream(seed=22)


@pytest.mark.parametrize("classes, ids", [
    (["samples"], service.CLASSES["samples"]),
    (["user", "loss"], service.CLASSES["user"] | service.CLASSES["loss"]),
    ([ev.PyCounter.ID], frozenset({ev.PyCounter.ID})),
    (["threads", ev.PySeqPoint.ID], service.CLASSES["threads"] | {ev.PySeqPoint.ID}),
])
def test_a_classes_filter_sends_those_type_ids_only_and_no_block_markers(classes: List[Any], ids: frozenset[int]) -> None:
    rnd = random.Random(4)
    data = leech_stream(seed=4, blocks=80)
    events = raw_events(data)
    hub = Hub()
    source = new_source(hub)
    view = View.connect(hub)
    everything = View.connect(hub)
    assert view.call(1, "subscribe", classes=classes)["type"] == "reply"
    everything.call(1, "subscribe")
    feed(hub, source, cuts(data, rnd, 500), pumping(view, everything))
    stream = view.stream(source.id)
    wanted = [e for e in events if e.type_id in ids]
    assert wanted, "the test stream has events of the class"
    assert stream == header_of(data) + b"".join(e.raw for e in wanted) + fmt.DATA_END
    got = [e for e in read_events(stream, strict=True) if isinstance(e, ev.Event)]
    assert not any(isinstance(e, ev.EventBlock) for e in got)
    assert {e.ID for e in got} <= ids
    assert everything.stream(source.id) == data, "the filter is that client's alone"


def test_a_late_joiner_with_classes_starts_at_once() -> None:
    """A filtered stream has no block markers, so no boundary to wait for: the
    events of its classes flow from the first one after the client joined,
    even in the middle of a block."""
    data = leech_stream(seed=8, blocks=40)
    events = raw_events(data)
    samples = service.CLASSES["samples"]
    # Join inside a block, with samples of that block still to come.
    at = next(i for i in range(len(events) // 2, len(events) - 1)
              if events[i].type_id == ev.PyBlockInfo.ID and events[i + 1].type_id in samples)
    hub = Hub()
    source = new_source(hub)
    hub.source_data(source, data[: events[at].offset + 3])
    joined_at = source.events_in
    assert joined_at == at
    view = View.connect(hub)
    view.call(1, "subscribe", classes=["samples"])
    hub.source_data(source, data[events[at].offset + 3:])
    view.pump()
    wanted = [e for e in events[joined_at:] if e.type_id in samples]
    assert view.stream(source.id) == header_of(data) + b"".join(e.raw for e in wanted) + fmt.DATA_END


@pytest.mark.parametrize("classes", [["nosuch"], "gc", [True], [-1], [0xFFFF], [1.5], [None], {"gc": 1}])
def test_an_unknown_class_is_an_error_with_the_request_id(classes: Any) -> None:
    hub, a, _, data, _ = two_sources()
    view = View.connect(hub)
    answer = view.call(41, "subscribe", classes=classes)
    assert answer["type"] == "error" and answer["id"] == 41
    assert "class" in answer["error"]
    hub.source_data(a, data)
    view.pump()
    assert view.client.subs == {} and view.stream(a.id) == b"", "no subscription was made"
    assert view.client.close_reason is None
    assert view.call(42, "sources")["type"] == "reply", "the client goes on"


def test_subscribe_to_a_list_of_sources() -> None:
    hub, a, b, data_a, data_b = two_sources()
    view = View.connect(hub)
    answer = view.call(1, "subscribe", sources=[b.id])
    assert answer == {"type": "reply", "id": 1, "result": {"sources": [b.id]}}
    assert view.kinds() == [(Kind.SERVICE, 0), (Kind.STATE, b.id)], "no header yet: the source has none"
    hub.source_data(a, data_a)
    hub.source_data(b, data_b)
    view.pump()
    assert view.stream(a.id) == b"" and view.stream(b.id) == data_b
    assert {f.source for f in view.frames if f.kind is not Kind.SERVICE} == {b.id}
    # A source added later is not subscribed to: the list was explicit.
    c = new_source(hub, "c")
    hub.source_data(c, data_a)
    view.pump()
    assert view.stream(c.id) == b""
    assert [n["source"] for n in view.notices("source-added")] == [c.id]


@pytest.mark.parametrize("sources", [[1, 99], [99], [True], ["1"], [None], 1, "some", {"1": 1}, None])
def test_subscribe_to_an_unknown_source_is_an_error_and_subscribes_to_nothing(sources: Any) -> None:
    hub, a, b, data_a, _ = two_sources()
    view = View.connect(hub)
    answer = view.call(5, "subscribe", sources=sources)
    assert answer["type"] == "error" and answer["id"] == 5, answer
    assert view.kinds() == [(Kind.SERVICE, 0)], "no snapshot, no header"
    hub.source_data(a, data_a)
    view.pump()
    assert view.stream(a.id) == b""
    assert view.client.close_reason is None


def test_sources_lists_every_source() -> None:
    hub, a, b, data_a, _ = two_sources()
    hub.source_data(a, data_a)
    view = View.connect(hub)
    answer = view.call(3, "sources")
    assert answer["type"] == "reply" and answer["id"] == 3
    listed = answer["result"]
    assert [s["id"] for s in listed] == [a.id, b.id]
    assert [s["name"] for s in listed] == ["a", "b"]
    assert listed[0]["events"] == len(raw_events(data_a)) and listed[0]["bytes"] == len(data_a)
    assert listed[0]["ended"] is True and listed[1]["events"] == 0
    assert listed[0] == json.loads(json.dumps(a.info()))
    assert view.kinds() == [(Kind.SERVICE, 0)], "sources sends no snapshots"


def test_state_replies_then_sends_a_snapshot_without_a_header() -> None:
    hub, a, _, data_a, _ = two_sources()
    hub.source_data(a, data_a)
    view = View.connect(hub)
    answer = view.call(8, "state", source=a.id)
    assert answer == {"type": "reply", "id": 8, "result": {"source": a.id}}
    assert view.kinds() == [(Kind.SERVICE, 0), (Kind.STATE, a.id)]
    state = view.states(a.id)[0]
    assert state["state"]["events"] == len(raw_events(data_a))
    assert state["state"] == json.loads(json.dumps(a.state.snapshot()))
    assert view.client.subs == {}, "state does not subscribe"
    for bad in (99, "1", True, None):
        answer = view.call(9, "state", source=bad)
        assert answer["type"] == "error" and answer["id"] == 9
        view.frames.clear()
    answer = view.call(10, "state")
    assert answer["type"] == "error" and "source" in answer["error"]


def test_unsubscribe_stops_the_stream_and_later_sources() -> None:
    hub, a, b, data_a, data_b = two_sources()
    view = View.connect(hub)
    view.call(1, "subscribe")
    half = len(data_a) // 2
    hub.source_data(a, data_a[:half])
    assert view.call(2, "unsubscribe") == {"type": "reply", "id": 2, "result": {"sources": []}}
    got = len(view.frames)
    hub.source_data(a, data_a[half:])
    hub.source_data(b, data_b)
    c = new_source(hub, "c")
    hub.source_data(c, data_b)
    view.pump()
    assert [f.kind for f in view.frames[got:]] == [Kind.SERVICE], "only the source-added notice"
    assert view.notices("source-added")[0]["source"] == c.id


def test_unknown_op_or_missing_field_is_an_error_that_keeps_the_client() -> None:
    hub, a, _, _, _ = two_sources()
    view = View.connect(hub)
    for id_, op, args in [(1, "frobnicate", {}), (2, "state", {}), (3, "rate", {"source": a.id}),
                          (4, "pause", {})]:
        answer = view.call(id_, op, **args)
        assert answer["type"] == "error" and answer["id"] == id_, answer
    assert view.client.close_reason is None


class Controls:
    def __init__(self, answer: Optional[str] = None) -> None:
        self.calls: List[Tuple[int, str]] = []
        self.answer = answer

    def __call__(self, source: Source, line: str) -> Optional[str]:
        self.calls.append((source.id, line))
        return self.answer


def test_pause_resume_and_rate_reach_the_control_callback() -> None:
    control = Controls()
    hub = Hub(control=control)
    new_source(hub, "a")
    b = new_source(hub, "b")
    view = View.connect(hub)
    assert view.call(1, "pause", source=b.id) == {"type": "reply", "id": 1, "result": {"source": b.id, "sent": "pause"}}
    assert view.call(2, "resume", source=b.id)["result"] == {"source": b.id, "sent": "resume"}
    assert view.call(3, "rate", source=b.id, hz=200)["result"] == {"source": b.id, "sent": "rate 200"}
    assert view.call(4, "rate", source=b.id, hz=0.5)["result"]["sent"] == "rate 0.5"
    assert view.call(5, "rate", source=b.id, hz=0)["result"]["sent"] == "rate 0"
    assert view.call(6, "rate", source=b.id, hz=10_000)["result"]["sent"] == "rate 10000"
    assert control.calls == [(b.id, "pause"), (b.id, "resume"), (b.id, "rate 200"), (b.id, "rate 0.5"),
                             (b.id, "rate 0"), (b.id, "rate 10000")]


def test_a_control_failure_is_an_error_with_its_text() -> None:
    control = Controls("source 1 (a) is not a running leech: it takes no commands")
    hub = Hub(control=control)
    a = new_source(hub, "a")
    view = View.connect(hub)
    for id_, op, args in [(1, "pause", {}), (2, "resume", {}), (3, "rate", {"hz": 50})]:
        answer = view.call(id_, op, source=a.id, **args)
        assert answer == {"type": "error", "id": id_, "error": control.answer}
    assert len(control.calls) == 3 and view.client.close_reason is None


@pytest.mark.parametrize("hz", [-1, -0.001, 10_000.5, 1e9, "200", None, True, False, [200], {"hz": 1},
                                float("nan"), float("inf"), -float("inf")])
def test_rate_out_of_range_or_not_a_number_is_an_error(hz: Any) -> None:
    control = Controls()
    hub = Hub(control=control)
    a = new_source(hub)
    view = View.connect(hub)
    answer = view.call(7, "rate", source=a.id, hz=hz)
    assert answer["type"] == "error" and answer["id"] == 7 and "hz" in answer["error"]
    assert control.calls == []
    assert view.client.close_reason is None


def test_commands_to_an_unknown_source_or_without_control_are_errors() -> None:
    control = Controls()
    hub = Hub(control=control)
    view = View.connect(hub)
    assert view.call(1, "pause", source=1)["type"] == "error"
    assert view.call(2, "rate", source=True, hz=10)["type"] == "error"
    assert control.calls == []
    bare = Hub()
    a = new_source(bare)
    other = View.connect(bare)
    answer = other.call(3, "pause", source=a.id)
    assert answer["type"] == "error" and answer["id"] == 3


CLOSING: List[Tuple[str, bytes]] = [
    ("no id", service_frame({"type": "request", "op": "sources"})),
    ("string id", service_frame({"type": "request", "id": "1", "op": "sources"})),
    ("float id", service_frame({"type": "request", "id": 1.5, "op": "sources"})),
    ("bool id", service_frame({"type": "request", "id": True, "op": "sources"})),
    ("null id", service_frame({"type": "request", "id": None, "op": "sources"})),
    ("not JSON", encode_frame(Frame(Kind.SERVICE, 0, b"subscribe please"))),
    ("not UTF-8", encode_frame(Frame(Kind.SERVICE, 0, b'{"type": "request", "id": 1, "op": "\xff"}'))),
    ("empty", encode_frame(Frame(Kind.SERVICE, 0, b""))),
    ("a list", service_frame([{"type": "request", "id": 1, "op": "sources"}])),
    ("a number", service_frame(42)),
    ("a string", service_frame("request")),
    ("unknown type", service_frame({"type": "hello", "id": 1})),
    ("no type", service_frame({"id": 1, "op": "sources"})),
    ("a reply", encode_frame(Frame(Kind.SERVICE, 0, service.reply(1, {"sources": []})))),
    ("a notice", encode_frame(Frame(Kind.SERVICE, 0, service.notice("dropped", source=1, events=3)))),
    ("an error", encode_frame(Frame(Kind.SERVICE, 0, service.error(1, "no")))),
    ("a HEADER frame", encode_frame(Frame(Kind.HEADER, 1, EventLogWriter().header()))),
    ("an EVENTS frame", encode_frame(Frame(Kind.EVENTS, 1, fmt.DATA_END))),
    ("a STATE frame", encode_frame(Frame(Kind.STATE, 1, b"{}"))),
    ("bad magic", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("bad magic, short", b"GE"),
    ("a newer version", HEAD.pack(MAGIC, 2, Kind.SERVICE, 0, 0, 2) + b"{}"),
    ("an unknown kind", HEAD.pack(MAGIC, 1, 9, 0, 0, 2) + b"{}"),
    ("too long, head only", HEAD.pack(MAGIC, 1, Kind.SERVICE, 0, 0, 1001)),
    ("too long", encode_frame(Frame(Kind.SERVICE, 0, service.request(1, "sources", pad=" " * 1000)))),
]


@pytest.mark.parametrize("what, data", CLOSING, ids=[what for what, _ in CLOSING])
def test_a_client_that_breaks_the_protocol_gets_an_error_and_is_closed(what: str, data: bytes) -> None:
    hub = Hub(HubLimits(frame_bytes=1000))
    a = new_source(hub)
    stream = leech_stream(seed=3, blocks=20)
    good = View.connect(hub, "good")
    good.call(1, "subscribe")
    bad = View.connect(hub, "bad")
    bad.call(1, "subscribe")
    half = len(stream) // 2
    hub.source_data(a, stream[:half])
    good.pump()
    bad.pump()
    before = len(bad.frames)
    # Garbage, then a well-formed request in the same write: never answered.
    bad.send(data + request(2, "sources"))
    bad.pump()
    assert bad.client.close_reason is not None and bad.client.close_reason.startswith("protocol error"), what
    new = bad.frames[before:]
    assert len(new) == 1 and new[0].kind is Kind.SERVICE
    assert service.decode(new[0].payload)["type"] == "error" and service.decode(new[0].payload)["id"] is None
    # Nothing more for it: no events, no answers.
    hub.source_data(a, stream[half:])
    bad.send(request(3, "sources"))
    bad.pump()
    assert len(bad.frames) == before + 1
    assert [m["id"] for m in bad.messages() if m["type"] == "reply"] == [1]
    # The other client never noticed.
    assert good.call(2, "sources")["type"] == "reply"
    assert good.stream(a.id) == stream
    assert good.client.close_reason is None and good.errors() == []


def test_a_frame_of_exactly_the_limit_is_accepted() -> None:
    limit = 1000
    hub = Hub(HubLimits(frame_bytes=limit))
    view = View.connect(hub)
    body = service.request(1, "sources")
    payload = body[:-1] + b" " * (limit - len(body)) + b"}"
    assert len(payload) == limit
    view.send(encode_frame(Frame(Kind.SERVICE, 0, payload)))
    view.pump()
    assert view.messages() == [{"type": "reply", "id": 1, "result": []}]
    assert view.client.close_reason is None


def test_requests_cut_anywhere_and_run_together_are_all_answered_in_order() -> None:
    hub, a, _, data_a, _ = two_sources()
    hub.source_data(a, data_a)
    view = View.connect(hub)
    data = b"".join(request(i, op, source=a.id) for i, op in enumerate(["sources", "state", "sources", "state"] * 5))
    for piece in cuts(data, random.Random(2), 9):
        view.send(piece)
    view.pump()
    assert [m["id"] for m in view.messages()] == list(range(20))
    assert view.client.close_reason is None


# == 4. Slow clients ======================================================================

QUEUE = 4096
# For slow_and_healthy: room for the header (every type lpm declares: over
# 4 KiB) and a piece of events, so the healthy client never falls behind.
STREAM_QUEUE = 8192


def slow_and_healthy(data: bytes, seed: int, most: int = 600) -> Tuple[Hub, Source, View, View, List[bytes]]:
    hub = Hub(HubLimits(queue_bytes=STREAM_QUEUE))
    source = new_source(hub)
    slow = View.connect(hub, "slow")
    healthy = View.connect(hub, "healthy")
    slow.call(1, "subscribe")
    healthy.call(1, "subscribe")
    return hub, source, slow, healthy, cuts(data, random.Random(seed), most)


def queued_bytes(client: Client) -> int:
    return sum(len(frame) for frame in client.out)


@pytest.mark.parametrize("seed", range(4))
def test_a_slow_client_loses_events_counted_and_resumes_at_a_block(seed: int) -> None:
    data = leech_stream(seed=seed, threads=3, blocks=500)
    events = raw_events(data)
    hub, source, slow, healthy, pieces = slow_and_healthy(data, seed)
    first_half = len(pieces) // 2

    def check() -> None:
        healthy.pump()
        assert slow.client.queued == queued_bytes(slow.client)
        assert slow.client.queued <= 2 * STREAM_QUEUE
        assert slow.client.close_reason is None, "event frames are dropped, never a reason to close"

    feed(hub, source, pieces[:first_half], check)  # the slow client reads nothing
    assert slow.client.dropped_total > 0
    assert slow.notices("dropped") == [], "no notice while its queue is full"
    slow.pump()  # its socket drains
    notices = slow.notices("dropped")
    assert len(notices) == 1
    assert notices[0] == {"type": "notice", "notice": "dropped", "source": source.id, "events": slow.client.dropped_total}
    # Later it keeps up.
    def keep_up() -> None:
        check()
        slow.pump()

    feed(hub, source, pieces[first_half:], keep_up)
    slow.pump()
    assert sum(n["events"] for n in slow.notices("dropped")) == slow.client.dropped_total, "every drop is told"

    assert healthy.stream(source.id) == data, "the healthy client got every event"
    assert healthy.client.dropped_total == 0 and healthy.notices("dropped") == []
    stream = slow.stream(source.id)
    assert stream.startswith(header_of(data))
    items = read_events(stream, strict=True)
    got = runs(raw_events(stream), events)
    assert len(got) >= 2, "a gap where events were dropped"
    assert got[0][0] == 0, "from the start until the queue filled"
    for start, _ in got[1:]:
        assert events[start].type_id == fmt.BLOCK_MARKER_ID, "each resumption is at a block marker"
    assert got[-1][1] == len(events), "to the end"
    assert any(isinstance(item, DataEnd) for item in items)
    whole = [e for e in read_events(data) if isinstance(e, ev.Event)]
    decoded = [e for e in items if isinstance(e, ev.Event)]
    assert decoded == [e for start, end in got for e in whole[start:end]], "same events, same caps"


def test_a_slow_filtered_client_loses_whole_events_all_counted() -> None:
    """A filtered stream has no blocks to keep whole: once the client drains,
    the next events of its classes come, and what it got plus what it was told
    it lost is every event of its classes."""
    data = leech_stream(seed=17, threads=3, blocks=500)
    wanted = [e for e in raw_events(data) if e.type_id in service.CLASSES["samples"] | service.CLASSES["user"]]
    hub = Hub(HubLimits(queue_bytes=QUEUE))
    source = new_source(hub)
    view = View.connect(hub)
    view.call(1, "subscribe", classes=["samples", "user"])
    pieces = cuts(data, random.Random(17), 300)
    feed(hub, source, pieces[: len(pieces) // 2])
    assert view.client.dropped_total > 0 and view.client.close_reason is None
    view.pump()
    feed(hub, source, pieces[len(pieces) // 2:], view.pump)
    view.pump()
    got = raw_events(view.stream(source.id))
    reported = sum(n["events"] for n in view.notices("dropped"))
    assert reported == view.client.dropped_total
    assert len(got) + reported == len(wanted)
    matched = runs(got, wanted)
    assert matched[0][0] == 0 and matched[-1][1] == len(wanted), "from the start, to the end, nothing twice"


@pytest.mark.parametrize("seed", range(2))
def test_the_dropped_notice_counts_every_event_the_client_lost(seed: int) -> None:
    data = leech_stream(seed=seed, threads=3, blocks=500)
    events = raw_events(data)
    hub, source, slow, healthy, pieces = slow_and_healthy(data, seed)
    feed(hub, source, pieces[: len(pieces) // 2], healthy.pump)
    slow.pump()
    feed(hub, source, pieces[len(pieces) // 2:], slow.pump)
    received = len(raw_events(slow.stream(source.id)))
    reported = sum(n["events"] for n in slow.notices("dropped"))
    assert received + reported == len(events), f"received {received} + reported {reported} != {len(events)} written"


def test_the_dropped_notice_counts_the_events_skipped_to_the_next_block() -> None:
    """The smallest case: block A = marker, a1 (5,000 bytes), a2; block B =
    marker, b1; each fed on its own after the header.  With a 4,096-byte queue
    [marker A, a1] is dropped (2 counted), a2 is skipped waiting for block B
    (not counted); the client gets marker B and b1 and is told of 2 lost
    events where it lost 3."""
    w = EventLogWriter([EventType.of(ev.EventBlock), EventType.of(ev.UserMarker)])
    a1, a2, b1 = ev.UserMarker(2, 0, "x" * 5000), ev.UserMarker(3, 0, "a2"), ev.UserMarker(5, 0, "b1")
    block_a = w.block(0, [a1, a2], start_ts=1)
    block_b = w.block(0, [b1], start_ts=4)
    cut = len(block_a) - len(w.event(a2))
    hub = Hub(HubLimits(queue_bytes=QUEUE))
    source = new_source(hub)
    view = View.connect(hub)
    view.call(1, "subscribe")
    for piece in (w.header() + block_a[:cut], block_a[cut:], block_b):
        hub.source_data(source, piece)
    view.pump()
    got = [e for e in read_events(view.stream(source.id), strict=True) if isinstance(e, ev.Event)]
    assert [getattr(e, "marker", "block") for e in got] == ["block", "b1"]
    assert view.client.dropped_total == 3, "marker A, a1 and a2 were lost"
    assert view.notices("dropped") == [{"type": "notice", "notice": "dropped", "source": source.id, "events": 3}]


def test_a_slow_client_of_a_stream_without_blocks_resumes() -> None:
    """No block markers: a 5,000-byte event does not fit a 4,096-byte queue and
    is dropped; the client drains (and is told); the next event, 2 bytes of
    text, never reaches it, nor does anything after."""
    w = EventLogWriter([EventType.of(ev.UserMarker)])
    big, small = ev.UserMarker(1, None, "x" * 5000), ev.UserMarker(2, None, "ok")
    hub = Hub(HubLimits(queue_bytes=QUEUE))
    source = new_source(hub)
    view = View.connect(hub)
    view.call(1, "subscribe")
    hub.source_data(source, w.header() + w.event(big))
    view.pump()
    assert view.notices("dropped") == [{"type": "notice", "notice": "dropped", "source": source.id, "events": 1}]
    hub.source_data(source, w.event(small) + w.end())
    view.pump()
    assert view.stream(source.id) == w.header() + w.event(small) + w.end()


def test_a_slow_client_of_a_long_stream_without_blocks_resumes() -> None:
    data = blockless_stream(n=2000)
    events = raw_events(data)
    hub, source, slow, healthy, pieces = slow_and_healthy(data, 1, 300)
    half = len(pieces) // 2
    feed(hub, source, pieces[:half], healthy.pump)
    assert slow.client.dropped_total > 0
    slow.pump()
    got_before = len(raw_events(slow.stream(source.id)))
    feed(hub, source, pieces[half:], pumping(slow, healthy))
    assert healthy.stream(source.id) == data
    assert len(raw_events(slow.stream(source.id))) > got_before, "events flow again once the client keeps up"
    assert runs(raw_events(slow.stream(source.id)), events)[-1][1] == len(events)


def test_a_client_whose_queue_grows_past_twice_the_limit_is_closed() -> None:
    """Replies and snapshots are never dropped; a client that asks for them and
    never reads is closed, its queue emptied, and the others go on."""
    queue = 4 * QUEUE  # room for a subscription's header and snapshot (about 9 kB here)
    data = leech_stream(seed=5, blocks=200)
    events = raw_events(data)
    hub = Hub(HubLimits(queue_bytes=queue))
    source = new_source(hub)
    hub.source_data(source, data[: len(data) // 2])
    joined_at = source.events_in
    hog = View.connect(hub, "hog")
    healthy = View.connect(hub, "healthy")
    healthy.call(1, "subscribe")
    hog.call(1, "subscribe")
    for i in range(2, 100):
        hog.send(request(i, "state", source=source.id))
        if hog.client.close_reason is not None:
            break
        assert hog.client.queued <= 2 * queue and hog.client.queued == queued_bytes(hog.client)
    reason = hog.client.close_reason
    assert reason is not None and reason.startswith("too slow"), reason
    assert hog.client.queued == 0 and not hog.client.out
    before = len(hog.frames)
    feed(hub, source, cuts(data[len(data) // 2:], random.Random(5), 700), pumping(healthy, hog))
    assert not any(f.kind in (Kind.EVENTS, Kind.HEADER, Kind.STATE) for f in hog.frames[before:]), "nothing more for it"
    first = next(i for i in range(joined_at, len(events)) if events[i].type_id == fmt.BLOCK_MARKER_ID)
    assert healthy.stream(source.id) == header_of(data) + data[events[first].offset:]
    assert healthy.client.close_reason is None and healthy.client.dropped_total == 0


def test_take_output_gives_whole_frames_about_the_limit() -> None:
    data = leech_stream(seed=6, blocks=100)
    hub = Hub()
    source = new_source(hub)
    client = hub.add_client("x")
    assert client is not None
    hub.client_data(client, request(1, "subscribe"))
    for piece in cuts(data, random.Random(6), 100):
        hub.source_data(source, piece)
    decoder = FrameDecoder()
    takes: List[List[int]] = []
    while True:
        out = hub.take_output(client, 500)
        if not out:
            break
        decoder.feed(out)
        sizes: List[int] = []
        while True:
            frame = decoder.next_frame()
            if frame is None:
                break
            sizes.append(HEAD.size + len(frame.payload))
        assert decoder.buffered == 0, "a whole number of frames"
        assert sum(sizes) == len(out)
        takes.append(sizes)
    assert client.queued == 0
    assert len(takes) > 1
    for sizes in takes:
        assert sum(sizes[:-1]) < 500, "no frame is started past the limit"
    assert any(sum(sizes) >= 500 for sizes in takes[:-1]), "it stops once past the limit"


# == 5. Limits and notices =================================================================


def test_max_clients() -> None:
    hub = Hub(HubLimits(max_clients=2))
    first, second = hub.add_client("1"), hub.add_client("2")
    assert first is not None and second is not None and first.id != second.id
    assert hub.add_client("3") is None
    hub.remove_client(first)
    third = hub.add_client("3")
    assert third is not None and third.id not in (first.id, second.id)
    assert hub.add_client("4") is None


def test_max_sources() -> None:
    hub = Hub(HubLimits(max_sources=2))
    view = View.connect(hub)
    a, b = new_source(hub, "a"), new_source(hub, "b")
    assert hub.add_source("c", FILE) is None
    view.pump()
    assert [n["name"] for n in view.notices("source-added")] == ["a", "b"], "no notice for a refused source"
    hub.remove_source(a)
    c = hub.add_source("c", FILE)
    assert c is not None and c.id not in (a.id, b.id)
    assert [s["name"] for s in view.call(1, "sources")["result"]] == ["b", "c"]


def test_source_added_and_gone_notices() -> None:
    hub = Hub()
    subscriber = View.connect(hub, "sub")
    subscriber.call(1, "subscribe")
    watcher = View.connect(hub, "watch")
    a = hub.add_source("app", LEECH, "/tmp/lpm/app.eventlog", 77)
    assert a is not None
    for view in (subscriber, watcher):
        view.pump()
        assert view.notices("source-added") == [
            {"type": "notice", "notice": "source-added", "source": a.id, "name": "app", "source_kind": LEECH}]
    data = leech_stream(seed=9, end=False)
    hub.source_data(a, data)
    hub.source_closed(a)
    subscriber.pump()
    assert subscriber.notices("source-gone") == [{"type": "notice", "notice": "source-gone", "source": a.id, "name": "app"}]
    assert subscriber.stream(a.id) == data
    # The gone notice comes after the source's last events.
    kinds = subscriber.kinds()
    assert kinds[-1] == (Kind.SERVICE, 0) and kinds[-2] == (Kind.EVENTS, a.id)
    assert a.info()["live"] is False and a.info()["ended"] is False


def test_source_closed_flushes_nothing_of_a_cut_event_and_notifies_every_client() -> None:
    hub = Hub()
    a, b = new_source(hub, "a"), new_source(hub, "b")
    view = View.connect(hub)
    view.call(1, "subscribe", sources=[a.id])
    data = leech_stream(seed=10)
    cut = raw_events(data)[-3].offset + 4
    hub.source_data(a, data[:cut])
    hub.source_closed(a)
    hub.source_closed(b)
    view.pump()
    assert view.stream(a.id) == data[: raw_events(data)[-3].offset]
    # Every client hears of every source that comes and goes, as with source-added.
    assert [n["source"] for n in view.notices("source-gone")] == [a.id, b.id]


def test_a_client_subscribed_to_all_gets_sources_added_later_from_their_start() -> None:
    hub = Hub()
    view = View.connect(hub)
    filtered = View.connect(hub)
    assert view.call(1, "subscribe")["result"] == {"sources": []}
    filtered.call(1, "subscribe", sources="all", classes=["samples"])
    rnd = random.Random(12)
    sources = [new_source(hub, name) for name in ("one", "two")]
    datas = [leech_stream(seed=12), sample_eventlog(seed=12, seconds=1)]
    for source, data in zip(sources, datas):
        feed(hub, source, cuts(data, rnd, 800), pumping(view, filtered))
    for source, data in zip(sources, datas):
        assert view.stream(source.id) == data
        assert view.states(source.id) and view.states(source.id)[0]["state"]["events"] == 0
        wanted = [e for e in raw_events(data) if e.type_id in service.CLASSES["samples"]]
        assert filtered.stream(source.id) == header_of(data) + b"".join(e.raw for e in wanted) + fmt.DATA_END
    assert [n["source"] for n in view.notices("source-added")] == [s.id for s in sources]


# == 6. A restarted source ==================================================================


def restarted(end_marker: bool) -> Tuple[bytes, bytes, bytes]:
    """Two streams back to back (the second with a different header); the
    first with or without its end marker."""
    first = leech_stream(seed=13, blocks=30, end=end_marker)
    w2 = EventLogWriter([EventType.of(c) for c in (ev.EventBlock, ev.PyBlockInfo, ev.PySample, ev.UserMarker, ev.PyCounter,
                                                    ev.PyDataLoss, ev.PySeqPoint, ev.StopThread, ev.CreateThread,
                                                    ev.RtsIdentifier, ev.OsProcessPid)])
    second = leech_stream(seed=14, blocks=30, writer=w2)
    assert w2.header() != EventLogWriter().header()
    return first + second, first, second


@pytest.mark.parametrize("end_marker", [True, False])
def test_a_restarted_source_sends_a_new_header_and_what_follows_it(end_marker: bool) -> None:
    data, first, second = restarted(end_marker)
    rnd = random.Random(15)
    hub = Hub()
    source = new_source(hub)
    view = View.connect(hub)
    view.call(1, "subscribe")
    feed(hub, source, cuts(data, rnd, 300), view.pump)
    assert [f.payload for f in view.frames if f.kind is Kind.HEADER] == [header_of(first), header_of(second)]
    assert view.stream(source.id) == data
    at = next(i for i, f in enumerate(view.frames) if f.kind is Kind.HEADER and f.payload == header_of(second))
    assert {f.kind for f in view.frames[at + 1:]} == {Kind.EVENTS}
    assert b"".join(f.payload for f in view.frames[at:]) == second
    assert source.state.headers == 2


@pytest.mark.parametrize("end_marker", [True, False])
def test_a_late_joiner_waiting_for_a_block_starts_at_the_new_header(end_marker: bool) -> None:
    data, first, second = restarted(end_marker)
    events = raw_events(first)
    hub = Hub()
    source = new_source(hub)
    join = events[-2].offset  # inside the first stream's last block
    hub.source_data(source, data[:join])
    view = View.connect(hub)
    view.call(1, "subscribe")
    hub.source_data(source, data[join:])
    view.pump()
    assert [f.payload for f in view.frames if f.kind is Kind.HEADER] == [header_of(first), header_of(second)]
    assert view.stream(source.id) == header_of(first) + second
    acct = account(view.stream(source.id))
    assert acct.threads and all(t.balanced for t in acct.threads.values())


# == 7. The sink ==============================================================================


@pytest.mark.parametrize("seed", range(4))
def test_the_sink_gets_every_chunk_and_they_rebuild_the_input(seed: int) -> None:
    rnd = random.Random(seed)
    if seed == 0:
        data = restarted(True)[0]
    elif seed == 1:
        data = restarted(False)[0]
    elif seed == 2:
        data = sample_eventlog(seed=2, seconds=1)
    else:
        data = blockless_stream()
    chunks: List[Tuple[int, Chunk]] = []
    hub = Hub(sink=lambda source, chunk: chunks.append((source.id, chunk)))
    a, b = new_source(hub, "a"), new_source(hub, "b")
    other = leech_stream(seed=seed)
    with_client = View.connect(hub)
    with_client.call(1, "subscribe", sources=[b.id])
    for piece, piece_b in itertools.zip_longest(cuts(data, rnd, rnd.choice([1, 50, 999])), cuts(other, rnd, 400)):
        if piece is not None:
            hub.source_data(a, piece)
        if piece_b is not None:
            hub.source_data(b, piece_b)
    hub.source_closed(a)
    hub.source_closed(b)

    def rebuilt(source: Source) -> bytes:
        return b"".join((c.header or b"") + c.raw for sid, c in chunks if sid == source.id)

    assert rebuilt(a) == data, "no client needed"
    assert rebuilt(b) == other
    assert read_events(rebuilt(a), strict=True) == read_events(data, strict=True)
    a_chunks = [c for sid, c in chunks if sid == a.id]
    assert sum(c.count for c in a_chunks) == len(raw_events(data)) == a.events_in
    assert all(c.count or c.header is not None or c.end for c in a_chunks), "no empty chunk"


# == bugs found: headers are re-encoded ===========================================================


def handmade_header(decls: Sequence[Tuple[int, int, bytes]]) -> bytes:
    """A header with its declarations in the given order, descriptions as bytes."""
    parts = [fmt.HEADER_BEGIN, fmt.HET_BEGIN]
    for type_id, size, desc in decls:
        parts += [fmt.ET_HEAD.pack(fmt.ET_BEGIN, type_id, size, len(desc)), desc, fmt.U32.pack(0), fmt.ET_END]
    parts += [fmt.HET_END, fmt.HEADER_END, fmt.DATA_BEGIN]
    return b"".join(parts)


def decl(cls: type[ev.Event]) -> Tuple[int, int, bytes]:
    t = EventType.of(cls)
    return (t.id, t.size, t.description.encode())


def handmade_stream(header: bytes) -> bytes:
    w = EventLogWriter([EventType.of(ev.EventBlock), EventType.of(ev.UserMarker)])
    return header + w.block(0, [ev.UserMarker(1, 0, "a"), ev.UserMarker(2, 0, "b")]) + w.end()


def subscriber_and_sink(data: bytes) -> Tuple[bytes, bytes]:
    chunks: List[Chunk] = []
    hub = Hub(sink=lambda source, chunk: chunks.append(chunk))
    source = new_source(hub)
    view = View.connect(hub)
    view.call(1, "subscribe")
    hub.source_data(source, data)
    view.pump()
    return view.stream(source.id), b"".join((c.header or b"") + c.raw for c in chunks)


def test_a_header_in_id_order_is_forwarded_as_written() -> None:
    data = handmade_stream(handmade_header([decl(ev.EventBlock), decl(ev.UserMarker)]))
    assert subscriber_and_sink(data) == (data, data)


def test_a_header_not_in_id_order_is_forwarded_as_written() -> None:
    data = handmade_stream(handmade_header([decl(ev.UserMarker), decl(ev.EventBlock)]))
    assert read_events(data, strict=True)  # a valid eventlog
    stream, recorded = subscriber_and_sink(data)
    assert stream == data
    assert recorded == data


def test_a_header_with_a_description_that_is_not_utf8_is_forwarded_as_written() -> None:
    block_id, block_size, _ = decl(ev.EventBlock)
    marker_id, marker_size, _ = decl(ev.UserMarker)
    data = handmade_stream(handmade_header([(block_id, block_size, b"block \xff"), (marker_id, marker_size, b"\xfe\xfe")]))
    assert read_events(data, strict=True)
    stream, recorded = subscriber_and_sink(data)
    assert stream == data
    assert recorded == data


def test_generated_streams_are_what_the_tests_assume() -> None:
    """The helpers' own promises: unique events, balanced accounts."""
    data = leech_stream(seed=1, blocks=100)
    events = raw_events(data)
    assert len({e.raw for e in events}) == len(events)
    acct = account(data)
    assert len(acct.threads) == 3 and all(t.balanced and t.finished for t in acct.threads.values())
    assert sum(t.lost for t in acct.threads.values()) > 0, "some reported loss, as a leech writes"
    assert not any(e.type_id == fmt.BLOCK_MARKER_ID for e in raw_events(blockless_stream()))


def test_secrets_only_for_a_local_client_that_proved_the_token() -> None:
    """The one way around redaction: a server with a token, a client on its
    machine (loopback over TCP or UDP) that authenticated; anyone else gets
    an error saying why, and the reader is not even asked."""
    token = b"t0ken"
    asked: List[int] = []

    def secrets(source: Source) -> Dict[str, object]:
        asked.append(source.id)
        return {"pid": 99, "args": ["app", "--password=x"], "env": ["API_TOKEN=s3cret"]}

    def authenticated(hub: Hub, peer: str) -> View:
        view = View.connect(hub, peer)
        view.pump()
        [challenge] = view.notices("challenge")
        assert view.call(1, "auth", proof=service.proof(token, challenge["nonce"]))["type"] == "reply"
        return view

    hub = Hub(token=token, secrets=secrets)
    a = new_source(hub, "a")
    for peer in ("127.0.0.1:5000", "[::1]:5000", "udp 127.0.0.1:5000", "127.9.9.9:1"):
        answer = authenticated(hub, peer).call(2, "secrets", source=a.id)
        assert answer["type"] == "reply", f"{peer}: {answer}"
        assert answer["result"] == {"source": a.id, "pid": 99, "args": ["app", "--password=x"],
                                    "env": ["API_TOKEN=s3cret"]}
    assert asked == [a.id] * 4
    for peer in ("10.1.2.3:5000", "udp 192.168.0.9:5000", "[2001:db8::1]:5000", "peer"):
        answer = authenticated(hub, peer).call(2, "secrets", source=a.id)
        assert answer["type"] == "error" and "machine" in answer["error"], f"{peer}: {answer}"
    unproven = View.connect(hub, "127.0.0.1:6000")
    answer = unproven.call(2, "secrets", source=a.id)
    assert answer["type"] == "error" and "authenticate first" in answer["error"]
    assert asked == [a.id] * 4

    open_hub = Hub(secrets=secrets)  # no token: any local user could ask
    b = new_source(open_hub, "b")
    answer = View.connect(open_hub, "127.0.0.1:5000").call(1, "secrets", source=b.id)
    assert answer["type"] == "error" and "--token-file" in answer["error"]
    assert asked == [a.id] * 4

    def unreadable(source: Source) -> Dict[str, object]:
        raise LookupError("source 1 (a) is not a running program on this machine")

    hub = Hub(token=token, secrets=unreadable)
    c = new_source(hub, "c")
    answer = authenticated(hub, "127.0.0.1:5000").call(2, "secrets", source=c.id)
    assert answer == {"type": "error", "id": 2, "error": "source 1 (a) is not a running program on this machine"}
