"""Print an eventlog, one event per line, as it arrives.

FILE is an eventlog file, a FIFO a program is writing into (GHC's
+RTS -l -ol<fifo>), or - for standard input.  Lines read like
`ghc-events show`: "TIMESTAMP: cap N: what happened", in stream order.

With --stats, print the number of events of each type instead, and totals;
--json makes that one JSON object with "total", "by_id", "complete",
"header_types" and more.

Exit status: 0 for a complete stream and for one that stops early (a killed
program: a note goes to stderr); 1 with a one-line message for corrupt input.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from typing import IO, Iterator, TextIO

from ..errors import CommandError, FormatError
from ..leech.paths import open_reader
from ..eventlog import (
    EVENT_TYPES,
    NEED_DATA,
    DataEnd,
    EndOfStream,
    Event,
    EventLogReader,
    Header,
    Skipped,
    UnknownEvent,
)

HELP = "print an eventlog file or FIFO as text, or count its events"

CHUNK = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="eventlog file or FIFO, or - for standard input")
    parser.add_argument("--stats", action="store_true", help="count events per type instead of printing them")
    parser.add_argument("--json", action="store_true", help="with --stats: print one JSON object")
    parser.add_argument("--no-header", action="store_true", help="do not print the header's event types")


def run(args: argparse.Namespace) -> int:
    if args.json and not args.stats:
        raise CommandError("--json goes with --stats", exit_code=2)
    out = sys.stdout
    try:
        if args.stats:
            return stats_file(args.file, out, as_json=args.json)
        return show_file(args.file, out, header=not args.no_header)
    except BrokenPipeError:
        # Output piped into `head`: stop quietly, and keep Python from
        # complaining again while flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    try:
        if stat.S_ISFIFO(os.stat(path).st_mode):
            return open(open_reader(path), "rb", buffering=0)
        return open(path, "rb", buffering=0)
    except OSError as err:
        raise CommandError(f"cannot open {path}: {err.strerror}") from None


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        data = stream.read(CHUNK)
        if not data:
            return
        yield data


def show_file(name: str, out: TextIO, header: bool = True) -> int:
    """Print the eventlog in file (or FIFO, or ``-``) ``name`` to ``out``.

    Raises:
        CommandError: the file cannot be opened or is corrupt.
    """
    with _open(name) as stream:
        reader = EventLogReader()
        try:
            for data in _chunks(stream):
                reader.feed(data)
                _print_items(reader, out, header, name)
                out.flush()
            reader.close()
            _print_items(reader, out, header, name)
        except FormatError as err:
            raise CommandError(f"{name}: corrupt eventlog {err}") from None
    return 0


def _print_items(reader: EventLogReader, out: TextIO, header: bool, name: str) -> None:
    write = out.write
    while True:
        item = reader.next_event()
        if item is NEED_DATA:
            return
        if isinstance(item, Event):
            text = item.describe()
            if isinstance(item, UnknownEvent) and reader.header is not None:
                et = reader.header.types.get(item.type_id)
                if et is not None:
                    text = f"{et.description} (unknown type {item.type_id}, {len(item.data)} bytes)"
            # Bytes that are not UTF-8 survive decoding as surrogates: escape them.
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
            if item.cap is None:
                write(f"{item.ts}: {text}\n")
            else:
                write(f"{item.ts}: cap {item.cap}: {text}\n")
        elif isinstance(item, Header):
            if header:
                write("Event Types:\n")
                for et in sorted(item.types.values(), key=lambda t: t.id):
                    size = "variable" if et.variable else str(et.size)
                    write(f"{et.id}: {et.description} (size {size})\n")
                write("\nEvents:\n")
        elif isinstance(item, Skipped):
            write(f"-- skipped {item.length} bytes at offset {item.offset} that are not an eventlog\n")
        elif isinstance(item, DataEnd):
            write("-- end of data\n")
        elif isinstance(item, EndOfStream):
            _note_end(item, name)


def _note_end(item: EndOfStream, name: str) -> None:
    if not item.complete:
        extra = f" ({item.pending} bytes of an unfinished item)" if item.pending else ""
        print(f"lpm show: {name}: stream stops without its end marker{extra}", file=sys.stderr)


def stats_file(name: str, out: TextIO, as_json: bool = False) -> int:
    """Count the events in file (or FIFO, or ``-``) ``name`` per type; print to ``out``.

    Raises:
        CommandError: the file cannot be opened or is corrupt.
    """
    with _open(name) as stream:
        try:
            return _stats(stream, out, as_json, name)
        except FormatError as err:
            raise CommandError(f"{name}: corrupt eventlog {err}") from None


def _stats(stream: IO[bytes], out: TextIO, as_json: bool, name: str) -> int:
    reader = EventLogReader()
    by_id: dict[int, int] = {}
    header_types = 0
    segments = 0
    skipped = 0
    end: EndOfStream | None = None

    def drain() -> None:
        nonlocal header_types, segments, skipped, end
        while True:
            item = reader.count(by_id)
            if item is NEED_DATA:
                return
            if isinstance(item, Header):
                header_types = len(item.types)
                segments += 1
            elif isinstance(item, Skipped):
                skipped += item.length
            elif isinstance(item, EndOfStream):
                end = item

    for data in _chunks(stream):
        reader.feed(data)
        drain()
    reader.close()
    drain()
    assert end is not None
    total = sum(by_id.values())
    known = reader.header.types if reader.header else {}
    if as_json:
        result = {
            "total": total,
            "by_id": {str(k): v for k, v in sorted(by_id.items())},
            "complete": end.complete,
            "header_types": header_types,
            "segments": segments,
            "bytes": end.offset,
            "skipped_bytes": skipped,
            "pending_bytes": end.pending,
        }
        out.write(json.dumps(result) + "\n")
    else:
        width = max([len(str(n)) for n in by_id.values()] + [5])
        out.write(f"{'id':>5}  {'count':>{width}}  type\n")
        for type_id, n in sorted(by_id.items()):
            cls = EVENT_TYPES.get(type_id)
            et = known.get(type_id)
            label = cls.__name__ if cls else f"unknown ({et.description if et else '?'})"
            out.write(f"{type_id:>5}  {n:>{width}}  {label}\n")
        out.write(f"\n{total} events of {len(by_id)} types; {header_types} types declared; {end.offset} bytes")
        if segments > 1:
            out.write(f"; {segments} headers (the writer restarted)")
        if skipped:
            out.write(f"; {skipped} bytes skipped before a header")
        out.write("; complete\n" if end.complete else "; INCOMPLETE: no end marker\n")
    _note_end(end, name)
    return 0
