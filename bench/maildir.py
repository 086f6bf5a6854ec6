"""Generated mail cached as Maildir files, and handed to Dovecot by hard links.

Loading 100,000 messages with IMAP APPEND costs minutes (one round trip and one fsync per
message: see `append_rate`); Dovecot reads any file placed in a Maildir's cur/ instead. The
files are written once, under the cache directory, with CRLF line ends exactly as IMAP
serves them, and with S= and W= (size, size with CRLF) in their names so Dovecot need not
read them to know their sizes. Each run links them into a fresh folder: no copying, and
Dovecot never changes a file in place (flags go into the name, which only renames its own
link).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.mailgen import MAILGEN_VERSION, generate

SEED = 1


def file_name(index: int, size: int) -> str:
    # Dovecot gives new files UIDs in name order; the zero-padded index keeps delivery order.
    return f"{1_800_000_000 + index}.M{index:07d}P1.bench,S={size},W={size}:2,"


def cached_mail(cache_dir: Path, count: int, log: Callable[[str], None] = print) -> list[Path]:
    """The first `count` generated messages as files (generated once, then reused); the
    same seed gives the same stream, so 1,000 are the first 1,000 of 100,000."""
    folder = cache_dir / f"mail-s{SEED}-g{MAILGEN_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    done_file = folder / "complete"
    have = int(done_file.read_text()) if done_file.exists() else 0
    if have < count:
        log(f"generating {count:,} messages into {folder} (once; they are cached)")
        started = time.monotonic()
        for index, raw in enumerate(generate(count, SEED)):
            if index < have:
                continue  # the stream must be replayed to reach message `have`
            partial = folder / f"tmp.{index}"
            partial.write_bytes(raw)
            partial.rename(folder / file_name(index, len(raw)))
            if index and index % 20_000 == 0:
                log(f"  {index:,} of {count:,}")
        done_file.write_text(str(count))
        log(f"generated in {time.monotonic() - started:.0f} s")
    names = sorted(p for p in folder.iterdir() if ",S=" in p.name)
    return names[:count]


def link_into(files: list[Path], cur: Path, owner: tuple[int, int] | None) -> None:
    """Hard-link `files` into a Maildir cur/ directory (copy across file systems)."""
    cur.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = cur / path.name
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
            if owner is not None:
                os.chown(target, *owner)


def total_bytes(files: list[Path]) -> int:
    return sum(int(p.name.split(",S=")[1].split(",")[0]) for p in files)


def iter_bytes(files: list[Path]) -> Iterator[bytes]:
    for path in files:
        yield path.read_bytes()
