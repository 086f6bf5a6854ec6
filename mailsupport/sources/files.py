"""Local intake: raw messages out of mbox files, Maildirs, message files and directory trees.

Nothing here parses or stores mail. `plan_import` looks at every path first (existence,
readability, format), so a bad path means nothing is imported; iterating the plan then reads
one message at a time. An mbox can be read from a byte offset where an earlier import
stopped (`MboxFile.messages`), after `checksum` shows the file still holds what was read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from mailsupport.errors import SourceError

__all__ = ["ImportPlan", "MboxFile", "MessageFile", "RawItem", "Source", "checksum", "plan_import"]

_SNIFF_BYTES = 8192  # enough for the first line of any sane file
_NUL_WINDOW = 1024  # a NUL byte this early means a binary file, not mail
_BOM = b"\xef\xbb\xbf"
_CHECKED_BYTES = 64 * 1024  # `checksum` reads this much of the start and of the end

# RFC 5322 field name: printable ASCII except colon (and, in practice, space); obsolete syntax
# allows blanks before the colon.
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")

# Files that mail servers and clients keep next to the mail. Hidden files are skipped anyway.
_BOOKKEEPING = re.compile(
    r"dovecot.*|courierimap.*|maildirfolder|maildirsize|subscriptions|.*\.msf"
)

_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}

# A From_ line between messages must look like one: sender, then something with a time and a
# four-digit year. That keeps an unquoted "From here on..." body line (mboxo written by a
# careless program) from cutting a message in two, while still accepting asctime dates, Gmail
# Takeout's "+0000 2023", trailing "remote from ..." and non-English day names.
_FROM_SENDER = re.compile(rb"From [^ \t\r\n]+[ \t]")
_TIME = re.compile(rb"\b\d{1,2}:\d{2}\b")
_YEAR = re.compile(rb"\b\d{4}\b")

_MONTHS = {
    name: number
    for number, name in enumerate(b"jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)
}
_ASCTIME = re.compile(
    rb"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+(?P<day>\d{1,2})\s+"
    rb"(?P<hour>\d{1,2}):(?P<min>\d{2})(?::(?P<sec>\d{2}))?"
    rb"(?:\s+(?P<tz1>[+-]\d{4}|[a-z]{3,5}))?\s+(?P<year>\d{4})(?:\s+(?P<tz2>[+-]\d{4}))?",
    re.IGNORECASE,
)

_MAILDIR_TIME = re.compile(r"(\d+)\.")


@dataclass(frozen=True, slots=True)
class RawItem:
    """One message as stored, and where it came from."""

    origin: str  # "box.mbox#12" (1-based), "Maildir/cur/123.host:2,S", "path/msg.eml"
    raw: bytes  # exactly as stored; for mbox without the From_ line, ">From " unquoted
    received_at: datetime | None  # timezone-aware UTC when the source records it
    # mbox: the message's number (1-based) and the byte offset where the next one starts,
    # the point an import that stops after this message goes on from. 0 for other files.
    number: int = 0
    end: int = 0


Note = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class MessageFile:
    """A file holding exactly one message."""

    path: Path
    received_at: datetime | None
    size: int  # when planned

    def count(self, note: Note) -> int:
        return 1

    def items(self, note: Note) -> Iterator[RawItem]:
        origin = str(self.path)
        path = self.path
        try:
            if not path.exists():
                path = _moved_within_maildir(path) or path
            with _open_regular(path) as f:
                raw = f.read()
        except OSError as e:
            raise SourceError(f"cannot read {origin}: {_reason(e)}") from e
        yield RawItem(origin=str(path), raw=raw, received_at=self.received_at)


def _moved_within_maildir(path: Path) -> Path | None:
    """A mail client reading the Maildir during the import moves new/X to cur/X:2,S and
    changes the flags after the colon: find the message under its new name."""
    if path.parent.name not in ("new", "cur"):
        return None
    unique = path.name.split(":", 1)[0]
    for folder in ("cur", "new"):
        directory = path.parent.parent / folder
        with contextlib.suppress(OSError):
            for candidate in directory.iterdir():
                if candidate.name.split(":", 1)[0] == unique:
                    return candidate
    return None


@dataclass(frozen=True, slots=True)
class MboxFile:
    """An mbox file; split lazily, one message in memory at a time."""

    path: Path
    size: int  # when planned

    def count(self, note: Note) -> int:
        return sum(1 for _ in self.items(note))

    def items(self, note: Note) -> Iterator[RawItem]:
        for item in self.messages():
            if not item.raw.strip():
                note(item.origin, "empty message in mbox")
                continue
            yield item

    def messages(self, start: int = 0, number: int = 0) -> Iterator[RawItem]:
        """Every message, empty ones too, from byte `start` (where message `number` + 1
        begins: an `end` of an earlier read, which must still be valid: see `checksum`)."""
        origin = str(self.path)
        try:
            with _open_regular(self.path) as f:
                f.seek(start)
                for n, from_line, raw, end in _split_mbox(f, origin, start, number):
                    yield RawItem(f"{origin}#{n}", raw, _from_line_date(from_line), n, end)
        except OSError as e:
            raise SourceError(f"cannot read {origin}: {_reason(e)}") from e


Source = MessageFile | MboxFile


def checksum(path: Path, offset: int) -> str | None:
    """A fingerprint of the file's first `offset` bytes, as far as a resumed import needs
    one: the first and the last 64 KiB of them, and that a message (or the end of the
    file) begins at `offset`. None when the file is shorter or no message begins there.

    An edited or replaced file fails it (a message removed or added before the offset
    moves the bytes before it); mail appended to the file does not."""
    digest = hashlib.sha256(offset.to_bytes(8, "big"))
    try:
        with _open_regular(path) as f:
            digest.update(f.read(min(offset, _CHECKED_BYTES)))
            tail = max(offset - _CHECKED_BYTES, 0)
            f.seek(tail)
            digest.update(f.read(offset - tail))
            if f.tell() != offset:
                return None  # shorter than that now
            following = f.readline()
            while following and _is_blank(following):  # the blank line that ends a message
                following = f.readline()  # may come only with the next one (Python's mailbox)
    except OSError:
        return None
    if following and not _is_separator(following):
        return None
    return digest.hexdigest()


class ImportPlan:
    """Validated set of sources. Building it reads/validates every path before anything is imported.

    `skipped` lists (path, reason) for everything left out on purpose. Empty messages inside an
    mbox are only found while the mbox is read, so they are added by `len()` or iteration.
    """

    def __init__(self, sources: list[Source], skipped: list[tuple[str, str]]) -> None:
        self._sources = sources
        self.skipped = skipped
        self._noted = set(skipped)
        self._count: int | None = None

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(source.count(self._note) for source in self._sources)
        return self._count

    def __iter__(self) -> Iterator[RawItem]:
        for source in self._sources:
            yield from source.items(self._note)

    @property
    def sources(self) -> list[Source]:
        """The files to read, in order (one per message file, one per mbox)."""
        return self._sources

    def note(self, path: str, reason: str) -> None:
        """Something left out while reading (an empty message in an mbox)."""
        self._note(path, reason)

    def _note(self, path: str, reason: str) -> None:
        # len() and iteration both read an mbox; report each finding once.
        if (path, reason) not in self._noted:
            self._noted.add((path, reason))
            self.skipped.append((path, reason))


def plan_import(paths: Sequence[str | Path]) -> ImportPlan:
    """Check every path and return what will be imported, in a deterministic order.

    Paths keep the order given; directories are walked in name order. Raises SourceError for a
    path that does not exist, cannot be read, or holds something that is not mail.
    """
    planner = _Planner()
    for path in paths:
        planner.add_explicit(Path(path))
    return ImportPlan(planner.sources, planner.skipped)


class _Planner:
    """Walks the given paths and collects sources and skipped entries."""

    def __init__(self) -> None:
        self.sources: list[Source] = []
        self.skipped: list[tuple[str, str]] = []
        self._seen: dict[tuple[int, int], str] = {}  # (device, inode) -> first path

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))

    def add_explicit(self, path: Path) -> None:
        # A path named by the user is followed even if it is a symlink: they asked for it.
        try:
            st = path.stat()
        except OSError as e:
            raise SourceError(f"cannot read {path}: {_reason(e)}") from e
        if stat.S_ISDIR(st.st_mode):
            self.add_dir(path)
        elif stat.S_ISREG(st.st_mode):
            in_maildir = path.parent.name in ("cur", "new") and _is_maildir(path.parent.parent)
            self.add_file(path, st, _maildir_time(path.name) if in_maildir else None)
        else:
            raise SourceError(f"cannot read {path}: not a regular file or directory")

    def add_dir(self, path: Path) -> None:
        if _is_maildir(path):
            self.add_maildir(path)
            return
        for entry in _list_dir(path):
            self.add_entry(entry)

    def add_entry(self, entry: os.DirEntry[str]) -> None:
        """One entry of a walked directory (or of a Maildir root, besides cur/new/tmp)."""
        path = Path(entry.path)
        try:
            if entry.is_symlink():
                self.skip(path, "symbolic link (not followed)")
            elif _BOOKKEEPING.fullmatch(entry.name):
                self.skip(path, "mail server or client bookkeeping, not mail")
            elif entry.is_dir(follow_symlinks=False):
                if _is_maildir(path):  # includes Maildir++ subfolders such as ".Sent"
                    self.add_maildir(path)
                elif entry.name.startswith("."):
                    self.skip(path, "hidden directory")
                else:
                    self.add_dir(path)
            elif entry.name.startswith("."):
                self.skip(path, "hidden file")
            elif entry.is_file(follow_symlinks=False):
                self.add_file(path, entry.stat(follow_symlinks=False), None)
            else:
                self.skip(path, "not a regular file")
        except OSError as e:
            raise SourceError(f"cannot read {path}: {_reason(e)}") from e

    def add_maildir(self, path: Path) -> None:
        # cur/ and new/ together, by file name: names start with the delivery time, so this is
        # roughly the order the mail arrived in, whatever the client has read.
        entries = [entry for sub in ("cur", "new") for entry in _list_dir(path / sub)]
        for entry in sorted(entries, key=lambda e: (e.name, e.path)):
            self.add_maildir_message(entry)
        tmp = path / "tmp"
        if tmp.is_dir() and not tmp.is_symlink():
            for entry in _list_dir(tmp):
                self.skip(Path(entry.path), "in Maildir tmp/ (still being delivered)")
        for entry in _list_dir(path):
            if entry.name not in ("cur", "new", "tmp"):
                self.add_entry(entry)

    def add_maildir_message(self, entry: os.DirEntry[str]) -> None:
        path = Path(entry.path)
        try:
            if entry.is_symlink():
                self.skip(path, "symbolic link (not followed)")
            elif entry.name.startswith("."):
                self.skip(path, "hidden file")
            elif entry.is_file(follow_symlinks=False):
                self.add_file(path, entry.stat(follow_symlinks=False), _maildir_time(entry.name))
            else:
                self.skip(path, "not a regular file")
        except OSError as e:
            raise SourceError(f"cannot read {path}: {_reason(e)}") from e

    def add_file(self, path: Path, st: os.stat_result, received_at: datetime | None) -> None:
        # The same file reached twice (given twice, a folder and its parent, hard links)
        # is imported once.
        key = (st.st_dev, st.st_ino)
        if key in self._seen:
            self.skip(path, f"same file as {self._seen[key]}")
            return
        self._seen[key] = str(path)
        if st.st_size == 0:
            self.skip(path, "empty file")
            return
        if _sniff(path) == "mbox":
            self.sources.append(MboxFile(path, st.st_size))
        else:
            self.sources.append(MessageFile(path, received_at, st.st_size))


def _list_dir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda entry: entry.name)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {_reason(e)}") from e


def _is_maildir(path: Path) -> bool:
    # tmp/ is not required: copies of a Maildir often lose empty directories (git, zip).
    return all((path / sub).is_dir() and not (path / sub).is_symlink() for sub in ("cur", "new"))


def _open_regular(path: Path) -> BinaryIO:
    """Open for reading without ever blocking on a FIFO, and refuse anything but a file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(f"cannot read {path}: not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _sniff(path: Path) -> str:
    """Return "mbox" or "message" from the first bytes, or raise SourceError."""
    try:
        with _open_regular(path) as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {_reason(e)}") from e
    kind, problem = _classify(head)
    if kind is None:
        raise SourceError(f"not an mbox or a message file: {path} ({problem})")
    return kind


def _classify(head: bytes) -> tuple[str | None, str]:
    for magic, name in _COMPRESSED.items():
        if head.startswith(magic):
            return None, f"{name}-compressed; decompress it first"
    text = head.removeprefix(_BOM).lstrip(b"\r\n")
    if b"\0" in _header_block(text)[:_NUL_WINDOW]:
        return None, "contains NUL bytes, looks like a binary file"
    first, _, rest = text.partition(b"\n")
    if first.startswith(b"From "):
        # A real From_ line is enough (the first message may be empty); a looser "From ..."
        # line must at least be followed by a header.
        if _is_separator(first) or _HEADER_LINE.match(rest):
            return "mbox", ""
        return None, 'starts with a "From " line that is not followed by a header'
    if _HEADER_LINE.match(first):
        return "message", ""
    return None, 'first line is not a header or "From " line'


def _header_block(text: bytes) -> bytes:
    # Headers never hold NUL bytes; a body may (8-bit or binary MIME parts, a damaged mbox).
    ends = [i for i in (text.find(b"\n\n"), text.find(b"\n\r\n")) if i >= 0]
    return text[: min(ends)] if ends else text


def _split_mbox(
    f: BinaryIO, origin: str, start: int = 0, number: int = 0
) -> Iterator[tuple[int, bytes, bytes, int]]:
    """Yield (number, From_ line, message bytes, end) for each message from byte `start`
    on, numbered from `number` + 1; `end` is the offset where the next From_ line begins.

    Reads line by line, so only the current message is in memory. Lines end as stored (LF or
    CRLF), which is how CRLF mbox files come through intact.
    """
    lines = iter(f)
    first = _first_from_line(lines, origin)
    if first is None:
        return
    skipped, from_line = first
    position = start + skipped + len(from_line)
    number, body = number + 1, []
    for line in lines:
        if _is_separator(line):
            yield number, from_line, _message_bytes(body), position
            number, from_line, body = number + 1, line, []
        else:
            body.append(_unquote(line))
        position += len(line)
    # A truncated last message still comes out: better a damaged message than a lost one.
    yield number, from_line, _message_bytes(body), position


def _first_from_line(lines: Iterator[bytes], origin: str) -> tuple[int, bytes] | None:
    """The first From_ line, and how many bytes came before it."""
    # Tolerate a byte order mark and blank lines before the first From_ line.
    skipped = 0
    for line in lines:
        if _is_blank(line.removeprefix(_BOM)):
            skipped += len(line)
            continue
        if line.removeprefix(_BOM).startswith(b"From "):
            return skipped, line
        raise SourceError(f"cannot read {origin}: no longer starts with a From_ line")
    return None


def _is_blank(line: bytes) -> bool:
    return not line.rstrip(b"\r\n")


def _is_separator(line: bytes) -> bool:
    sender = _FROM_SENDER.match(line)
    if sender is None:
        return False
    rest = line[sender.end() :]
    return bool(_TIME.search(rest) and _YEAR.search(rest))


def _unquote(line: bytes) -> bytes:
    # mboxrd: writers turn "From " into ">From " and ">From " into ">>From ", so one ">" comes
    # off every ">*From " line. For an mboxo file (where only "From " was quoted) this also
    # turns an original ">From " into "From "; the two formats cannot be told apart, and
    # mboxrd is what current writers (mutt, Python's mailbox, Gmail) produce.
    if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
        return line[1:]
    return line


def _message_bytes(body: list[bytes]) -> bytes:
    # The blank line before the next From_ line belongs to the mbox format, not to the message.
    if body and _is_blank(body[-1]):
        body.pop()
    return b"".join(body)


def _from_line_date(from_line: bytes) -> datetime | None:
    """The date of a From_ line (asctime-style, UTC unless it carries an offset)."""
    match = _ASCTIME.search(from_line)
    if match is None:
        return None
    offset = match["tz2"] or match["tz1"] or b""
    try:
        zone = _zone(offset)
        when = datetime(
            int(match["year"]),
            _MONTHS[match["mon"].lower()],
            int(match["day"]),
            int(match["hour"]),
            int(match["min"]),
            int(match["sec"] or 0),
            tzinfo=zone,
        )
    except ValueError:  # "Feb 31", "25:00", an offset of +9999
        return None
    return when.astimezone(UTC)


def _zone(offset: bytes) -> timezone:
    # Only a numeric offset counts; names like "EST" are ambiguous, so those dates stay UTC.
    if offset[:1] not in (b"+", b"-"):
        return UTC
    minutes = int(offset[1:3]) * 60 + int(offset[3:5])
    return timezone(timedelta(minutes=-minutes if offset[:1] == b"-" else minutes))


def _maildir_time(name: str) -> datetime | None:
    """Delivery time from a Maildir file name such as "1700000000.M1P2.host:2,S"."""
    match = _MAILDIR_TIME.match(name)
    if match is None:
        return None
    try:
        return datetime.fromtimestamp(int(match[1]), UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
