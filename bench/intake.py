"""End-to-end intake: a real Dovecot on loopback, `mailsupport poll` as a real process.

For each run: a fresh IMAP folder and a fresh store (or a copy of a big one); a first poll
of the still-empty folder records where new mail starts (IMAP_START=new), so everything
loaded after it is new mail and new tickets get acknowledgements queued (the outbox; no
SMTP is configured, nothing is sent). Then the generated messages are linked into the
folder's Maildir, Dovecot indexes them (SELECT and a FETCH of every size, as it would
have at delivery), and the second poll is timed, from process start to exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.maildir import cached_mail, link_into, total_bytes
from bench.measure import Run, mailsupport_env, run

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
PG_ADMIN_DB = "test"  # any database that exists, to run CREATE DATABASE from
PG_DB = "bench_intake"
SMTP_REFUSED = 9  # the discard port, closed on the benchmark machine


def dovecot() -> Any:
    # The test suite's Dovecot launcher (config in a temp dir, one user): reused here
    # rather than writing a second one.
    from tests.support.imapservers import DovecotServer

    return DovecotServer()


def pg_admin(statements: list[str]) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(f"{PG_SERVER}/{PG_ADMIN_DB}", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def fresh_database(backend: str, work: Path, template: Path | str | None = None) -> str:
    """A database URL for one run: empty, or a copy of `template` (a SQLite file, or the
    name of a PostgreSQL database)."""
    if backend == "sqlite":
        path = work / "store.db"
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        if template is not None:
            shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    copy = f" TEMPLATE {template}" if template else ""
    pg_admin([f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)", f"CREATE DATABASE {PG_DB}{copy}"])
    return f"{PG_SERVER}/{PG_DB}"


def poll_env(server: Any, folder: str, url: str, work: Path, cache_dir: Path) -> dict[str, str]:
    env = mailsupport_env(cache_dir)
    env |= {
        "MAILSUPPORT_DATABASE_URL": url,
        "MAILSUPPORT_DATA_DIR": str(work / "data"),
        "MAILSUPPORT_SUPPORT_ADDRESS": "support@example.com",
        "MAILSUPPORT_IMAP_HOST": server.host,
        "MAILSUPPORT_IMAP_PORT": str(server.port),
        "MAILSUPPORT_IMAP_USER": server.user,
        "MAILSUPPORT_IMAP_PASSWORD": server.password,
        "MAILSUPPORT_IMAP_SECURITY": "none",
        "MAILSUPPORT_IMAP_FOLDER": folder,
        "MAILSUPPORT_IMAP_START": "new",
        "MAILSUPPORT_IMAP_TIMEOUT": "600",
        # Acknowledgements are queued only when outgoing mail is set up. Nothing listens on
        # this port: the poll's delivery attempt after intake fails at once and leaves them
        # queued, each with one failed attempt recorded (in rounds of 100, one connection
        # attempt in all; see SMTP_REFUSED). That bookkeeping is part of the time measured.
        "MAILSUPPORT_SMTP_HOST": "127.0.0.1",
        "MAILSUPPORT_SMTP_PORT": str(SMTP_REFUSED),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        # The target is for acknowledged mail. The mail comes from 186 domains: with the
        # default limit of 20 acknowledgements a domain a day, at most 3,720 would be made
        # whatever the number of messages, and a large run would measure unacknowledged mail.
        "MAILSUPPORT_ACK_DOMAIN_LIMIT": "0",
        "NO_COLOR": "1",
    }
    return env


def _counts(url: str) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            one = lambda sql: int(conn.execute(sa.text(sql)).scalar() or 0)  # noqa: E731
            decisions = conn.execute(
                sa.text(
                    "SELECT ack_decision, count(*) FROM messages WHERE direction = 'in' "
                    "GROUP BY ack_decision ORDER BY count(*) DESC LIMIT 4"
                )
            ).all()
            return {
                "tickets": one("SELECT count(*) FROM tickets"),
                "stored": one("SELECT count(*) FROM messages"),
                "acks": one("SELECT count(*) FROM outbox WHERE kind = 'ack'"),
                "outbox": one("SELECT count(*) FROM outbox"),
                "quarantined": one("SELECT count(*) FROM quarantine"),
                "_decisions": {str(d)[:70]: n for d, n in decisions},  # type: ignore[dict-item]
            }
    finally:
        engine.dispose()


def intake(
    server: Any,
    files: list[Path],
    backend: str,
    cache_dir: Path,
    run_id: str,
    template: Path | str | None = None,
    profile: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time one poll taking `files` into a fresh store; returns the measurements."""
    folder = f"bench-{run_id}"
    with tempfile.TemporaryDirectory(prefix="mailsupport-intake-") as tmp:
        work = Path(tmp)
        url = fresh_database(backend, work, template)
        env = poll_env(server, folder, url, work, cache_dir)
        python = [sys.executable]
        with server.client() as client:
            client.create_folder(folder)
        run([*python, "-m", "mailsupport", "poll"], env, work).check()  # empty: sets the start
        before = _counts(url)
        maildir = server.dir / "home" / "Maildir" / f".{folder}"
        stat = maildir.stat()
        link_into(files, maildir / "cur", (stat.st_uid, stat.st_gid))
        started = time.monotonic()
        with server.client() as client:  # Dovecot indexes at delivery; do it before timing
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            for start in range(0, len(uids), 5000):  # 100,000 UIDs make too long a command
                client.fetch(uids[start : start + 5000], ["RFC822.SIZE"])
        assert len(uids) == len(files), (len(uids), len(files))
        log(f"  {len(files):,} messages in {folder}, indexed in {time.monotonic() - started:.1f} s")
        argv = python + (["-m", "cProfile", "-o", str(profile)] if profile else [])
        timed: Run = run([*argv, "-m", "mailsupport", "poll"], env, work).check()
        after = _counts(url)
        with server.client() as client:
            client.delete_folder(folder)
    got = {k: after[k] - before[k] for k in after if not k.startswith("_")}
    got["ack_decisions"] = after["_decisions"]
    return {
        "backend": backend,
        "messages": len(files),
        "bytes": total_bytes(files),
        "seconds": timed.wall,
        "cpu": timed.cpu,
        "poll_cpu": timed.own_cpu,  # the poll process alone; the rest is its parse workers'
        # Other work on the machine slows the poll down: the 1-minute load average at the end
        # (the poll itself counts for about 1, its workers while they parse).
        "load": os.getloadavg()[0],
        "rate": len(files) / timed.wall,
        "tree_peak_mib": timed.tree_peak_kib / 1024,
        "own_peak_mib": timed.own_peak_kib / 1024,
        "worker_peak_mib": timed.worker_peak_kib / 1024,
        "workers": timed.workers_seen,
        "summary": next((x for x in timed.stdout.splitlines() if x.startswith("poll ")), ""),
        "stored_before": before["stored"],
        **got,
    }


def ceiling(cache_dir: Path, count: int, parser: str) -> dict[str, Any]:
    """One parser alone over the first `count` messages, one core (bench.ceiling)."""
    folder = cached_mail(cache_dir, count, log=lambda _: None)[0].parent
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "bench.ceiling", parser, str(folder), str(count)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rate"] = result["messages"] / result["seconds"]
    return result


_PARSE_ONE = """import json, sys, time
from mailsupport.parsing import parse
raw = open(sys.argv[1], "rb").read()
started = time.perf_counter()
parse(raw)
seconds = time.perf_counter() - started
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(json.dumps({"seconds": seconds, "peak_kib": int(status.split()[0])}))
"""


def parse_alone(path: Path) -> dict[str, float]:
    """A process that only reads the message file `path` and parses it once: its peak RSS
    (the parse's own memory, with no poll around it; its own VmHWM, since wait4's maxrss
    counts what the forked child shared with this process before exec) and the parse's
    seconds."""
    argv = [sys.executable, "-c", _PARSE_ONE, str(path)]
    done = run(argv, dict(os.environ, PYTHONPATH=str(ROOT))).check()
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {"parse_alone_mib": found["peak_kib"] / 1024, "parse_alone_seconds": found["seconds"]}


@contextlib.contextmanager
def imap_server() -> Any:
    with dovecot() as server:
        yield server
