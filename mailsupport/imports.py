"""`import` that can be stopped and run again: what is stored is not read or parsed twice.

- **mbox files** go on from where the last committed batch got to: the byte offset of the
  next message is recorded in the transaction of every batch (store/imports.py), with a
  checksum of the bytes before it. A run trusts the offset only when the file still holds
  those bytes (`sources.files.checksum`): a file edited or replaced is read from the start,
  one that mail was appended to goes on.
- **Every message read** (Maildir and other message files, and mbox messages past the
  offset) is looked up by the sha256 of its bytes before it is parsed: bytes stored
  already, and not in the quarantine, would change nothing, so they are skipped. That is
  how a Maildir or a directory resumes: in any order, whatever files were added to it.
- **A stop request** (`request_stop`, which daemon.stop_on_signals makes of SIGINT and
  SIGTERM) ends the stream of messages: the pipeline finishes and commits what it holds,
  and the caller says how to go on. A second signal ends the process at once; what was not
  committed is simply read again next time.

`--restart` (restart=True) trusts nothing recorded: every message is read and parsed, and
duplicates are recognised by their Message-ID as ever.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailsupport.pipeline import Incoming
from mailsupport.sources.files import ImportPlan, MboxFile, RawItem, checksum
from mailsupport.store import imports as recorded
from mailsupport.store.db import Store

# Messages looked up together before parsing: one query, a few MiB held at most.
CHUNK_MESSAGES = 200
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileIncoming(Incoming):
    """A message of an import, with where it was in its file."""

    source: int = -1  # index in the plan's sources
    number: int = 0  # mbox: its number in the file (1-based)
    end: int = 0  # mbox: the offset the next message starts at


Mark = tuple[int, int]  # (offset, messages): an mbox read up to there


@dataclass
class FileImport:
    """One run of `import` over a checked plan. `prepare()`, then feed `items()` to
    Pipeline.run with `record` as its on_batch, then `finish()` if it returned."""

    store: Store
    plan: ImportPlan
    now: Callable[[], datetime]
    restart: bool = False
    # How each message is handed over (no_ack_reason, live, sent: see Incoming).
    incoming: dict[str, Any] = field(default_factory=dict)
    on_read: Callable[[int], None] = lambda _bytes: None  # progress, in bytes read
    skipped: int = 0  # messages already imported, not parsed again
    stopped_by: str | None = None  # what asked to stop: a signal's name
    _keys: dict[int, str] = field(default_factory=dict)  # mbox source -> recorded path
    _start: dict[int, Mark] = field(default_factory=dict)  # where each mbox goes on
    _reached: dict[int, Mark] = field(default_factory=dict)  # handed over (or skipped)
    _recorded: dict[int, Mark] = field(default_factory=dict)  # in the database

    def __post_init__(self) -> None:
        for index, source in enumerate(self.plan.sources):
            if isinstance(source, MboxFile):
                self._keys[index] = str(source.path.resolve())

    def prepare(self) -> list[str]:
        """Decide where each mbox goes on; returns what to tell the user about it."""
        if self.restart:
            return []
        rows = recorded.progress(self.store, self._keys.values())
        said = []
        for index, key in self._keys.items():
            row = rows.get(key)
            if row is None:
                continue
            source = self.plan.sources[index]
            if checksum(source.path, row.byte_offset) != row.checksum:
                said.append(
                    f"{source.path} changed since {row.messages} of its messages were "
                    "imported: reading it from the start (what is stored is not parsed again)"
                )
                continue
            self._start[index] = self._recorded[index] = (row.byte_offset, row.messages)
            self.skipped += row.messages
            if row.byte_offset >= source.size:
                said.append(
                    f"{source.path}: all {row.messages} messages imported before "
                    "(--restart reads it again)"
                )
            else:
                said.append(
                    f"resuming {source.path} at message {row.messages + 1} (byte {row.byte_offset})"
                )
        return said

    def remaining_bytes(self) -> int:
        """How much there is to read, for a progress bar."""
        sources = self.plan.sources
        return sum(s.size - self._start.get(i, (0, 0))[0] for i, s in enumerate(sources))

    # -- the stream ---------------------------------------------------------------------------

    def items(self) -> Iterator[FileIncoming]:
        """The messages to process, in the plan's order, without those already stored."""
        chunk: list[tuple[int, RawItem]] = []
        size = 0
        for index, item in self._read():
            chunk.append((index, item))
            size += len(item.raw)
            if len(chunk) >= CHUNK_MESSAGES or size >= CHUNK_BYTES:
                yield from self._unstored(chunk)
                chunk, size = [], 0
            if self.stopped_by is not None:
                return
        yield from self._unstored(chunk)

    def _read(self) -> Iterator[tuple[int, RawItem]]:
        for index, source in enumerate(self.plan.sources):
            if self.stopped_by is not None:
                return
            if not isinstance(source, MboxFile):
                for item in source.items(self.plan.note):
                    self.on_read(source.size)
                    yield index, item
                continue
            offset, number = self._start.get(index, (0, 0))
            for item in source.messages(offset, number):
                self.on_read(item.end - offset)
                offset = item.end
                yield index, item

    def _unstored(self, chunk: list[tuple[int, RawItem]]) -> Iterator[FileIncoming]:
        digests = [hashlib.sha256(item.raw).hexdigest() for _, item in chunk]
        known = set() if self.restart else recorded.stored_digests(self.store, digests)
        for (index, item), digest in zip(chunk, digests, strict=True):
            if self.stopped_by is not None:
                return
            if index in self._keys:
                self._reached[index] = (item.end, item.number)
            if not item.raw.strip():
                self.plan.note(item.origin, "empty message in mbox")
            elif digest in known:
                self.skipped += 1
            else:
                yield FileIncoming(
                    item.raw, item.origin, item.received_at, **self.incoming,
                    source=index, number=item.number, end=item.end,
                )  # fmt: skip

    # -- what is recorded ---------------------------------------------------------------------

    def record(self, session: Session, last: Incoming) -> None:
        """Pipeline.run's on_batch: in the batch's transaction, how far each mbox got. The
        files before the batch's last message are done (skipped messages included)."""
        assert isinstance(last, FileIncoming)
        for index in [i for i in self._reached if i < last.source]:
            self._save(session, index, self._reached[index])
        if last.source in self._keys:
            self._save(session, last.source, (last.end, last.number))

    def finish(self) -> None:
        """After Pipeline.run returned: everything handed over is committed, so each mbox
        is done up to where the stream got (messages skipped after the last batch too)."""
        todo = {i: m for i, m in self._reached.items() if self._recorded.get(i) != m}
        if todo:
            with self.store.write() as session:
                for index, mark in todo.items():
                    self._save(session, index, mark)

    def _save(self, session: Session, index: int, mark: Mark) -> None:
        if self._recorded.get(index) == mark:
            return
        digest = checksum(self.plan.sources[index].path, mark[0])
        if digest is None:  # the file changed while it was read: record nothing to trust
            return
        recorded.record(session, self._keys[index], *mark, digest, self.now())
        self._recorded[index] = mark

    def request_stop(self, reason: str = "") -> None:
        """End the stream (daemon.stop_on_signals calls this with the signal's name): the
        pipeline commits what it holds and returns."""
        self.stopped_by = reason or "a request"
