"""What filing costs the poll, counted in instructions: the same count for the same code.

    python -m bench.filing [--backend sqlite|postgresql] [--messages 300] [--time]

Intake's rate on a shared VM moves by half from one minute to the next (the same code's
poll took 16 to 24 s of CPU for the same 10,000 messages), which hides a change of a few
per cent however the runs alternate. This part of intake, counted by valgrind's callgrind,
does not move: the first MESSAGES of the benchmark's mail, parsed beforehand (not counted),
are filed in process by Pipeline.take in batches of 200, into a new store, without IMAP
or parse workers. It runs twice under callgrind, once without the filing, and prints the
difference: the instructions filing took (with what the first batch compiles and loads once).
On PostgreSQL only the process's own: the server's work is not counted. `--time` runs once
without valgrind and prints the CPU seconds filing took instead.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.generate import default_cache_dir
from bench.intake import PG_SERVER, pg_admin
from bench.maildir import cached_mail
from bench.measure import mailsupport_env

ROOT = Path(__file__).resolve().parent.parent
BATCH = 200


def file_in_process(backend: str, count: int, skip_filing: bool) -> float:
    """File the first `count` messages into a new store; the CPU seconds filing took."""
    work = Path(tempfile.mkdtemp(prefix="bench-filing-"))
    database = f"bench_filing_{os.getpid()}"
    # Nothing of the caller's own desk: no MAILSUPPORT_* setting from the shell, and no
    # ./settings.env (the run is in `work`).
    home = Path.cwd()
    os.chdir(work)
    os.environ.clear()
    os.environ.update(mailsupport_env(default_cache_dir(), passed_through=False))
    os.environ.update(
        MAILSUPPORT_DATA_DIR=str(work / "data"),
        MAILSUPPORT_SUPPORT_ADDRESS="support@example.com",
        # Acknowledgements are queued only when outgoing mail is set up (as in `intake`).
        MAILSUPPORT_SMTP_HOST="127.0.0.1",
        MAILSUPPORT_SMTP_PORT="9",
        MAILSUPPORT_SMTP_SECURITY="none",
        MAILSUPPORT_ACK_DOMAIN_LIMIT="0",
    )
    if backend == "postgresql":
        pg_admin([f"CREATE DATABASE {database}"])
        os.environ["MAILSUPPORT_DATABASE_URL"] = f"{PG_SERVER}/{database}"
    try:
        return _file(count, skip_filing)
    finally:
        os.chdir(home)
        shutil.rmtree(work, ignore_errors=True)
        if backend == "postgresql":
            pg_admin([f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"])


def _file(count: int, skip_filing: bool) -> float:
    from mailsupport.config import load_settings
    from mailsupport.parsing.workers import parse_safely, with_stems
    from mailsupport.pipeline import Incoming, Pipeline
    from mailsupport.store.db import Store

    settings = load_settings()
    store = Store.open(settings.db_url, check_schema=False)
    store.ensure_schema()
    files = cached_mail(default_cache_dir(), count, log=lambda _: None)
    items = [Incoming(path.read_bytes(), f"bench:{path.name}") for path in files]
    pairs = [(item, with_stems(parse_safely(item.raw))) for item in items]
    pipeline = Pipeline(settings, store)
    started = time.process_time()
    for start in range(0, 0 if skip_filing else len(pairs), BATCH):
        batch = iter(pairs[start : start + BATCH])
        pipeline.take(batch, lambda: datetime.now(UTC), lambda session, outcomes: None)
    return time.process_time() - started


def instructions(backend: str, count: int, skip_filing: bool) -> int:
    """This module's run under callgrind: the instructions of the whole process."""
    with tempfile.TemporaryDirectory() as out:
        argv = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out",
            sys.executable, "-m", "bench.filing", "--backend", backend,
            "--messages", str(count), "--time",
        ] + (["--skip-filing"] if skip_filing else [])  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="0")
        subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True)
        summary = re.search(r"^summary: (\d+)", Path(out, "callgrind.out").read_text(), re.M)
        if summary is None:
            raise SystemExit("callgrind wrote no summary")
        return int(summary[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.filing", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--time", action="store_true", help="CPU seconds, no valgrind")
    parser.add_argument("--skip-filing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time:
        spent = file_in_process(args.backend, args.messages, args.skip_filing)
        print(f"filing {args.messages} messages on {args.backend}: {spent:.2f} s of CPU")
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind), or use --time")
    whole = instructions(args.backend, args.messages, skip_filing=False)
    parsing = instructions(args.backend, args.messages, skip_filing=True)
    filing = whole - parsing
    print(
        f"filing {args.messages} messages on {args.backend}: {filing / 1e6:,.0f} million "
        f"instructions ({filing / args.messages / 1e6:.2f} million a message)"
    )


if __name__ == "__main__":
    main()
