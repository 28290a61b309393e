"""The leech's small parts: redaction, settings, the private directory."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from lpm.errors import LeechError
from lpm.leech import procinfo
from lpm.leech.config import LeechConfig, from_environment
from lpm.leech.monitor import next_tick
from lpm.leech.paths import attach, make_fifos, private_dir
from lpm.leech.redact import REDACTED, redact_argv, redact_env


def test_environment_secrets_are_hidden_and_keys_kept() -> None:
    env = {
        "HOME": "/home/me",
        "PWD": "/srv/app",
        "AWS_SECRET_ACCESS_KEY": "abc",
        "GITHUB_TOKEN": "ghp_x",
        "db_password": "hunter2",
        "DATABASE_URL": "postgres://u:p@h/db",
        "CACHE": "redis://user:s3cret@cache:6379/0",
        "SESSION_COOKIE_NAME": "sid",
    }
    out = redact_env(env)
    assert out == sorted(out)
    joined = "\n".join(out)
    for secret in ("abc", "ghp_x", "hunter2", "u:p@", "s3cret", "sid"):
        assert secret not in joined
    assert f"AWS_SECRET_ACCESS_KEY={REDACTED}" in out
    assert f"CACHE=redis://user:{REDACTED}@cache:6379/0" in out
    assert "HOME=/home/me" in out and "PWD=/srv/app" in out


def test_argv_secrets_are_hidden() -> None:
    argv = ["app", "--password=hunter2", "--api-key", "k-123", "--user", "bob", "http://a:b@host/", "plain"]
    assert redact_argv(argv) == [
        "app",
        f"--password={REDACTED}",
        "--api-key",
        REDACTED,
        "--user",
        "bob",
        f"http://a:{REDACTED}@host/",
        "plain",
    ]


def test_settings_from_environment_and_overrides() -> None:
    cfg = from_environment({"LPM_SAMPLE_RATE": "250", "LPM_BUDGET": "0x100000", "LPM_PUREPYTHON": "1"}, heap_interval=0.5)
    assert cfg.sample_rate == 250.0 and cfg.budget == 1 << 20 and cfg.heap_interval == 0.5
    assert cfg.implementation == "python"
    assert from_environment({}, sample_rate=None) == LeechConfig()
    with pytest.raises(LeechError, match="LPM_SAMPLE_RATE='fast' is not a valid sample_rate"):
        from_environment({"LPM_SAMPLE_RATE": "fast"})
    with pytest.raises(LeechError, match="budget 8192 must hold at least two buffers"):
        LeechConfig(budget=8192, buffer_size=8192)
    assert from_environment({"LPM_KEEP_OUT": "off"}).keep_out == "off" and LeechConfig().keep_out == "on"
    with pytest.raises(LeechError, match="keep_out 'no' is not on or off"):
        from_environment({"LPM_KEEP_OUT": "no"})
    with pytest.raises(LeechError, match="unknown leech settings: colour"):
        from_environment({}, colour="red")


def test_private_directory_is_made_0700(tmp_path: Path) -> None:
    d = private_dir(str(tmp_path / "lpm"))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    pair = make_fifos(d)
    for path in (pair.data, pair.control):
        st = os.stat(path)
        assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert os.path.basename(path).startswith(f"lpm-{os.getpid()}-")
    pair.remove()
    assert not os.path.exists(pair.data)


def test_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    with pytest.raises(LeechError, match="accessible to other users"):
        private_dir(str(d))


def test_symlink_planted_as_the_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    link = tmp_path / "lpm"
    link.symlink_to(real)
    with pytest.raises(LeechError, match="not a directory"):
        private_dir(str(link))


def test_attach_needs_a_leech_fifo(tmp_path: Path) -> None:
    assert not attach(str(tmp_path / "x.eventlog"))
    assert not attach(str(tmp_path / "lpm-1-00.data")), "no control FIFO: no leech"


@pytest.mark.skipif(os.getuid() != 0, reason="making a directory another user owns needs root")
def test_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(LeechError, match="belongs to uid 65534"):
        private_dir(str(d))


def test_the_leech_header_is_the_writer_header() -> None:
    from lpm.eventlog import EventLogWriter, catalog

    assert catalog.header() == EventLogWriter().header()


def test_the_leech_does_not_load_the_decoder_or_typing() -> None:
    """Every module a profiled program imports stays in memory and is walked by
    each full collection; the decoder's ~90 dataclasses were 5% of the gc
    workload's time (bench/overhead.py)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "before = set(sys.modules)\n"  # on 3.9 site's importlib.util has typing already
        "import lpm.leech, lpm.leech.native, lpm.leech.pure\n"
        "print(' '.join(sorted(m for m in ('typing', 'dataclasses', 'logging', 'inspect',"
        " 'lpm.eventlog.events', 'lpm.eventlog.reader', 'lpm.eventlog.writer') if m in set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_periodic_work_keeps_its_rate_when_late() -> None:
    assert next_tick(10.0, 0.1, 10.03) == pytest.approx(10.1)  # late: the next one still on the grid
    assert next_tick(10.0, 0.1, 10.25) == pytest.approx(10.35)  # a whole period late: a period from now
    assert next_tick(10.0, 0.5, 10.0) == pytest.approx(10.5)


def test_thread_cpu_time_is_the_threads_own_clock() -> None:
    before = time.thread_time_ns()
    sum(range(100_000))
    cpu = procinfo.thread_cpu_ns(threading.get_native_id())
    after = time.thread_time_ns()
    assert cpu is not None and before <= cpu <= after
    # Another process's thread is not ours to read.  (A thread just joined
    # may still be leaving the kernel: its clock can still answer.)
    assert procinfo.thread_cpu_ns(os.getppid()) is None
    assert procinfo.thread_cpu_ns(0) is None
