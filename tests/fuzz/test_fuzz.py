"""The quick, seeded fuzz pass over every decoder a peer can reach.

Each test runs a fixed number of cases (the number is in its id, e.g.
``test_fuzz[frames-4000]``) from seed 1, so a failure here is reproduced by
running the same test again, and by ``bench/fuzz.py --seed 1``, which goes on
for as long as it is told.  A case fails on an exception the decoder does not
document, on a case slower than :data:`CASE_LIMIT`, and on a long-lived
decoder over its buffering bound (see :mod:`tests.fuzz.cases`).

Bugs the fuzz found that are not fixed yet are listed in
:data:`tests.fuzz.cases.KNOWN` and have a strict-xfail reproducer below: the
fuzz tolerates them (only them), and when one is fixed its reproducer passes,
fails as XPASS, and the entry is to be removed from ``KNOWN``.
"""

from __future__ import annotations

import random
from typing import Callable, Dict

import pytest

from lpm.errors import ProtocolError
from lpm.protocol import service
from lpm.protocol.frames import Frame, Kind, encode_frame
from lpm.server import http
from lpm.server.hub import Hub

from . import cases

SEED = 1
#: Generous for a slow 2-core machine under load; bench/fuzz.py uses 1 s.
CASE_LIMIT = 2.0
#: Cases per decoder: about a second each here, under 20 s in all on a slow machine.
COUNTS: Dict[str, int] = {
    "eventlog-strict": 1500,
    "eventlog-lenient": 700,
    "source": 1000,
    "frames": 4000,
    "hub-client": 1200,
    "service": 5000,
    "udp-server": 4000,
    "udp-client": 4000,
    "http": 4000,
}


def test_every_decoder_is_fuzzed() -> None:
    assert set(COUNTS) == set(cases.FUZZERS)


@pytest.mark.parametrize("name,count", list(COUNTS.items()), ids=[f"{n}-{c}" for n, c in COUNTS.items()])
def test_fuzz(name: str, count: int, record_property: Callable[[str, object], None]) -> None:
    """``count`` seeded cases: no undocumented exception (other than a KNOWN
    bug), no slow case, bounded buffers."""
    fuzzer = cases.FUZZERS[name]()
    try:
        report = cases.run(fuzzer, SEED, cases=count, case_limit=CASE_LIMIT)
    finally:
        fuzzer.close()
    record_property("cases", report.cases)
    record_property("failures", report.by_signature)
    assert report.cases == count
    unknown = report.unknown()
    assert not unknown, "\n\n".join(f.describe() for f in unknown)


def test_mutations_are_seeded() -> None:
    """The same seed gives the same inputs: a reported case can be replayed."""
    for name in ("eventlog-strict", "frames", "http"):
        a, b = cases.FUZZERS[name](), cases.FUZZERS[name]()
        try:
            for i in range(50):
                assert a.generate(cases.case_rng(7, name, i)) == b.generate(cases.case_rng(7, name, i))
        finally:
            a.close()
            b.close()


def test_the_watchdog_interrupts_a_hang() -> None:
    """A case that never returns is a failure, not a stuck test run."""

    class Stuck(cases.Fuzzer):
        name = "stuck"

        def generate(self, rng: random.Random) -> bytes:
            return b""

        def check(self, data: bytes, rng: random.Random) -> None:
            while True:
                pass

    watchdog = cases._Watchdog(0.2)
    if not watchdog.active:
        pytest.skip("no SIGALRM here")
    report = cases.run(Stuck(), 0, cases=1, hang_limit=0.2)
    assert report.failed == 1 and list(report.by_signature)[0].startswith("Hang in "), report.by_signature


# == the bugs the fuzz found, fixed, kept as regression tests ========================
#
# The first three stopped a real ``lpm server``: the exception reached its
# selector loop and the server exited 1.  Any TCP client that could connect
# (or UDP client holding the token) could send the nested JSON; any HTTP
# client the bad target.

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_service_message_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        service.decode(DEEP)


def test_hub_closes_a_client_that_sends_deeply_nested_json() -> None:
    hub = Hub()
    client = hub.add_client("bad")
    assert client is not None
    hub.client_data(client, encode_frame(Frame(Kind.SERVICE, 0, b"[" * 2000)))  # must not raise
    assert client.close_reason is not None


def test_bad_ipv6_target_is_an_http_error() -> None:
    with pytest.raises(http.HttpError):
        http.RequestParser().feed(b"GET http://[oops/api/sources HTTP/1.1\r\n\r\n")


def test_a_reader_holds_a_bounded_header() -> None:
    """Each declaration is capped (MAX_DESCRIPTION, MAX_EXTRA) but not their
    number or sum: 600 declarations with a 64 KiB extra field each, fed to the
    lenient reader a server gives every source, are kept (about twice: the
    types and the header's raw bytes), 80 MB for 40 MB of garbage; 65,536 of
    them would be gigabytes, while ``buffered`` says 0."""
    import struct
    import tracemalloc

    from lpm.eventlog import format as fmt
    from lpm.eventlog.reader import NEED_DATA, EventLogReader

    reader = EventLogReader(strict=False)
    extra = b"x" * fmt.MAX_EXTRA
    tracemalloc.start()
    try:
        reader.feed(fmt.HEADER_BEGIN + fmt.HET_BEGIN)
        for type_id in range(600):
            reader.feed(fmt.ET_HEAD.pack(fmt.ET_BEGIN, type_id, 0xFFFF, 0) + struct.pack(">I", len(extra))
                        + extra + fmt.ET_END)
            while reader.next_event() is not NEED_DATA:
                pass
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert reader.buffered <= cases.READER_BOUND
    assert held < 16 << 20, f"the reader holds {held / (1 << 20):.0f} MiB"
