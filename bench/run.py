"""Times `mailsupport list`, `show`, `search` and `report` as real processes on a large store.

    python -m bench --only read [--tickets N] [--runs N] [--backends sqlite,postgresql]
                                [--match TEXT,...] [--cache DIR] [--fresh]

Run from the repository root: the commands run this checkout (PYTHONPATH), not an installed
copy. Each command runs once to warm the caches, then --runs times; the table shows the
median and the fastest wall-clock time (process start to exit), the median CPU time and the
command's target. Bytecode is cached (in the cache directory) as it is for an installed
package, even when PYTHONDONTWRITEBYTECODE is set in the calling shell.

Stores are built once and kept: SQLite in the cache directory, PostgreSQL as the database
bench_read_<tickets> on BENCH_POSTGRES (postgresql+psycopg://postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.generate import END, cached_postgresql, cached_store, default_cache_dir, iter_sizes
from bench.measure import mailsupport_env

TARGET_SECONDS = 0.3  # list, show, list --waiting (issue 7; issue 5 asked for 0.5)
SEARCH_TARGET = 0.5  # search (issue 20)
REPORT_TARGET = 10.0  # report over a year (issue 20)
AGENT = "anna"  # `list --mine` runs as this agent; the generator assigns tickets to it
PG_SERVER = os.environ.get("BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
BACKENDS = ("sqlite", "postgresql")
# What search is timed on, from the generator's vocabulary: an English word; a Russian word
# whose forms differ (счета finds счёт, счёта and счёте by their stem); a phrase, matched as
# written; and an address (the shown ticket's customer).
SEARCH_WORD = "export"
SEARCH_FORMS = "счета"
SEARCH_PHRASE = '"старая сумма"'


def commands(show_number: int, requester: str) -> list[tuple[str, list[str], float]]:
    """(label, arguments, target seconds): the four the issue asks for first, then each other
    filter, then search and the report over a year."""
    rows = [
        ("list", ["list"]),
        ("list --status open --limit 50", ["list", "--status", "open", "--limit", "50"]),
        ("list --mine", ["list", "--mine"]),
        (f"show {show_number} ({10} messages)", ["show", str(show_number)]),
        ("list --assignee none", ["list", "--assignee", "none"]),
        ("list --priority urgent", ["list", "--priority", "urgent"]),
        ("list --queue billing", ["list", "--queue", "billing"]),
        ("list --tag vip", ["list", "--tag", "vip"]),
        ("list --since 30d", ["list", "--since", "30d"]),
        ("list --sort priority", ["list", "--sort", "priority"]),
        ("list --sort created --reverse", ["list", "--sort", "created", "--reverse"]),
        ("list --offset 50000", ["list", "--offset", "50000"]),
        ("list --json", ["list", "--json"]),
        (f"show {show_number} --json", ["show", str(show_number), "--json"]),
        (f"show {show_number} --history", ["show", str(show_number), "--history"]),
        ("list --waiting", ["list", "--waiting"]),
        (
            "list --waiting --mine --sort priority",
            ["list", "--waiting", "--mine", "--sort", "priority"],
        ),
        ("list --requester ADDR", ["list", "--requester", requester]),
        ("next", ["next"]),
    ]
    timed = [(label, argv, TARGET_SECONDS) for label, argv in rows]
    timed += [
        (f"search {SEARCH_WORD}", ["search", SEARCH_WORD], SEARCH_TARGET),
        (f"search {SEARCH_FORMS}", ["search", SEARCH_FORMS], SEARCH_TARGET),
        (f"search '{SEARCH_PHRASE}'", ["search", SEARCH_PHRASE], SEARCH_TARGET),
        ("search ADDR", ["search", requester], SEARCH_TARGET),
    ]
    since, until = (END - timedelta(days=365)).date(), (END - timedelta(days=1)).date()
    report = ["report", "--since", str(since), "--until", str(until)]
    timed.append((f"report (a year: {since} to {until})", report, REPORT_TARGET))
    return timed


def requester_of(url: str, number: int) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            sql = sa.text("SELECT requester FROM tickets WHERE number = :n")
            return str(connection.execute(sql, {"n": number}).scalar_one())
    finally:
        engine.dispose()


def pg_sizes(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            counts = [
                f"{connection.execute(sa.text(f'SELECT count(*) FROM {t}')).scalar_one():,} {t}"
                for t in ("tickets", "messages", "ticket_tags")
            ]
            size = connection.execute(sa.text("SELECT pg_database_size(current_database())"))
            return f"{', '.join(counts)}, {size.scalar_one() / 2**20:.0f} MiB"
    finally:
        engine.dispose()


def child_env(url: str, work: Path, cache_dir: Path) -> dict[str, str]:
    env = mailsupport_env(cache_dir, passed_through=False)
    env |= {
        "MAILSUPPORT_DATABASE_URL": url,
        "MAILSUPPORT_DATA_DIR": str(work / "data"),
        "MAILSUPPORT_SUPPORT_ADDRESS": "support@example.com",
        "MAILSUPPORT_AGENT": AGENT,
        "NO_COLOR": "1",
    }
    return env


def time_command(
    argv: list[str], env: dict[str, str], cwd: Path, runs: int
) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (user + system) seconds of each run; raises RuntimeError naming
    a failed command. CPU time shows the command's own cost even on a busy machine."""
    wall, cpu = [], []
    for i in range(runs + 1):  # the first run only warms the caches
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0 or (argv[1] == "-m" and not done.stdout):
            text = [x.strip("│╭╮╰╯─ ") for x in done.stderr.decode().splitlines()]
            raise RuntimeError(f"exit {done.returncode}: {[x for x in text if x][-1:]}")
        if i:
            wall.append(elapsed)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000, help="store size (100000)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command (7)")
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="cache dir")
    parser.add_argument("--fresh", action="store_true", help="build the stores again")
    parser.add_argument(
        "--backends", default="sqlite", help="sqlite, postgresql or both, comma-separated"
    )
    parser.add_argument(
        "--match", default="", help="only the commands whose label has one of these, comma-sep."
    )
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if not backends or set(backends) - set(BACKENDS):
        parser.error(f"--backends: {', '.join(BACKENDS)}")
    wanted = [m for m in args.match.split(",") if m]

    print(f"machine: {machine()}")
    failed = 0
    for backend in backends:
        if backend == "sqlite":
            db, show_number = cached_store(args.tickets, args.cache, fresh=args.fresh)
            url = f"sqlite:///{db}"
            sizes = ", ".join(f"{n:,} {table}" for table, n in iter_sizes(db))
            sizes += f", {db.stat().st_size / 2**20:.0f} MiB"
        else:
            url, show_number = cached_postgresql(args.tickets, PG_SERVER, fresh=args.fresh)
            sizes = pg_sizes(url)
        print(f"\n{backend} store: {sizes}")
        failed += run_commands(url, show_number, args, wanted)
    print(
        f"\nmedian and fastest wall clock, median CPU time (user + system) of {args.runs} "
        "runs after one warm-up; target: the median under it"
    )
    if failed:
        sys.exit(1)


def run_commands(url: str, show_number: int, args: argparse.Namespace, wanted: list[str]) -> int:
    """Time each command on the store at `url`, printing a row each; the number that failed."""
    with tempfile.TemporaryDirectory(prefix="mailsupport-bench-") as tmp:
        work = Path(tmp)
        env = child_env(url, work, args.cache)
        python = [sys.executable]
        rows = [("python -c pass (the interpreter alone)", [*python, "-c", "pass"], 0.0)]
        labelled = commands(show_number, requester_of(url, show_number))
        rows += [(label, [*python, "-m", "mailsupport", *a], t) for label, a, t in labelled]
        if wanted:
            rows = [r for r in rows if any(w in r[0] for w in wanted)]
        print(f"load average {os.getloadavg()[0]:.1f} at the start")
        print(f"{'command':<42} {'median':>8} {'fastest':>8} {'CPU':>8} {'target':>7}")
        failed = 0
        for label, full, target in rows:
            try:
                wall, cpu = time_command(full, env, work, args.runs)
            except RuntimeError as error:
                print(f"{label:<42} failed, {error}", flush=True)
                failed += 1
                continue
            median = statistics.median(wall)
            shown = f"{target:>6g}s" if target else f"{'':>7}"
            mark = "" if not target or median < target else "  over"
            print(
                f"{label:<42} {median:>7.3f}s {min(wall):>7.3f}s "
                f"{statistics.median(cpu):>7.3f}s {shown}{mark}",
                flush=True,
            )
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return failed


if __name__ == "__main__":
    main()
