"""Secrets (issue 8): a program's secret-looking environment values and
argv passwords appear in no output lpm makes by default: the stream and its
recording, the server's snapshots over TCP, UDP and HTTP, the web stream,
/metrics, and the CLI's state, show and export."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator, NamedTuple, Tuple

from .wire import PATIENCE, PROGRAMS, start_server, wait_for, web_address

SECRETS = ["s3cr3t-env-value", "hunter2-argv-value", "url-pass-value"]


class Watched(NamedTuple):
    address: Tuple[str, int]
    program: "subprocess.Popen[bytes]"
    until: Path  # touch it and the program ends
    record: Path  # the server's recordings


@contextlib.contextmanager
def secret_program(tmp_path: Path, *server_args: str) -> Iterator[Watched]:
    """A server (recording, with ``server_args``) watching steady.py run with
    a secret in its environment, one in a URL there and one in its argv."""
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    record = tmp_path / "rec"
    server, address = start_server(tmp_path, "--dir", str(lpm_dir), "--record", str(record), *server_args)
    until = tmp_path / "stop"
    env = dict(os.environ, LPM_DIR=str(lpm_dir), API_TOKEN=SECRETS[0], DB_URL=f"postgres://app:{SECRETS[2]}@db/x")
    program = subprocess.Popen(
        [sys.executable, "-m", "lpm", "run", str(PROGRAMS / "steady.py"), str(until), f"--password={SECRETS[1]}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        yield Watched(address, program, until, record)
    finally:
        until.touch()
        if program.poll() is None:
            program.kill()
        server.terminate()
        server.wait(PATIENCE)


def test_no_secret_reaches_any_output(tmp_path: Path) -> None:
    outputs: dict[str, bytes] = {}
    with secret_program(tmp_path, "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0") as watched:
        address, program, until, record = watched
        host, port = web_address(tmp_path)
        base = f"http://{host}:{port}"
        cli = [sys.executable, "-m", "lpm", "client", "--server", f"{address[0]}:{address[1]}", "--timeout", "20"]

        def run(*args: str) -> bytes:
            done = subprocess.run([*cli, *args], capture_output=True, timeout=PATIENCE)
            assert done.returncode == 0, done.stderr
            return done.stdout + done.stderr

        wait_for(lambda: b"API_TOKEN" in run("state", "1", "--json"), "the program's environment in its state")
        outputs["state --json"] = run("state", "1", "--json")
        outputs["state"] = run("state", "1")
        outputs["show"] = run("show", "--source", "1", "--count", "50")
        outputs["export chrome"] = run("export", "chrome", "--source", "1", "--seconds", "1", "-o", "-")
        for path in ("/api/sources", "/api/state?source=1", "/metrics"):
            with urllib.request.urlopen(base + path, timeout=PATIENCE) as reply:
                outputs[path] = reply.read()
        with urllib.request.urlopen(base + "/api/stream", timeout=PATIENCE) as stream:
            outputs["/api/stream"] = stream.readline() + stream.readline()
        until.touch()
        assert program.wait(PATIENCE) == 0
        wait_for(lambda: any(record.glob("*.eventlog")), "the recording")
    [recording] = list(record.glob("*.eventlog"))
    outputs["recording"] = recording.read_bytes()
    show = subprocess.run([sys.executable, "-m", "lpm", "show", str(recording)], capture_output=True, timeout=PATIENCE)
    outputs["lpm show"] = show.stdout
    outputs["server log"] = (tmp_path / "server.log").read_bytes()
    assert b"API_TOKEN=<redacted>" in outputs["state --json"] and b"<redacted>" in outputs["recording"]
    for name, data in outputs.items():
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} in {name}"


def test_show_secrets_for_a_local_client_with_the_token_only(tmp_path: Path) -> None:
    """--show-secrets: the real values, read from the running program, for
    the CLI on this machine with the server's token; a server without a
    token refuses (tests/server/test_hub.py: who may ask); the values
    still reach no recording or log."""
    token_file = tmp_path / "token"
    token_file.write_text("show-secrets-token\n")
    with secret_program(tmp_path, "--token-file", str(token_file)) as watched:
        address, program, until, record = watched
        cli = [sys.executable, "-m", "lpm", "client", "--server", f"{address[0]}:{address[1]}", "--timeout", "20",
               "--token-file", str(token_file)]

        def state(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*cli, "state", "1", *extra], capture_output=True, text=True, timeout=PATIENCE)

        wait_for(lambda: "API_TOKEN" in state("--json").stdout, "the program's environment in its state")
        plain = state("--json")
        assert SECRETS[0] not in plain.stdout and SECRETS[1] not in plain.stdout
        shown = state("--show-secrets")
        assert shown.returncode == 0, shown.stderr
        assert f"API_TOKEN={SECRETS[0]}" in shown.stdout and f"--password={SECRETS[1]}" in shown.stdout
        shown_json = state("--json", "--show-secrets")
        secrets = json.loads(shown_json.stdout)["secrets"]
        assert secrets["pid"] == program.pid and f"API_TOKEN={SECRETS[0]}" in secrets["env"]
        until.touch()
        assert program.wait(PATIENCE) == 0
        wait_for(lambda: any(record.glob("*.eventlog")), "the recording")
        gone = state("--show-secrets")
        assert gone.returncode != 0 and "not a running program" in gone.stderr
    log = (tmp_path / "server.log").read_text()
    assert "was shown the unredacted command line and environment of source 1" in log
    [recording] = list(record.glob("*.eventlog"))
    for secret in SECRETS[:2]:
        assert secret not in log and secret.encode() not in recording.read_bytes()

