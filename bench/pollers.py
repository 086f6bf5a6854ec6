"""Several pollers, each on a folder of its own, against one PostgreSQL: the aggregate rate.

    python -m bench --only pollers [--pollers 1,2,4] [--poller-messages 10000] [--write]

For each count N: a fresh PostgreSQL database, N folders on one Dovecot holding the same
generated mail as the intake benchmark dealt out among them (message i to folder i mod N),
and N `python -m mailsupport poll` processes started together, each as if on a host of its
own: its own data directory, nothing shared but the database URL and MAILSUPPORT_SECRET
(attachments live in the database: MAILSUPPORT_ATTACHMENTS=database). The clock runs from
the start of the first to the exit of the last; the aggregate rate is all the messages over
that time. SMTP points at a closed port, as in the intake benchmark. Dealt out this way, most
conversations are filed by several pollers at once: the batches one had to file again
because another was in the way (a deadlock, a Message-ID both indexed) are counted from
the pollers' logs.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.intake import _counts, fresh_database, poll_env
from bench.maildir import link_into

SECRET = "bench-pollers-shared-secret"


def run_pollers(
    server: Any,
    files: list[Path],
    counts: list[int],
    cache_dir: Path,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The benchmark for each poller count; returns the measurements by count."""
    found: dict[str, Any] = {}
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="mailsupport-pollers-") as tmp:
            work = Path(tmp)
            url = fresh_database("postgresql", work)
            folders = [f"pollers-{n}-{i}" for i in range(n)]
            envs = []
            for i, folder in enumerate(folders):
                host = work / f"host{i}"
                host.mkdir()
                env = poll_env(server, folder, url, host, cache_dir)
                env |= {"MAILSUPPORT_SECRET": SECRET, "MAILSUPPORT_ATTACHMENTS": "database"}
                envs.append((host, env))
                with server.client() as client:
                    client.create_folder(folder)
                _poll(env, host).check_returncode()  # the empty folder: where new mail starts
            for i, folder in enumerate(folders):
                maildir = server.dir / "home" / "Maildir" / f".{folder}"
                stat = maildir.stat()
                link_into(files[i::n], maildir / "cur", (stat.st_uid, stat.st_gid))
                with server.client() as client:  # Dovecot indexes at delivery: not timed
                    client.select_folder(folder, readonly=True)
                    uids = client.search(["ALL"])
                    for start in range(0, len(uids), 5000):
                        client.fetch(uids[start : start + 5000], ["RFC822.SIZE"])
            log(f"  {n} poller(s): {len(files):,} messages in {n} folder(s)")
            server_before = _server_cpu()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            procs = [_start(env, host) for host, env in envs]
            codes = [p.wait() for p in procs]
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            server_cpu = _server_cpu() - server_before
            if any(codes):
                errors = [(host / "poll.err").read_text()[-2000:] for host, _ in envs]
                raise RuntimeError(f"a poller failed ({codes}):\n" + "\n".join(errors))
            counted = _counts(url)
            # Batches filed again because another poller was in the way (store/claims.py).
            refiled = sum(
                (host / "poll.err").read_text(errors="replace").count("another writer was in")
                for host, _ in envs
            )
            with server.client() as client:
                for folder in folders:
                    client.delete_folder(folder)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        found[str(n)] = {
            "pollers": n,
            "messages": len(files),
            "seconds": seconds,
            "rate": len(files) / seconds,
            "cpu": cpu,
            "load": os.getloadavg()[0],
            "stored": counted["stored"],
            "tickets": counted["tickets"],
            "quarantined": counted["quarantined"],
            "refiled": refiled,
            "server_cpu": server_cpu,
        }
        log(f"  {n} poller(s): {len(files) / seconds:.1f} messages/s in {seconds:.1f} s")
    return found


def _server_cpu() -> float:
    """CPU seconds PostgreSQL's processes have used, those that ended included (the
    postmaster's children's times count a backend once its connection closed); 0 when
    /proc does not show them (the server on another machine)."""
    import sqlalchemy as sa

    from bench.intake import PG_ADMIN_DB, PG_SERVER

    engine = sa.create_engine(f"{PG_SERVER}/{PG_ADMIN_DB}")
    try:
        with engine.connect() as conn:
            backend = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        parent = int(Path(f"/proc/{backend}/stat").read_text().rpartition(")")[2].split()[1])
        ticks = os.sysconf("SC_CLK_TCK")
        pids = [parent, *(int(p) for p in Path(f"/proc/{parent}/task/{parent}/children")
                          .read_text().split())]  # fmt: skip
        total = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                # utime, stime, and for the postmaster its reaped children's times too
                total += sum(int(f) for f in fields[11 : 15 if pid == parent else 13]) / ticks
        return total
    except (OSError, ValueError, IndexError):
        return 0.0
    finally:
        engine.dispose()


def _poll(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mailsupport", "poll"], env=env, cwd=cwd,
                          capture_output=True)  # fmt: skip


def _start(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    out = open(cwd / "poll.out", "wb")  # noqa: SIM115 - closed with the process
    err = open(cwd / "poll.err", "wb")  # noqa: SIM115
    argv = [sys.executable, "-m", "mailsupport", "poll"]
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)


def render(r: dict[str, Any], machine: str) -> str:
    rows = sorted(r.get("runs", {}).values(), key=lambda x: x["pollers"])
    if not rows:
        return ""
    one = rows[0]["rate"]
    lines = [
        f"Machine: {machine}. Measured {r.get('on', '?')}; {rows[0]['messages']:,} messages "
        "in all, dealt out among the folders.",
        "",
        "| pollers | time | aggregate intake | against one poller | CPU (all processes) "
        "| the server's CPU | load | stored | quarantined | batches filed again |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for x in rows:
        lines.append(
            f"| {x['pollers']} | {x['seconds']:.1f} s | {x['rate']:.0f} msg/s "
            f"| {x['rate'] / one:.2f}x | {x['cpu']:.0f} s | {_seconds(x.get('server_cpu'))} "
            f"| {x['load']:.1f} | {x['stored']:,} "
            f"| {x['quarantined']} | {x.get('refiled', '-')} |"
        )
    return "\n".join([*lines, ""])


def _seconds(value: float | None) -> str:
    return f"{value:.0f} s" if value else "-"
