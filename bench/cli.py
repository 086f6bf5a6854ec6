"""`python -m bench`: every benchmark of the desk, or the parts named with --only.

    python -m bench                         # everything (hours: see docs/benchmarks.md)
    python -m bench --quick                 # a smoke run: 1,000 messages, small stores
    python -m bench --only intake --sizes 1000,10000 --backends sqlite,postgresql --write
    python -m bench --only import --import-size 1000000 --backends sqlite

Parts:
  read    `list`, `show`, `search` and `report` on --tickets tickets (100,000), per backend
          (bench/run.py; its options --tickets --runs --match; PostgreSQL: bench_read_<N>)
  intake  `mailsupport poll` from Dovecot on loopback, per size and backend, and the parse
          ceiling (mail-parser alone, and our parse alone, on one core) for each size
  big     peak RSS of the poll that takes one message of just under 25 MiB, and of a
          process that only parses it
  stored  intake of --stored-intake messages into a store of 1,000,000 messages, against
          the same into an empty store (SQLite)
  mailboxes  one daemon watching --mailboxes mailboxes (50) on one Dovecot: how soon it
          takes a message delivered to any of them (--deliveries, 20), and its peak RSS
  pollers  --pollers (1,2,4) `poll` processes on folders of their own against one
          PostgreSQL, sharing nothing but the database (bench/pollers.py): aggregate rate
  import  `mailsupport import` of one generated mbox of 1,000 and of --import-size
          messages (100,000): rate, peak RSS, a second run, and a run stopped with
          Ctrl-C halfway and resumed (bench/importing.py)
  report  nothing: print the results kept (with --write, put them into the doc)

Results are kept in the cache directory (results.json), so parts run on different days
add up; --write renders all of them into docs/benchmarks.md, between the intake markers
(and the mailboxes and import markers).
PostgreSQL: BENCH_POSTGRES (default postgresql+psycopg://postgres@127.0.0.1:5432) must
allow CREATE DATABASE; intake uses a database named bench_intake, dropped each time, and
read one per store size, bench_read_<tickets>, kept until its schema or generator changes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.generate import cached_store, default_cache_dir
from bench.run import machine

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- intake results: begin -->", "<!-- intake results: end -->"
MAILBOXES_BEGIN = "<!-- mailboxes results: begin -->"
MAILBOXES_END = "<!-- mailboxes results: end -->"
PARTS = ("read", "intake", "big", "stored", "mailboxes", "pollers", "import")
POLLERS_BEGIN = "<!-- pollers results: begin -->"
POLLERS_END = "<!-- pollers results: end -->"
IMPORT_BEGIN, IMPORT_END = "<!-- import results: begin -->", "<!-- import results: end -->"
REPORT = "report"  # --only report: run nothing, print (and --write) the results kept
BIG_BYTES = 25 * 1024 * 1024 - 64 * 1024  # just under MAILSUPPORT_MAX_MESSAGE_BYTES
STORED_TICKETS = 250_000  # 3 to 5 messages each: about 1,000,000 messages


def log(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", flush=True)


def load(cache: Path, name: str) -> dict[str, Any]:
    path = cache / name
    return json.loads(path.read_text()) if path.exists() else {}


def save(cache: Path, results: dict[str, Any]) -> None:
    path = cache / results["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--quick", action="store_true", help="1,000 messages, small stores")
    parser.add_argument("--sizes", default="1000,10000,100000", help="intake sizes")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--stored-tickets", type=int, default=STORED_TICKETS)
    parser.add_argument("--stored-intake", type=int, default=10_000)
    parser.add_argument("--profile", type=Path, help="cProfile the timed polls into this dir")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--cache", type=Path, default=default_cache_dir())
    parser.add_argument("--tickets", type=int, default=100_000, help="read: store size")
    parser.add_argument("--runs", type=int, default=7, help="read: timed runs per command")
    parser.add_argument("--fresh", action="store_true", help="read: build the stores again")
    parser.add_argument("--match", default="", help="read: only commands whose label has this")
    parser.add_argument("--mailboxes", type=int, default=50, help="mailboxes: how many (50)")
    parser.add_argument("--deliveries", type=int, default=20, help="mailboxes: messages (20)")
    parser.add_argument("--pollers", default="1,2,4", help="pollers: how many at once")
    parser.add_argument("--poller-messages", type=int, default=10_000, help="pollers: in all")
    parser.add_argument(
        "--import-size", type=int, default=100_000, help="import: messages in the mbox (100000)"
    )
    parser.add_argument(
        "--import-runs",
        default="",
        help="import: which runs, of whole,again,resume (all; resume only up to 100,000)",
    )
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := set(parts) - {*PARTS, REPORT}:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}: choose from {PARTS}")
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = [b.strip() for b in args.backends.split(",")]
    if args.quick:
        sizes, args.tickets, args.runs = [1000], 10_000, 3
        args.mailboxes, args.deliveries = 10, 5
        args.poller_messages = 1000
        args.stored_tickets, args.stored_intake = 25_000, 1000
        args.import_size = 1000
    # A smoke run's numbers are kept apart: they must never replace the real ones in the doc.
    name = "results-quick.json" if args.quick else "results.json"
    results = load(args.cache, name) | {"file": name}
    if args.quick and args.write:
        parser.error("--quick results are not written to the doc; drop --write")
    if parts != [REPORT]:
        results["machine"] = describe_machine()
    if "read" in parts:
        from bench.run import main as read_main

        read = [
            "--tickets",
            str(args.tickets),
            "--runs",
            str(args.runs),
            "--cache",
            str(args.cache),
            "--backends",
            ",".join(backends),
            "--match",
            args.match,
        ] + (["--fresh"] if args.fresh else [])
        read_main(read)
    if {"intake", "big", "stored"} & set(parts):
        run_intake(args, parts, sizes, backends, results)
    if "mailboxes" in parts:
        from bench.mailboxes import run_mailboxes

        log(f"mailboxes: one daemon, {args.mailboxes} mailboxes, {args.deliveries} deliveries")
        found = run_mailboxes(args.mailboxes, args.deliveries, args.cache, log)
        results["mailboxes"] = found | {"on": f"{datetime.now(UTC):%Y-%m-%d}"}
        save(args.cache, results)
    if "pollers" in parts:
        run_pollers_part(args, results)
    if "import" in parts:
        run_import(args, backends, results)
    print()
    intake_kept = any(results.get(part) for part in ("intake", "ceiling", "big", "stored"))
    if intake_kept or not {"mailboxes", "import"} & results.keys():
        print(render(results))
    if "mailboxes" in results:
        print(render_mailboxes(results))
    if "import" in results:
        print(render_import(results))
    if args.write:
        if intake_kept:
            write_doc(render(results))
        if "mailboxes" in results:
            write_doc(render_mailboxes(results), MAILBOXES_BEGIN, MAILBOXES_END)
        if "pollers" in results:
            from bench.pollers import render as render_pollers

            text = render_pollers(results["pollers"], results.get("machine", "unknown"))
            write_doc(text, POLLERS_BEGIN, POLLERS_END)
        if "import" in results:
            write_doc(render_import(results), IMPORT_BEGIN, IMPORT_END)
        log(f"wrote {DOC.relative_to(ROOT)}")


def run_intake(
    args: argparse.Namespace,
    parts: list[str],
    sizes: list[int],
    backends: list[str],
    results: dict[str, Any],
) -> None:
    from bench.intake import ceiling, imap_server, intake, parse_alone
    from bench.maildir import cached_mail
    from bench.mailgen import large_message

    cache: Path = args.cache
    stamp = f"{datetime.now(UTC):%Y-%m-%d}"
    wanted = (sizes if "intake" in parts else []) + (
        [args.stored_intake] if "stored" in parts else []
    )
    files = cached_mail(cache, max(wanted), log) if wanted else []
    profile_dir: Path | None = args.profile
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    with imap_server() as server:
        log(f"Dovecot {server.host}:{server.port}, pid {server.pid}")
        if "intake" in parts:
            for size in sizes:
                for name in ("mailparser", "ours"):
                    log(f"ceiling: {name} parsing {size:,} messages on one core")
                    found = ceiling(cache, size, name)
                    results.setdefault("ceiling", {})[f"{name}/{size}"] = found | {"on": stamp}
                    log(f"  {found['rate']:.0f} messages/s")
                    save(cache, results)
                for backend in backends:
                    log(f"intake: {size:,} messages on {backend}")
                    prof = profile_dir / f"poll-{size}-{backend}.prof" if profile_dir else None
                    found = intake(
                        server,
                        files[:size],
                        backend,
                        cache,
                        f"{backend}-{size}",
                        profile=prof,
                        log=log,
                    )
                    results.setdefault("intake", {})[f"{backend}/{size}"] = found | {"on": stamp}
                    save(cache, results)
                    log(
                        f"  {found['rate']:.1f} messages/s, {found['seconds']:.1f} s, CPU "
                        f"{found['cpu']:.1f} s ({found['poll_cpu']:.1f} s the poll's own), peak "
                        f"{found['own_peak_mib']:.0f} MiB (workers {found['worker_peak_mib']:.0f}"
                        f" MiB); {found['summary']}; {found['acks']} acknowledgements queued"
                    )
        if "big" in parts:
            big_dir = cache / "big"
            big_dir.mkdir(parents=True, exist_ok=True)
            raw = large_message(BIG_BYTES)
            from bench.maildir import file_name

            path = big_dir / file_name(0, len(raw))
            if not path.exists():
                path.write_bytes(raw)
            alone = parse_alone(path)
            log(
                f"big: parsed alone in {alone['parse_alone_seconds']:.2f} s, "
                f"peak {alone['parse_alone_mib']:.0f} MiB"
            )
            for backend in backends:
                log(f"big: one message of {len(raw) / 2**20:.1f} MiB on {backend}")
                found = intake(server, [path], backend, cache, f"big-{backend}", log=log)
                results.setdefault("big", {})[backend] = found | alone | {"on": stamp}
                save(cache, results)
                log(
                    f"  {found['seconds']:.1f} s, peak {found['own_peak_mib']:.0f} MiB "
                    f"(workers {found['worker_peak_mib']:.0f} MiB); {found['summary']}"
                )
        if "stored" in parts:
            count = args.stored_intake
            db, _ = cached_store(args.stored_tickets, cache, log=log, raw_all=True)
            stored = _messages_in(db)
            for label, template in (("empty", None), ("stored", db)):
                log(
                    f"stored: {count:,} messages into a store of "
                    f"{0 if template is None else stored:,} messages (SQLite)"
                )
                found = intake(
                    server,
                    files[:count],
                    "sqlite",
                    cache,
                    f"stored-{label}",
                    template=template,
                    log=log,
                )
                found["store_messages"] = 0 if template is None else stored
                results.setdefault("stored", {})[label] = found | {"on": stamp}
                save(cache, results)
                log(f"  {found['rate']:.1f} messages/s, peak {found['own_peak_mib']:.0f} MiB")


def run_pollers_part(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench.intake import imap_server
    from bench.maildir import cached_mail
    from bench.pollers import render as render_pollers
    from bench.pollers import run_pollers

    counts = [int(n) for n in args.pollers.split(",")]
    files = cached_mail(args.cache, args.poller_messages, log)
    with imap_server() as server:
        log(f"pollers: {counts} against one PostgreSQL, {len(files):,} messages")
        runs = run_pollers(server, files, counts, args.cache, log)
    stamp = f"{datetime.now(UTC):%Y-%m-%d}"
    results["pollers"] = {"runs": runs, "on": stamp}
    save(args.cache, results)
    print(render_pollers(results["pollers"], results.get("machine", "unknown")))


def run_import(args: argparse.Namespace, backends: list[str], results: dict[str, Any]) -> None:
    from bench.importing import RUNS, cached_mbox, import_mbox

    stamp = f"{datetime.now(UTC):%Y-%m-%d}"
    runs = tuple(r.strip() for r in args.import_runs.split(",") if r.strip()) or None
    if runs and (unknown := set(runs) - set(RUNS)):
        raise SystemExit(f"unknown --import-runs {', '.join(sorted(unknown))}: choose from {RUNS}")
    for size in sorted({1000, args.import_size}):
        mbox = cached_mbox(args.cache, size, log)
        for backend in backends:
            log(f"import: an mbox of {size:,} messages on {backend}")
            found = import_mbox(mbox, size, backend, args.cache, log, runs)
            # Runs not made this time keep what an earlier one measured.
            kept = results.setdefault("import", {}).get(f"{backend}/{size}", {})
            results["import"][f"{backend}/{size}"] = kept | found | {"on": stamp}
            save(args.cache, results)


def _messages_in(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])


def describe_machine() -> str:
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{machine()}{memory}, {platform.node() or 'unnamed host'}"


# -- Markdown -------------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    lines = [f"Machine: {results.get('machine', 'unknown')}.", ""]
    ceiling = results.get("ceiling", {})
    intake = results.get("intake", {})
    if intake:
        lines += [
            "| messages | backend | intake | time | CPU | load | % of ceiling | poll peak RSS | "
            "largest worker | tickets | acks queued |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key in sorted(intake, key=lambda k: (int(k.split("/")[1]), k)):
            r = intake[key]
            top = ceiling.get(f"mailparser/{r['messages']}")
            share = f"{100 * r['rate'] / top['rate']:.0f} %" if top else "–"
            worker = f"{r['worker_peak_mib']:.0f} MiB" if r["workers"] else "none"
            lines.append(
                f"| {r['messages']:,} | {r['backend']} | {r['rate']:.0f} msg/s | "
                f"{r['seconds']:.1f} s | {r['cpu']:.1f} s | {_load(r)} | {share} | "
                f"{r['own_peak_mib']:.0f} MiB | {worker} | "
                f"{r['tickets']:,} | {r['acks']:,} |"
            )
        lines.append("")
    if ceiling:
        lines += [
            "Parsing alone, one process on one core, the same messages:",
            "",
            "| messages | mail-parser `parse_from_bytes` (the ceiling) | "
            "`mailsupport.parsing.parse` |",
            "| ---: | ---: | ---: |",
        ]
        for size in sorted({int(k.split("/")[1]) for k in ceiling}):
            cells = []
            for name in ("mailparser", "ours"):
                r = ceiling.get(f"{name}/{size}")
                cells.append(f"{r['rate']:.0f} msg/s" if r else "–")
            lines.append(f"| {size:,} | {cells[0]} | {cells[1]} |")
        lines.append("")
    big = results.get("big", {})
    if big:
        lines += [
            "One message of just under 25 MiB (one attachment):",
            "",
            "| backend | size | time | poll peak RSS | largest worker | parsed alone |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for backend, r in sorted(big.items()):
            worker = f"{r['worker_peak_mib']:.0f} MiB" if r["workers"] else "none"
            alone = "–"
            if "parse_alone_mib" in r:  # runs before it was measured lack it
                alone = f"{r['parse_alone_mib']:.0f} MiB, {r['parse_alone_seconds']:.2f} s"
            lines.append(
                f"| {backend} | {r['bytes'] / 2**20:.1f} MiB | {r['seconds']:.1f} s | "
                f"{r['own_peak_mib']:.0f} MiB | {worker} | {alone} |"
            )
        lines.append("")
    stored = results.get("stored", {})
    if stored:
        lines += [
            "Intake into a store already holding messages (SQLite):",
            "",
            "| store holds | messages taken | intake | poll peak RSS | vs empty |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        empty = stored.get("empty")
        for label in ("empty", "stored"):
            r = stored.get(label)
            if not r:
                continue
            versus = f"{100 * r['rate'] / empty['rate'] - 100:+.0f} %" if empty else "–"
            lines.append(
                f"| {r['store_messages']:,} | {r['messages']:,} | {r['rate']:.0f} msg/s "
                f"| {r['own_peak_mib']:.0f} MiB | {versus} |"
            )
        lines.append("")
    dates = sorted(
        {
            r["on"]
            for part in ("intake", "ceiling", "big", "stored")
            for r in results.get(part, {}).values()
        }
    )
    if dates:
        lines.append(f"Measured {', '.join(dates)}.")
    return "\n".join(lines).rstrip() + "\n"


def _load(r: dict[str, Any]) -> str:
    return f"{r['load']:.1f}" if "load" in r else "–"


def render_mailboxes(results: dict[str, Any]) -> str:
    from bench.mailboxes import render as render_part

    machine = f"Machine: {results.get('machine', 'unknown')}.\n\n"
    return machine + render_part(results["mailboxes"])


def render_import(results: dict[str, Any]) -> str:
    from bench.importing import render as render_part

    machine = f"Machine: {results.get('machine', 'unknown')}.\n\n"
    return machine + render_part(results["import"])


def write_doc(table: str, begin: str = BEGIN, end: str = END) -> None:
    text = DOC.read_text()
    block = f"{begin}\n{table}{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


def entry() -> None:
    started = time.monotonic()
    main(sys.argv[1:])
    log(f"done in {time.monotonic() - started:.0f} s")
