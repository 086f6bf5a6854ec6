"""History import at scale: `mailsupport import` of one generated mbox, as a real process.

    python -m bench --only import [--import-size 100000] [--backends sqlite,postgresql]

The mbox holds the first N messages of bench/mailgen.py (the intake benchmark's mail), with
LF line ends, mboxrd quoting and a From_ line each; it is written once into the cache. For
each size (1,000, to see memory stay flat, and --import-size) and backend, into a fresh
store:

- **whole**: the import in one run, timed from process start to exit, with the peak RSS of
  the import process and of its largest parse worker (bench/measure.py);
- **again**: the same command once more: nothing is new, and nothing may be read again;
- **resumed**: into another fresh store, the import is stopped with SIGINT once half the
  messages are committed (the database is polled), and the same command goes on: timed,
  with how many messages it read (those before its resume point must not be). Up to
  100,000 messages: beyond, it would take as long as the import again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.intake import PG_SERVER, fresh_database, pg_admin
from bench.maildir import SEED
from bench.mailgen import MAILGEN_VERSION, SLOT, START, generate
from bench.measure import mailsupport_env, run

_QUOTE = re.compile(rb"^(>*From )", re.MULTILINE)


def mbox_entry(index: int, raw: bytes) -> bytes:
    """One message as an mbox holds it: a From_ line, the message with LF line ends and
    mboxrd quoting (">From " for a "From " line), and the blank line that ends it."""
    when = START + index * SLOT
    body = _QUOTE.sub(rb">\1", raw.replace(b"\r\n", b"\n"))
    stamp = f"{when:%a %b %d %H:%M:%S %Y}".encode()
    return b"From bench@example.org " + stamp + b"\n" + body.rstrip(b"\n") + b"\n\n"


def cached_mbox(cache_dir: Path, count: int, log: Callable[[str], None] = print) -> Path:
    """The first `count` generated messages as one mbox file (written once, then reused)."""
    path = cache_dir / f"mbox-s{SEED}-g{MAILGEN_VERSION}-{count}.mbox"
    if path.exists():
        return path
    log(f"writing {count:,} messages into {path} (once; it is cached)")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    started = time.monotonic()
    with partial.open("wb") as out:
        for index, raw in enumerate(generate(count, SEED, processes=os.cpu_count() or 1)):
            out.write(mbox_entry(index, raw))
            if index and index % 100_000 == 0:
                log(f"  {index:,} of {count:,}")
    partial.rename(path)
    log(f"written in {time.monotonic() - started:.0f} s, {path.stat().st_size / 2**20:,.0f} MiB")
    return path


# A database of its own: the intake benchmark drops and creates bench_intake for each run,
# and one running at the same time must not pull this one's away.
PG_DB = "bench_import"


def fresh_store(backend: str, work: Path) -> str:
    """A database URL for one run: a new SQLite file, or PG_DB dropped and created."""
    if backend == "sqlite":
        return fresh_database(backend, work)
    pg_admin([f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)", f"CREATE DATABASE {PG_DB}"])
    return f"{PG_SERVER}/{PG_DB}"


def import_env(url: str, work: Path, cache_dir: Path) -> dict[str, str]:
    return mailsupport_env(cache_dir) | {
        "MAILSUPPORT_DATABASE_URL": url,
        "MAILSUPPORT_DATA_DIR": str(work / "data"),
        "MAILSUPPORT_SUPPORT_ADDRESS": "support@example.com",
        "NO_COLOR": "1",
    }


def _one(url: str, sql: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar() or 0)
    finally:
        engine.dispose()


def _summary(stdout: str) -> str:
    return next((x for x in stdout.splitlines() if x.startswith("read ")), "")


def _read(summary: str) -> int:
    return int(summary.split(",")[0].removeprefix("read "))


# Stopping at half and resuming takes as long as the import itself: up to this size only
# (it shows the same at 100,000 as it would at a million).
STOP_AND_RESUME_UP_TO = 100_000


def import_mbox(
    mbox: Path, count: int, backend: str, cache_dir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The three runs above on one mbox and backend; returns the measurements."""
    argv = [sys.executable, "-m", "mailsupport", "import", "--no-progress", str(mbox)]
    with tempfile.TemporaryDirectory(prefix="mailsupport-import-") as tmp:
        work = Path(tmp)
        url = fresh_store(backend, work)
        env = import_env(url, work, cache_dir)
        whole = run(argv, env, work).check()
        load = os.getloadavg()[0]  # other work on the machine slows the import down
        stored = _one(url, "SELECT count(*) FROM messages")
        tickets = _one(url, "SELECT count(*) FROM tickets")
        log(
            f"  whole: {count / whole.wall:.0f} msg/s, {whole.wall:.1f} s, peak "
            f"{whole.own_peak_kib / 1024:.0f} MiB (workers {whole.worker_peak_kib / 1024:.0f} "
            f"MiB); {_summary(whole.stdout)}"
        )
        again = run(argv, env, work).check()
        log(f"  again: {again.wall:.1f} s; {_summary(again.stdout)}")

        stopped: dict[str, Any] = {}
        if count <= STOP_AND_RESUME_UP_TO:
            stopped = _stopped_and_resumed(argv, backend, work, cache_dir, count)
            log(
                f"  stopped at {stopped['stopped_at']:,}; resumed: "
                f"{stopped['resumed_seconds']:.1f} s; {stopped['resumed_summary']}"
            )
    return {
        "backend": backend,
        "messages": count,
        "bytes": mbox.stat().st_size,
        "seconds": whole.wall,
        "cpu": whole.cpu,
        "rate": count / whole.wall,
        "load": load,
        "own_peak_mib": whole.own_peak_kib / 1024,
        "worker_peak_mib": whole.worker_peak_kib / 1024,
        "summary": _summary(whole.stdout),
        "stored": stored,
        "tickets": tickets,
        "again_seconds": again.wall,
        "again_summary": _summary(again.stdout),
        **stopped,
    }


def _stopped_and_resumed(
    argv: list[str], backend: str, work: Path, cache_dir: Path, count: int
) -> dict[str, Any]:
    """Into another fresh store: stopped at half, then the same command again."""
    url = fresh_store(backend, work)
    env = import_env(url, work, cache_dir)
    stopped_at = _stop_halfway(argv, env, work, url, count)
    resumed = run(argv, env, work).check()
    return {
        "stopped_at": stopped_at,
        "resumed_seconds": resumed.wall,
        "resumed_read": _read(_summary(resumed.stdout)),
        "resumed_summary": _summary(resumed.stdout),
        "resumed_stored": _one(url, "SELECT count(*) FROM messages"),
    }


def _stop_halfway(argv: list[str], env: dict[str, str], work: Path, url: str, count: int) -> int:
    """Start the import, send SIGINT once half the messages are committed, and return how
    many were when it exited (it must exit 130)."""
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen(argv, env=env, cwd=work, stdout=quiet, stderr=quiet)
    try:
        while proc.poll() is None:
            time.sleep(0.2)
            try:
                done = _one(url, "SELECT coalesce(max(messages), 0) FROM import_files")
            except Exception:  # the schema is not there yet
                continue
            if done >= count // 2:
                proc.send_signal(signal.SIGINT)
                break
        code = proc.wait(timeout=timedelta(minutes=10).total_seconds())
    finally:
        if proc.poll() is None:
            proc.kill()
    if code != 128 + signal.SIGINT:
        raise RuntimeError(f"the stopped import exited {code}, not 130")
    return _one(url, "SELECT count(*) FROM messages")


def render(found: dict[str, Any]) -> str:
    lines = [
        "| messages | mbox | backend | import | time | CPU | load | import peak RSS | "
        "largest worker | again (nothing new) | stopped at | resumed: read, time |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in sorted(found, key=lambda k: (int(k.split("/")[1]), k)):
        r = found[key]
        load = f"{r['load']:.1f}" if "load" in r else "–"
        lines.append(
            f"| {r['messages']:,} | {r['bytes'] / 2**20:,.0f} MiB | {r['backend']} | "
            f"{r['rate']:.0f} msg/s | {r['seconds']:.1f} s | {r['cpu']:.1f} s | {load} | "
            f"{r['own_peak_mib']:.0f} MiB | {r['worker_peak_mib']:.0f} MiB | "
            f"{r['again_seconds']:.1f} s | "
            + (
                f"{r['stopped_at']:,} | {r['resumed_read']:,}, {r['resumed_seconds']:.1f} s |"
                if "stopped_at" in r
                else "not run | not run |"
            )
        )
    dates = sorted({r["on"] for r in found.values() if "on" in r})
    if dates:
        lines += ["", f"Measured {', '.join(dates)}."]
    return "\n".join(lines) + "\n"
