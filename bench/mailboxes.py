"""One daemon watching many mailboxes: how soon it takes a message, and its memory.

    python -m bench --only mailboxes [--mailboxes 50] [--deliveries 20] [--write]

A Dovecot on loopback with one user per mailbox (the test suite's launcher,
`DovecotServer(users=...)`: each user a Maildir of their own), a mailboxes file naming them
all, and `python -m mailsupport daemon` as a real process on a fresh SQLite store, with
MAILSUPPORT_IMAP_POLL_SECONDS=300 so that only IDLE can make it take mail in time. SMTP
points at a closed port, as in the intake benchmark: the outbox task runs and fails at once.

Once the daemon waits in IDLE on every folder, a message is APPENDed to a mailbox picked
at random, one at a time; its latency runs from just before the APPEND until its Message-ID
is in the store (read every 10 ms). The pause between deliveries is random too (0.5-1.5 s).

Memory, sampled from /proc every 50 ms: VmHWM (peak RSS) of the daemon and of each parse
worker, their sum (which counts the pages the workers share with the daemon, forked from
it, once per process), and PSS at the end (shared pages divided among their processes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.measure import _children, _hwm_kib, mailsupport_env

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 5.0
TARGET_MB = 200
TARGET_MIB = TARGET_MB * 1e6 / 2**20
SMTP_REFUSED = 9  # nothing listens there (bench/intake.py)
READY_TIMEOUT = 180.0
TAKEN_TIMEOUT = 30.0


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += _children(current)
    return found


class Sampler:
    """Peak VmHWM of a process and of each of its descendants, every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[int, int] = {}
        self.threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in _tree(self.pid):
                hwm = _hwm_kib(pid)
                if hwm:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)
            self.threads = max(self.threads, _status_kib(self.pid, "Threads"))
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def mailboxes_toml(server: Any, names: list[str]) -> str:
    tables = []
    for name in names:
        user = f"{name}@example.test"
        tables.append(
            f'[[mailbox]]\nname = "{name}"\naddress = "{name}@example.com"\n'
            f'imap_host = "{server.host}"\nimap_port = {server.port}\nimap_security = "none"\n'
            f'imap_user = "{user}"\nimap_password = {json.dumps(server.users[user])}\n'
        )
    return "\n".join(tables)


def daemon_env(work: Path, file: Path, cache_dir: Path) -> dict[str, str]:
    env = mailsupport_env(cache_dir)
    env |= {
        "MAILSUPPORT_DATABASE_URL": f"sqlite:///{work / 'store.db'}",
        "MAILSUPPORT_DATA_DIR": str(work / "data"),
        "MAILSUPPORT_SUPPORT_ADDRESS": "support@example.com",
        "MAILSUPPORT_MAILBOXES_FILE": str(file),
        "MAILSUPPORT_IMAP_POLL_SECONDS": "300",
        "MAILSUPPORT_SMTP_HOST": "127.0.0.1",
        "MAILSUPPORT_SMTP_PORT": str(SMTP_REFUSED),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        "NO_COLOR": "1",
    }
    return env


def message(number: int, address: str) -> tuple[str, bytes]:
    message_id = f"bench-mailboxes-{number}-{time.time_ns()}@customer.example.org"
    raw = (
        f"From: Customer {number} <customer{number}@customer.example.org>\r\n"
        f"To: <{address}>\r\nSubject: Question {number}\r\n"
        f"Message-ID: <{message_id}>\r\nDate: Mon, 02 Mar 2026 09:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hello, this is question {number}.\r\n"
    ).encode()
    return message_id, raw


def stored(db: Path, message_id: str) -> bool:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            found = conn.execute(
                "SELECT 1 FROM messages WHERE message_id = ?", (message_id,)
            ).fetchone()
            return found is not None
    except sqlite3.Error:  # not created yet, or busy
        return False


def wait_for(check: Callable[[], bool], timeout: float, what: str, step: float = 0.01) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not within {timeout:.0f} s: {what}")
        time.sleep(step)
    return time.monotonic() - started


def run_mailboxes(
    count: int, deliveries: int, cache_dir: Path, log: Callable[[str], None] = print, seed: int = 1
) -> dict[str, Any]:
    """The benchmark (see the module's doc); returns what it measured."""
    sys.path.insert(0, str(ROOT))  # the test suite's Dovecot launcher
    from tests.support.imapservers import DovecotServer

    names = [f"box{i:02d}" for i in range(1, count + 1)]
    rng = random.Random(seed)
    with (
        DovecotServer(users={f"{name}@example.test": None for name in names}) as server,
        tempfile.TemporaryDirectory(prefix="mailsupport-mailboxes-") as tmp,
    ):
        work = Path(tmp)
        file = work / "mailboxes.toml"
        file.write_text(mailboxes_toml(server, names))
        log_path = work / "daemon.log"
        log(f"Dovecot {server.host}:{server.port} with {count} users; starting the daemon")
        with open(log_path, "wb") as output:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mailsupport", "daemon"],
                env=daemon_env(work, file, cache_dir), cwd=work,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        sampler = Sampler(proc.pid)
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    tail = log_path.read_text()[-3000:]
                    raise RuntimeError(f"the daemon exited {proc.returncode}:\n{tail}")
                return log_path.read_text().count("waiting for new mail") >= count

            startup = wait_for(ready, READY_TIMEOUT, f"IDLE on all {count} folders", 0.1)
            log(f"  waiting in IDLE on {count} folders after {startup:.1f} s")
            idle_rss = _status_kib(proc.pid, "VmRSS")
            db = work / "store.db"
            latencies: list[float] = []
            picked: list[str] = []
            for number in range(1, deliveries + 1):
                name = rng.choice(names)
                picked.append(name)
                message_id, raw = message(number, f"{name}@example.com")
                with server.client(f"{name}@example.test") as client:
                    started = time.monotonic()
                    client.append("INBOX", raw)
                wait_for(partial(stored, db, message_id), TAKEN_TIMEOUT, f"{message_id} taken")
                latencies.append(time.monotonic() - started)
                log(f"  {number:2d}: {name} taken in {latencies[-1]:.3f} s")
                time.sleep(rng.uniform(0.5, 1.5))
            tree = _tree(proc.pid)
            pss = {pid: _pss_kib(pid) for pid in tree}
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            sampler.stop()
        text = log_path.read_text()
    own = sampler.peaks.pop(proc.pid, 0)
    workers = sorted(sampler.peaks.values(), reverse=True)
    return {
        "mailboxes": count,
        "deliveries": deliveries,
        "distinct_mailboxes": len(set(picked)),
        "startup_seconds": startup,
        "median_seconds": statistics.median(latencies),
        "max_seconds": max(latencies),
        "min_seconds": min(latencies),
        "latencies": [round(x, 4) for x in latencies],
        "daemon_peak_mib": own / 1024,
        "daemon_idle_rss_mib": idle_rss / 1024,
        "worker_peaks_mib": [w / 1024 for w in workers],
        "tree_peak_sum_mib": (own + sum(workers)) / 1024,
        "tree_pss_mib": sum(pss.values()) / 1024,
        "threads": sampler.threads,
        "exit_code": code,
        "errors_logged": sum(" ERROR " in line for line in text.splitlines()),
        "load": os.getloadavg()[0],
    }


def render(r: dict[str, Any]) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    workers = r["worker_peaks_mib"]
    shown = ", ".join(f"{w:.0f}" for w in workers) or "none"
    largest = max(workers, default=0.0)
    return "\n".join(
        [
            f"One daemon, {r['mailboxes']} mailboxes on one Dovecot, {r['deliveries']} "
            f"deliveries to {r['distinct_mailboxes']} mailboxes picked at random "
            f"(measured {r.get('on', '?')}, load {r['load']:.1f}):",
            "",
            "| | measured | target | |",
            "| --- | ---: | ---: | --- |",
            f"| delivery to stored, median | {r['median_seconds']:.3f} s | | |",
            f"| delivery to stored, max | {r['max_seconds']:.3f} s | < {TARGET_SECONDS:.0f} s "
            f"| {verdict(r['max_seconds'] < TARGET_SECONDS)} |",
            f"| peak RSS, the daemon | {r['daemon_peak_mib']:.0f} MiB | < {TARGET_MB} MB "
            f"| {verdict(r['daemon_peak_mib'] < TARGET_MIB)} |",
            f"| peak RSS, each parse worker | {shown} MiB | < {TARGET_MB} MB "
            f"| {verdict(largest < TARGET_MIB)} |",
            f"| all of them together: PSS at the end (shared pages counted once) | "
            f"{r['tree_pss_mib']:.0f} MiB | < {TARGET_MB} MB "
            f"| {verdict(r['tree_pss_mib'] < TARGET_MIB)} |",
            f"| their peak RSS added up (pages shared since the fork counted in each) | "
            f"{r['tree_peak_sum_mib']:.0f} MiB | | |",
            f"| threads of the daemon | {r['threads']} | | |",
            f"| start until IDLE on every folder | {r['startup_seconds']:.1f} s | | |",
            "",
            f"The daemon exited {r['exit_code']} on SIGTERM; {r['errors_logged']} errors logged.",
            "",
        ]
    )
