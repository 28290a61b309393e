"""Watch programs live and serve their streams to any number of clients.

    python -m lpm server                         # every program started with `lpm run`
    python -m lpm server --fifo ghc.fifo         # also a GHC program: ./prog +RTS -l -olghc.fifo
    python -m lpm server --replay run.eventlog   # a recording, at its own pace
    python -m lpm server --record recordings/    # and keep every stream as a file
    python -m lpm server --udp 127.0.0.1:8243    # clients over UDP too: lpm client --udp 127.0.0.1:8243 top
    python -m lpm server --http 8244             # web view at http://127.0.0.1:8244/, /metrics for Prometheus
    python -m lpm server --listen 0.0.0.0:8242 --token-file tok --tls-cert cert.pem --tls-key key.pem

The server drains every source as soon as it has bytes, so no program ever
waits on it; keeps each source's live state (threads, GC, heap, counters,
hottest functions, loss); and serves clients over TCP (default
127.0.0.1:8242): a client gets the header, a state snapshot, then the live
stream of each source it subscribes to.  A slow client loses events (and is
told how many) or is disconnected; it never slows a program or another
client.  Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys

from .. import tls
from ..errors import CommandError
from ..server.hub import HubLimits, loopback
from ..server.shell import Server, ServerConfig
from ..server.state import Limits

HELP = "watch programs and serve their live state and streams to clients over TCP"


def read_token(path: str) -> bytes:
    """The token in a file: its first line, which must not be empty."""
    try:
        with open(path, "rb") as f:
            token = f.readline().strip()
    except OSError as err:
        raise CommandError(f"cannot read the token file {path}: {err.strerror or err}") from None
    if not token:
        raise CommandError(f"the token file {path} is empty: put a secret on its first line")
    return token


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} is outside 0..65535")
    return host.strip("[]") or "127.0.0.1", number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    limits = HubLimits()
    parser.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", 8242),
        metavar="HOST:PORT",
        help="TCP address for clients (default 127.0.0.1:8242; port 0 picks a free one)",
    )
    parser.add_argument(
        "--udp",
        type=_address,
        metavar="HOST:PORT",
        help="also serve clients over lpm's reliable UDP transport here (lpm client --udp HOST:PORT)",
    )
    parser.add_argument(
        "--http",
        type=_address,
        metavar="HOST:PORT",
        help="serve the web view (live charts, flame graph, pause/resume) and Prometheus /metrics here "
        "(a bare PORT listens on 127.0.0.1)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="a shared secret (the file's first line) every client must prove it holds: TCP clients answer a "
        "challenge, UDP clients prove it in the handshake (every packet then carries its HMAC), the web view and "
        "/metrics ask for it (Bearer header, or /?token=... once). Needed to listen beyond loopback; without it "
        "a temporary token is made and printed",
    )
    parser.add_argument("--tls-cert", metavar="PEM",
                        help="serve TCP clients and the web view over TLS with this certificate chain "
                        "(clients: lpm client --tls, or --tls-ca PEM for a self-signed one)")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (default: in --tls-cert)")
    parser.add_argument("--dir", dest="directory", metavar="DIR", help="lpm directory to watch for programs (default: $LPM_DIR, ...)")
    parser.add_argument("--no-discover", action="store_true", help="do not watch the lpm directory; serve only the sources named")
    parser.add_argument("--fifo", action="append", default=[], metavar="PATH", help="a FIFO a program writes its eventlog into (repeatable)")
    parser.add_argument("--file", action="append", default=[], metavar="PATH", help="an eventlog file to serve as it is (repeatable)")
    parser.add_argument("--replay", action="append", default=[], metavar="PATH", help="a recording to replay at its own pace (repeatable)")
    parser.add_argument("--speed", type=float, default=1.0, metavar="X", help="replay pace: X times real time, 0 as fast as possible (default 1)")
    parser.add_argument("--record", metavar="DIR", help="write every source to DIR/<id>-<name>.eventlog as it arrives")
    parser.add_argument("--queue", type=int, default=limits.queue_bytes, metavar="BYTES",
                        help=f"event bytes queued per client before its events are dropped (default {limits.queue_bytes})")
    parser.add_argument("--max-clients", type=int, default=limits.max_clients, metavar="N", help=f"clients at once (default {limits.max_clients})")
    parser.add_argument("--max-sources", type=int, default=limits.max_sources, metavar="N", help=f"sources at once (default {limits.max_sources})")
    parser.add_argument("--max-threads", type=int, default=Limits().threads, metavar="N",
                        help=f"threads kept in each source's state (default {Limits().threads})")


def run(args: argparse.Namespace) -> int:
    if args.speed < 0:
        raise CommandError("--speed must not be negative", exit_code=2)
    if args.queue < 65536:
        # A client's queue takes a source's header (over 4 KiB: every type lpm
        # declares) and its snapshot before any event.
        raise CommandError("--queue must be at least 65536 bytes (a header and a snapshot come first)", exit_code=2)
    host, port = args.listen
    token = read_token(args.token_file) if args.token_file else None
    exposed = [f"{a[0]}:{a[1]}" for a in (args.listen, args.udp, args.http) if a is not None and not loopback(a[0])]
    if exposed and token is None:
        token = secrets.token_urlsafe(24).encode("ascii")
        print(f"lpm server: {', '.join(exposed)} is not loopback, so clients need a token; this run's is\n\n"
              f"    {token.decode()}\n\n(put it in a file for lpm client --token-file, or choose one with --token-file)",
              file=sys.stderr, flush=True)
    if args.tls_key and not args.tls_cert:
        raise CommandError("--tls-key needs --tls-cert", exit_code=2)
    context = None
    if args.tls_cert:
        try:
            context = tls.server_context(args.tls_cert, args.tls_key)
        except (OSError, ValueError) as err:
            raise CommandError(f"cannot use the TLS certificate {args.tls_cert}"
                               f"{' and key ' + args.tls_key if args.tls_key else ''}: {tls.describe(err)} "
                               "(PEM files: the certificate chain, and its unencrypted private key)") from None
    log = logging.getLogger("lpm.server")
    if token is not None and context is None:  # the TCP listener is always there
        log.warning("WITHOUT TLS, the token and every stream cross the network in clear text over TCP%s: anyone "
                    "on the path can read them and replay the token; give --tls-cert to encrypt",
                    " and HTTP" if args.http else "")
    if args.udp is not None and (token is not None or context is not None):
        log.warning("UDP packets are authenticated with the token, not encrypted: the streams over --udp can be "
                    "read on the path")
    config = ServerConfig(
        host=host,
        port=port,
        directory=args.directory,
        discover=not args.no_discover,
        fifos=args.fifo,
        files=args.file,
        replays=args.replay,
        speed=args.speed,
        record=args.record,
        udp=args.udp,
        http=args.http,
        token=token,
        tls=context,
        limits=HubLimits(
            queue_bytes=args.queue,
            max_clients=args.max_clients,
            max_sources=args.max_sources,
            state=Limits(threads=args.max_threads),
        ),
    )
    server = Server(config)
    try:
        server.open()
    except OSError as err:
        where = f"{host}:{port}" + (f", UDP {args.udp[0]}:{args.udp[1]}" if args.udp else "") + (
            f", HTTP {args.http[0]}:{args.http[1]}" if args.http else "")
        raise CommandError(f"cannot listen on {where}: {err.strerror or err}") from None
    udp_note = f", UDP {server.udp.address[0]}:{server.udp.address[1]}" if server.udp is not None else ""
    if server.web is not None:
        udp_note += f", web view http{'s' if context else ''}://{server.web.address[0]}:{server.web.address[1]}/"
    print(f"lpm server: listening on {server.address[0]}:{server.address[1]}{' (TLS)' if context else ''}{udp_note}",
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
