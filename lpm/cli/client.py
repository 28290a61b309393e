"""Talk to a running `lpm server`.

    python -m lpm client sources                   # what the server watches
    python -m lpm client state 2                   # a source's live state (--json for all of it)
    python -m lpm client show --source 2           # its events as text, live
    python -m lpm client top                       # threads, hottest functions, GC, heap: live
    python -m lpm client record out.eventlog --source 2
    python -m lpm client pause 2 | resume 2 | rate 2 200
    python -m lpm client trace 2 on                # every call and return from now on
    python -m lpm client calls 2                   # the exact call tree, with times

Every subcommand takes --server HOST:PORT (default 127.0.0.1:8242), or
--udp HOST:PORT to speak lpm's reliable UDP transport to a server started
with --udp (events lost on the way are counted and reported, not repaired).
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from .. import tls
from ..client import Client, ServiceError
from ..client.model import Snapshot
from ..errors import CommandError
from ..eventlog import EventLogReader
from ..eventlog.events import Event
from ..eventlog.reader import NEED_DATA
from .server import _address, read_token

HELP = "talk to a running lpm server: sources, state, show, record, pause, resume, rate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", type=_address, default=("127.0.0.1", 8242), metavar="HOST:PORT",
                        help="the server (default 127.0.0.1:8242)")
    parser.add_argument("--udp", type=_address, metavar="HOST:PORT",
                        help="talk to the server's --udp listener over lpm's UDP transport instead of TCP")
    parser.add_argument("--token-file", metavar="FILE", help="the server's token (the file's first line), over TCP or UDP")
    parser.add_argument("--tls", action="store_true",
                        help="TCP over TLS (a server with --tls-cert), its certificate checked against the system's "
                        "trust store and the --server host name")
    parser.add_argument("--tls-ca", metavar="PEM", help="trust this CA or self-signed certificate instead (implies --tls)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for the server (default 10)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("sources", help="list the sources the server watches")
    p = sub.add_parser("state", help="a source's live state")
    p.add_argument("source", type=int)
    p.add_argument("--json", action="store_true", help="the whole snapshot as JSON")
    p.add_argument("--show-secrets", action="store_true",
                   help="the program's command line and environment unredacted, read from the running process "
                   "(only for a client on the server's machine, with the server's --token-file)")
    for name in ("pause", "resume"):
        sub.add_parser(name, help=f"{name} a source's leech").add_argument("source", type=int)
    p = sub.add_parser("trace", help="call tracing on or off in a source's leech")
    p.add_argument("source", type=int)
    p.add_argument("mode", choices=["on", "off"])
    p = sub.add_parser("calls", help="a source's traced call tree: calls and times per path (lpm run --trace)")
    p.add_argument("source", type=int)
    p.add_argument("--depth", type=int, default=8, metavar="N", help="deepest level printed (default 8)")
    p.add_argument("--most", type=int, default=200, metavar="N", help="busiest paths kept (default 200)")
    p.add_argument("--json", action="store_true", help="the whole tree as JSON")
    p = sub.add_parser("rate", help="set a source's sample rate")
    p.add_argument("source", type=int)
    p.add_argument("hz", type=float)
    p = sub.add_parser("show", help="events as text, live")
    p.add_argument("--source", type=int, action="append", help="only this source (repeatable; default all)")
    p.add_argument("--classes", help="only these event classes, comma-separated (threads, gc, heap, samples, user, ...)")
    p.add_argument("--count", type=int, help="stop after this many events")
    p = sub.add_parser("top", help="a live terminal view: threads, hottest functions, GC, heap, loss")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between refreshes (default 1)")
    p.add_argument("--rounds", type=int, metavar="N", help="plain text only: print N times, then stop")
    p.add_argument("--plain", action="store_true", help="periodic plain text even on a terminal")
    p = sub.add_parser("export", help="speedscope, Chrome trace, collapsed stacks or eventlog, from a recording or live")
    p.add_argument("format", choices=["speedscope", "chrome", "collapsed", "eventlog"])
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write it ('-': stdout)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--from", dest="recording", metavar="FILE", help="an eventlog file (a recording)")
    group.add_argument("--source", type=int, help="a live source: record it for --seconds first")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to record a live source (default 5)")
    p = sub.add_parser("record", help="write a source's stream to a valid eventlog file, live")
    p.add_argument("file")
    p.add_argument("--source", type=int, required=True)
    p.add_argument("--until-gone", action="store_true", help="stop when the source ends (default: at Ctrl-C)")


def run(args: argparse.Namespace) -> int:
    action = args.action
    if action in ("sources", "state", "pause", "resume", "rate", "trace", "calls"):
        return _service(args)
    if action == "show":
        return _show(args)
    if action == "export":
        return _export(args)
    if action == "top":
        return _top(args)
    return _record(args)


def _new_client(args: argparse.Namespace, **options: Any) -> Client:
    """A client of --server, or of --udp over UDP, not started."""
    address = args.udp or args.server
    token = read_token(args.token_file) if args.token_file else None
    context = None
    if args.tls or args.tls_ca:
        if args.udp:
            raise CommandError("--tls is for TCP; the UDP transport authenticates every packet with the token instead",
                               exit_code=2)
        try:
            context = tls.client_context(args.tls_ca)
        except (OSError, ValueError) as err:
            raise CommandError(f"cannot use {args.tls_ca} as a CA certificate: {tls.describe(err)}") from None
    return Client(address, transport="udp" if args.udp else "tcp", token=token, connect_timeout=args.timeout,
                  tls=context, **options)


def _connected(args: argparse.Namespace, **options: Any) -> Client:
    """A started client, connected within --timeout (else a CommandError)."""
    client = _new_client(args, **options).start()
    if not client.connected.wait(args.timeout):
        client.close()
        where = f"UDP {args.udp[0]}:{args.udp[1]}" if args.udp else f"{args.server[0]}:{args.server[1]}"
        why = f": {_why(client.last_error, client.tls is not None)}" if client.last_error is not None else ""
        raise CommandError(f"cannot reach the server at {where}{why}")
    return client


def _why(error: BaseException, secure: bool) -> str:
    """A connection failure in a few words, with what to do for the TLS ones."""
    if isinstance(error, ssl.SSLCertVerificationError):
        message = error.verify_message or str(error)
        if "mismatch" in message:
            return f"{message} (connect by a name or address the certificate holds)"
        return f"{message} (give the server's certificate or its CA with --tls-ca)"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {tls.describe(error)} (does the server use --tls-cert?)"
    if isinstance(error, (TimeoutError, socket.timeout)) and not secure:
        return "timed out (a server started with --tls-cert wants --tls or --tls-ca)"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


def _lost(message: Dict[str, Any]) -> Optional[str]:
    """The text of a notice of loss, or None."""
    if message.get("notice") == "dropped":
        return f"{message['events']} events of source {message['source']} dropped by the server (this client is slow)"
    if message.get("notice") == "lost":
        return f"{message['events']} events lost on the way (UDP)"
    return None


def _service(args: argparse.Namespace) -> int:
    states: List[Snapshot] = []
    got_state = threading.Event()

    def on_state(snapshot: Snapshot) -> None:
        states.append(snapshot)
        got_state.set()

    client = _connected(args, reconnect=False, on_state=on_state)
    try:
        if args.action == "sources":
            _print_sources(client.call("sources", args.timeout))
        elif args.action == "state":
            client.call("state", args.timeout, source=args.source)
            if not got_state.wait(args.timeout):
                raise CommandError("the server sent no state")
            snapshot = states[-1]
            shown = client.call("secrets", args.timeout, source=args.source) if args.show_secrets else None
            if args.json:
                raw = snapshot.raw
                if shown is not None:
                    raw = {**raw, "secrets": shown}
                print(json.dumps(raw, indent=1))
            else:
                print(_describe(snapshot))
                if shown is not None:
                    print(f"  command line (unredacted, pid {shown['pid']}): {' '.join(shown['args'])}")
                    print("  environment (unredacted):")
                    for item in shown["env"]:
                        print(f"    {item}")
        elif args.action == "rate":
            client.call("rate", args.timeout, source=args.source, hz=args.hz)
            print(f"source {args.source}: sample rate {args.hz:g} Hz sent")
        elif args.action == "trace":
            client.call("trace", args.timeout, source=args.source, mode=args.mode)
            print(f"source {args.source}: call tracing {args.mode} sent")
        elif args.action == "calls":
            reply = client.call("calls", args.timeout, source=args.source, most=args.most)
            if args.json:
                print(json.dumps(reply["tree"], indent=1))
            elif not reply["calls"]:
                print(f"source {args.source}: no traced calls (start it with lpm run --trace, or "
                      f"lpm client trace {args.source} on)")
            else:
                print(f"source {args.source}: {reply['calls']:,} traced calls (calls, total, own per path)")
                _print_tree(reply["tree"], args.depth)
        else:
            client.call(args.action, args.timeout, source=args.source)
            print(f"source {args.source}: {args.action} sent")
    except ServiceError as err:
        raise CommandError(str(err)) from None
    except (ConnectionError, TimeoutError) as err:
        raise CommandError(f"the server did not answer: {err}") from None
    finally:
        client.close()
    return 0


def _print_sources(sources: List[Dict[str, Any]]) -> None:
    print(f"{'id':>4}  {'name':<24} {'kind':<7} {'pid':>7}  {'live':<5} {'events':>10}  rts")
    for s in sources:
        print(f"{s['id']:>4}  {s['name'][:24]:<24} {s['kind']:<7} {s['pid'] or '-':>7}  "
              f"{'yes' if s['live'] else 'no':<5} {s['events']:>10,}  {s.get('rts') or ''}")


def _describe(s: Snapshot) -> str:
    lines = [f"source {s.source} ({s.name}): {s.events:,} events, {len(s.threads)} threads, {s.samples:,} samples"]
    program = s.program
    if program.get("pid") is not None:
        lines.append(f"  pid {program.get('pid')}  {program.get('rts', '')}")
    lines.append(f"  gc: {s.gc.collections} collections {dict(sorted(s.gc.by_generation.items()))}, "
                 f"pause last {_ms(s.gc.last_pause_ns)} max {_ms(s.gc.max_pause_ns)}")
    if s.heap:
        lines.append("  heap: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.heap.items())))
    lines.append("  threads:")
    for t in s.threads[:20]:
        cpu = f"{t.cpu_ns / 1e9:.2f} s CPU" if t.cpu_ns is not None else ""
        lines.append(f"    {t.id:>4} {t.label[:30]:<30} {t.status:<12} {cpu}")
    if s.functions:
        lines.append("  hottest functions (samples: total own):")
        for f in s.functions[:10]:
            lines.append(f"    {f.total:>6} {f.own:>6}  {f.name}  {f.file}:{f.line}")
    if s.traced:
        lines.append(f"  traced calls ({s.traced_calls:,} in all; calls, total, own):")
        for fn in s.traced[:10]:
            lines.append(f"    {fn.calls:>9,} {_ms(fn.total_ns):>12} {_ms(fn.own_ns):>12}  {fn.name}  {fn.file}:{fn.line}")
    aio = s.raw.get("asyncio") or {}
    if aio.get("created"):
        lag = aio.get("lag_ms")
        lines.append(f"  asyncio: {aio['created']:,} tasks: {aio['open']:,} open, {aio['done']:,} done, "
                     f"{aio['failed']:,} failed, {aio['cancelled']:,} cancelled; loop lag "
                     f"{'-' if lag is None else f'{lag:.1f} ms'} (max {aio.get('lag_ms_max') or 0:.1f} ms)")
        for t in aio.get("open_tasks", [])[:10]:
            awaiting = f", awaiting {t['awaiting']}" if t.get("awaiting") else ""
            lines.append(f"    open: {t['name']} ({t['coroutine']}){awaiting}")
    allocs = s.allocations
    if allocs.get("threads"):
        labels = {t.id: t.label for t in s.threads}
        lines.append("  allocations (allocated, freed, in blocks):")
        for t in allocs["threads"][:20]:
            lines.append(f"    {t['thread']:>4} {labels.get(t['thread'], '')[:30]:<30} {t['allocated'] / 1e6:>10.1f} MB "
                         f"{t['freed'] / 1e6:>10.1f} MB {t['allocations']:>10,}")
        for site in allocs.get("sites", [])[:10]:
            lines.append(f"    {site['bytes'] / 1e6:>10.1f} MB sampled  {site['name']}  {site['file']}:{site['line']}")
    loss = s.loss
    lines.append(f"  loss: {loss.reported_lost} reported lost, {loss.unreported} unreported, {loss.events_lost} dropped by the leech")
    return "\n".join(lines)


def _print_tree(node: Dict[str, Any], depth: int, level: int = 0) -> None:
    for child in sorted(node["children"], key=lambda c: c["total_ns"], reverse=True):
        print(f"{child['calls']:>10,} {_ms(child['total_ns']):>12} {_ms(child['own_ns']):>12}  "
              f"{'  ' * level}{child['name']}")
        if level + 1 < depth:
            _print_tree(child, depth, level + 1)


def _ms(ns: Optional[int]) -> str:
    return "-" if ns is None else f"{ns / 1e6:.2f} ms"


def _show(args: argparse.Namespace) -> int:
    seen = [0]
    done = threading.Event()

    def on_event(source: int, e: Event) -> None:
        cap = "" if e.cap is None else f"cap {e.cap}: "
        print(f"{source:>3} {e.ts:>15}: {cap}{e.describe()}", flush=False)
        seen[0] += 1
        if args.count is not None and seen[0] >= args.count:
            done.set()

    def on_service(message: Dict[str, Any]) -> None:
        lost = _lost(message)
        if lost is not None:
            print(f"lpm client: {lost}", file=sys.stderr)
        elif message.get("type") == "error":
            print(f"lpm client: the server says: {message.get('error')}", file=sys.stderr)

    subscribe: Dict[str, Any] = {"sources": args.source or "all"}
    if args.classes:
        subscribe["classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]
    client = _new_client(args, on_event=on_event, on_service=on_service, subscribe=subscribe,
                         on_exit=lambda err: done.set()).start()
    try:
        while not done.wait(0.2):
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
        sys.stdout.flush()
    return 0


def _record(args: argparse.Namespace) -> int:
    counter = EventLogReader(strict=False)
    totals = {"bytes": 0, "events": 0}
    counts: Dict[int, int] = {}
    gone = threading.Event()
    out = open(args.file, "wb")
    started = [False]

    def on_raw(source: int, header: bool, payload: bytes) -> None:
        if source != args.source:
            return
        if header and started[0]:
            return  # a restarted stream goes to no second header in one file; ghc-events reads one
        started[0] = True
        out.write(payload)
        out.flush()
        totals["bytes"] += len(payload)
        counter.feed(payload)
        while counter.count(counts) is not NEED_DATA:
            pass
        totals["events"] = sum(counts.values())

    def on_service(message: Dict[str, Any]) -> None:
        if message.get("notice") == "source-gone" and message.get("source") == args.source:
            gone.set()
        elif _lost(message) is not None:
            print(f"\nlpm client: {_lost(message)}", file=sys.stderr)

    client = _new_client(args, on_raw=on_raw, on_service=on_service, subscribe={"sources": [args.source]}).start()
    last = 0.0
    try:
        while not (args.until_gone and gone.is_set()):
            time.sleep(0.1)
            if sys.stderr.isatty() and time.monotonic() - last > 0.5:
                last = time.monotonic()
                print(f"\rrecording source {args.source}: {totals['events']:,} events, {totals['bytes']:,} bytes",
                      end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
        out.close()
    print(f"lpm client: wrote {totals['events']:,} events, {totals['bytes']:,} bytes to {args.file}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..eventlog import events as ev
    from ..eventlog import read_events
    from ..views import export

    if args.recording is not None:
        try:
            with open(args.recording, "rb") as f:
                data = f.read()
        except OSError as err:
            raise CommandError(f"cannot read {args.recording}: {err.strerror}") from None
    else:
        chunks: List[bytes] = []
        labels: Dict[int, Dict[int, str]] = {}
        started = [False]

        def on_state(snapshot: Snapshot) -> None:
            labels[snapshot.source] = {t.id: t.label for t in snapshot.threads}

        def on_raw(source: int, header: bool, payload: bytes) -> None:
            if source == args.source and not (header and started[0]):
                started[0] = True
                chunks.append(payload)

        client = _connected(args, on_raw=on_raw, on_state=on_state, subscribe={"sources": [args.source]})
        try:
            try:  # a new generation names the code objects again (a leech only)
                client.call("resend", args.timeout, source=args.source)
            except ServiceError:
                pass
            time.sleep(args.seconds)
        finally:
            client.close()
        data = b"".join(chunks)
        if not data:
            raise CommandError(f"source {args.source} sent nothing in {args.seconds:g} s (is it there? try `lpm client sources`)")
    if args.format == "eventlog":
        text: str | bytes = data
    else:
        items = read_events(data, strict=False)
        if args.recording is None:
            # The threads' names came in the snapshot, before the events.
            known = [ev.ThreadLabel(0, None, number, label) for number, label in labels.get(args.source, {}).items()]
            items = [*known, *items]
        name = args.recording or f"source {args.source}"
        if args.format == "speedscope":
            text = export.speedscope(items, name=name)
        elif args.format == "chrome":
            text = export.chrome_trace(items)
        else:
            text = export.collapsed(items)
    if args.output == "-":
        if isinstance(text, bytes):
            sys.stdout.buffer.write(text)
        else:
            sys.stdout.write(text)
    else:
        with open(args.output, "wb") as out:
            out.write(text if isinstance(text, bytes) else text.encode("utf-8"))
        print(f"lpm client: wrote {args.format} to {args.output}", file=sys.stderr)
    return 0


def _top(args: argparse.Namespace) -> int:
    from ..views.top import TopView, run_curses, run_plain

    view = TopView()
    client = _connected(args, on_state=view.update)

    def refresh() -> None:
        try:
            for source in client.call("sources", args.timeout):
                if source["id"] not in view.snapshots or source["live"]:
                    client.call("state", args.timeout, source=source["id"])
        except (ConnectionError, TimeoutError, ServiceError) as err:
            view.status = f"server: {err}"

    def pause(source: int, paused: bool) -> str:
        try:
            client.call("pause" if paused else "resume", args.timeout, source=source)
        except (ConnectionError, TimeoutError, ServiceError) as err:
            return f"source {source}: {err}"
        return f"source {source}: {'paused' if paused else 'resumed'}"

    try:
        if args.plain or args.rounds is not None or not sys.stdout.isatty():
            run_plain(view, refresh, args.interval, args.rounds, lambda text: print(text, end="", flush=True))
        else:
            run_curses(view, refresh, args.interval, pause)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0
