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
  100,000 messages unless `--import-runs` names it: beyond, it takes as long as the import
  again.

Memory: the peak RSS of each run, and the median of the import process's RSS while it
works (bench/measure.py): the peak follows the largest message met, and a larger mbox holds
larger ones (the size of its largest message is recorded with it), where the median would
show a leak.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.intake import PG_SERVER, fresh_database, pg_admin
from bench.maildir import SEED
from bench.mailgen import MAILGEN_VERSION, SLOT, START, generate
from bench.measure import Run, mailsupport_env, run

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
    largest = 0
    with partial.open("wb") as out:
        for index, raw in enumerate(generate(count, SEED, processes=os.cpu_count() or 1)):
            entry = mbox_entry(index, raw)
            out.write(entry)
            largest = max(largest, len(entry) - entry.index(b"\n") - 1)
            if index and index % 100_000 == 0:
                log(f"  {index:,} of {count:,}")
    _largest_file(path).write_text(str(largest))
    partial.rename(path)
    log(f"written in {time.monotonic() - started:.0f} s, {path.stat().st_size / 2**20:,.0f} MiB")
    return path


def largest_message(mbox: Path) -> int:
    """The size of the mbox's largest message (its bytes in the mbox, after the From_ line):
    recorded when the mbox was written, or read from the mbox once (one written before)."""
    recorded = _largest_file(mbox)
    if recorded.exists():
        return int(recorded.read_text())
    largest = size = 0
    with mbox.open("rb") as lines:
        for line in lines:
            if line.startswith(b"From "):
                largest, size = max(largest, size), 0
            else:
                size += len(line)
    recorded.write_text(str(max(largest, size)))
    return max(largest, size)


def _largest_file(mbox: Path) -> Path:
    return mbox.with_name(mbox.name + ".largest")


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


# Stopping at half and resuming takes as long as the import itself: up to this size only,
# unless asked for (--import-runs).
STOP_AND_RESUME_UP_TO = 100_000
RUNS = ("whole", "again", "resume")


def import_mbox(
    mbox: Path,
    count: int,
    backend: str,
    cache_dir: Path,
    log: Callable[[str], None] = print,
    runs: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The runs above (`runs`, all by default; resuming up to STOP_AND_RESUME_UP_TO) on one
    mbox and backend; returns the measurements."""
    argv = [sys.executable, "-m", "mailsupport", "import", "--no-progress", str(mbox)]
    if runs is None:
        runs = RUNS if count <= STOP_AND_RESUME_UP_TO else RUNS[:2]
    found: dict[str, Any] = {
        "backend": backend,
        "messages": count,
        "bytes": mbox.stat().st_size,
        "largest_message": largest_message(mbox),
    }
    with tempfile.TemporaryDirectory(prefix="mailsupport-import-") as tmp:
        work = Path(tmp)
        if "whole" in runs or "again" in runs:
            url = fresh_store(backend, work)
            env = import_env(url, work, cache_dir)
            whole = run(argv, env, work).check()
            load = os.getloadavg()[0]  # other work on the machine slows the import down
            log(f"  whole: {count / whole.wall:.0f} msg/s, {whole.wall:.1f} s, {_memory(whole)}; "
                f"{_summary(whole.stdout)}")  # fmt: skip
            found |= {
                "seconds": whole.wall,
                "cpu": whole.cpu,
                "rate": count / whole.wall,
                "load": load,
                **_memory_fields(whole, ""),
                "summary": _summary(whole.stdout),
                "stored": _one(url, "SELECT count(*) FROM messages"),
                "tickets": _one(url, "SELECT count(*) FROM tickets"),
            }
            if "again" in runs:
                again = run(argv, env, work).check()
                log(f"  again: {again.wall:.1f} s; {_summary(again.stdout)}")
                found |= {"again_seconds": again.wall, "again_summary": _summary(again.stdout)}
        if "resume" in runs:
            found |= _stopped_and_resumed(argv, backend, work, cache_dir, count)
            log(
                f"  stopped at {found['stopped_at']:,} after {found['stopped_seconds']:.1f} s "
                f"({found['stopped_memory']}); resumed: {found['resumed_seconds']:.1f} s "
                f"({found['resumed_memory']}); {found['resumed_summary']}"
            )
    return found


def _memory(run: Run) -> str:
    return (
        f"peak {run.own_peak_kib / 1024:.0f} MiB, median {run.own_median_kib / 1024:.0f} MiB "
        f"(workers {run.worker_peak_kib / 1024:.0f} MiB)"
    )


def _memory_fields(run: Run, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}own_peak_mib": run.own_peak_kib / 1024,
        f"{prefix}own_median_mib": run.own_median_kib / 1024,
        f"{prefix}worker_peak_mib": run.worker_peak_kib / 1024,
    }


def _stopped_and_resumed(
    argv: list[str], backend: str, work: Path, cache_dir: Path, count: int
) -> dict[str, Any]:
    """Into another fresh store: stopped at half, then the same command again."""
    url = fresh_store(backend, work)
    env = import_env(url, work, cache_dir)
    stopped = run(argv, env, work, interrupt_when=_half_committed(url, count))
    if stopped.returncode != 128 + signal.SIGINT:
        raise RuntimeError(f"the stopped import exited {stopped.returncode}, not 130")
    stopped_at = _one(url, "SELECT count(*) FROM messages")
    resumed = run(argv, env, work).check()
    return {
        "stopped_at": stopped_at,
        "stopped_seconds": stopped.wall,
        "stopped_memory": _memory(stopped),
        **_memory_fields(stopped, "stopped_"),
        "resumed_seconds": resumed.wall,
        "resumed_memory": _memory(resumed),
        **_memory_fields(resumed, "resumed_"),
        "resumed_read": _read(_summary(resumed.stdout)),
        "resumed_summary": _summary(resumed.stdout),
        "resumed_stored": _one(url, "SELECT count(*) FROM messages"),
    }


def _half_committed(url: str, count: int) -> Callable[[], bool]:
    """Whether half the messages are committed, asked of the database at most every 0.2 s."""
    asked = 0.0

    def half() -> bool:
        nonlocal asked
        if time.monotonic() - asked < 0.2:
            return False
        asked = time.monotonic()
        try:
            done = _one(url, "SELECT coalesce(max(messages), 0) FROM import_files")
        except Exception:  # the schema is not there yet
            return False
        return done >= count // 2

    return half


def render(found: dict[str, Any]) -> str:
    lines = [
        "| messages | mbox | largest message | backend | import | time | CPU | load | "
        "import RSS: peak, median | largest worker | again (nothing new) | stopped at | "
        "resumed: read, time |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for key in sorted(found, key=lambda k: (int(k.split("/")[1]), k)):
        r = found[key]
        largest = f"{r['largest_message'] / 2**20:.2f} MiB" if "largest_message" in r else "–"
        lines.append(
            f"| {r['messages']:,} | {r['bytes'] / 2**20:,.0f} MiB | {largest} | {r['backend']} | "
            + (
                f"{r['rate']:.0f} msg/s | {r['seconds']:.1f} s | {r['cpu']:.1f} s | "
                f"{r['load']:.1f} | {_rss(r, '')} | {r['worker_peak_mib']:.0f} MiB | "
                if "rate" in r
                else "not run | | | | | | "
            )
            + (f"{r['again_seconds']:.1f} s | " if "again_seconds" in r else "not run | ")
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


def _rss(r: dict[str, Any], prefix: str) -> str:
    median = r.get(f"{prefix}own_median_mib")
    peak = f"{r[f'{prefix}own_peak_mib']:.0f} MiB"
    return f"{peak}, {median:.0f} MiB" if median is not None else peak
