"""The parse ceiling: one parser alone over the benchmark's messages, on one core.

    python -m bench.ceiling {mailparser,ours} DIR COUNT

Runs in its own process pinned to one CPU. Reads the first COUNT cached message files of
DIR (name order: delivery order) and times only the parse calls; prints one JSON line.
`mailparser` is mail-parser's parse_from_bytes, what intake cannot beat on one core;
`ours` is mailsupport.parsing.parse (the standard library's parser with mail-parser's
reading of the Date, charset decoding, HTML to text, attachments), the part of intake that
the parse workers spread over cores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parser(name: str) -> Callable[[bytes], Any]:
    if name == "mailparser":
        import logging

        import mailparser

        logging.getLogger("mailparser").setLevel(logging.CRITICAL + 1)  # it logs defects
        return mailparser.parse_from_bytes
    if name == "ours":
        from mailsupport.parsing import parse

        return parse
    raise SystemExit(f"unknown parser {name!r}: mailparser or ours")


def main(argv: list[str]) -> None:
    name, folder, count = argv[0], Path(argv[1]), int(argv[2])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    parse = parser(name)
    files = sorted(p for p in folder.iterdir() if ",S=" in p.name)[:count]
    parse(files[0].read_bytes())  # warm: first-call imports inside the parser
    spent, failed, size = 0.0, 0, 0
    for path in files:
        raw = path.read_bytes()
        size += len(raw)
        started = time.perf_counter()
        try:
            parse(raw)
        except Exception:
            failed += 1
        spent += time.perf_counter() - started
    print(
        json.dumps(
            {
                "parser": name,
                "messages": len(files),
                "bytes": size,
                "seconds": spent,
                "failed": failed,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
