"""Where attachment contents are kept, and moving them from one place to the other.

Two places can hold them (MAILSUPPORT_ATTACHMENTS): files under DATA_DIR/attachments
(store/files.py, the default on SQLite) and the database (store/blobs.py, the default on
PostgreSQL). New content goes to the configured place. Reading looks there first and then
in the other place, so attachments stored before the setting changed, or not yet moved by
a `db move-attachments` that is running, are found wherever they are: daemons keep working
through a move.

A move copies each content, checks its sha256 as it goes, and only then, when asked,
removes it from where it came from. Each content is one step of its own, committed before
the next, so a move that is stopped at any point (Ctrl-C, kill -9, a full disk) has lost
nothing and goes on from where it stopped when run again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import sqlalchemy as sa
from sqlmodel import Session

from mailsupport.config import Settings
from mailsupport.errors import TemporaryError
from mailsupport.locks import exclusive
from mailsupport.store.blobs import BLOBS, BlobStore
from mailsupport.store.db import Store
from mailsupport.store.files import AttachmentDamaged, AttachmentMissing, AttachmentStore
from mailsupport.store.models import Attachment

log = logging.getLogger(__name__)

FILES, DATABASE = "files", "database"
PLACES = (FILES, DATABASE)
MOVE_LOCK = "attachments:move"
PAGE = 500  # digests listed at a time by a move

# What a move did with one content.
COPIED, PRESENT, DAMAGED, GONE = "copied", "present", "damaged", "gone"


class Place(Protocol):
    """One place attachment contents are kept. Each method takes the connection of the
    caller's transaction (the files place has no use for it)."""

    name: str

    def put(self, session: Session, data: bytes) -> str: ...
    def size_of(self, connection: sa.Connection, sha256: str) -> int | None: ...
    def chunks(self, connection: sa.Connection, sha256: str) -> Iterator[bytes]: ...
    def copy_in(
        self, connection: sa.Connection, sha256: str, size: int, chunks: Iterable[bytes]
    ) -> int: ...
    def remove(self, connection: sa.Connection, sha256: str) -> None: ...
    def digest_page(self, connection: sa.Connection, after: str, limit: int) -> list[str]: ...


def place_for(settings: Settings) -> str:
    """Where new attachments go: MAILSUPPORT_ATTACHMENTS, "auto" being the database on
    PostgreSQL (every host reaches it) and files on SQLite (one host, and a smaller file)."""
    if settings.attachments != "auto":
        return settings.attachments
    return DATABASE if settings.db_url.startswith("postgresql") else FILES


class Attachments:
    """The desk's attachment contents: new ones go `home`; reading falls back to `other`."""

    def __init__(self, home: Place, other: Place) -> None:
        self.home = home
        self.other = other

    @property
    def where(self) -> str:
        return self.home.name

    def put(self, session: Session, data: bytes) -> str:
        """Store `data` (once: by its sha256) in the caller's transaction; its sha256."""
        return self.home.put(session, data)

    def chunks(self, connection: sa.Connection, sha256: str) -> Iterator[bytes]:
        """The content, a piece at a time, from wherever it is. AttachmentMissing when it
        is in neither place; AttachmentDamaged, part way, when a stored blob lacks pieces."""
        try:
            return self.home.chunks(connection, sha256)
        except AttachmentMissing:
            pass
        try:
            return self.other.chunks(connection, sha256)
        except AttachmentMissing:
            raise AttachmentMissing(
                f"attachment {sha256} is stored neither as a file nor in the database"
            ) from None

    @contextmanager
    def reading(self, store: Store) -> Iterator[Callable[[str], Iterator[bytes]]]:
        """A reader of contents by sha256, on one database connection for as long as the
        block lasts (a content is read through the connection it was opened on)."""
        with store.translated(), store.engine.connect() as connection:
            yield lambda sha256: self.chunks(connection, sha256)


def parse_files(settings: Settings) -> AttachmentStore | None:
    """Where parse workers store each parsed message's attachments as they parse it, so
    that the process filing it does not hash, write and fsync them (store_message finds them
    there): the files place, when new contents go there. None for the database, which only
    the filing transaction writes."""
    return None if place_for(settings) == DATABASE else files_place(settings)


def files_place(settings: Settings) -> AttachmentStore:
    """The files place of the desk: DATA_DIR/attachments."""
    return AttachmentStore(settings.data_dir / "attachments")


def attachment_store(settings: Settings) -> Attachments:
    """The attachment store `settings` ask for (see place_for)."""
    files, blobs = files_place(settings), BlobStore()
    if place_for(settings) == DATABASE:
        return Attachments(blobs, files)
    return Attachments(files, blobs)


@dataclass
class Moved:
    """What a move did."""

    to: str
    copied: int = 0
    bytes: int = 0
    present: int = 0  # at the destination already (an earlier run, or stored there)
    removed: int = 0  # from where they came, with delete_source
    damaged: list[str] = field(default_factory=list)  # content not what its name says: left
    missing: list[str] = field(default_factory=list)  # referenced, but stored in neither place


def move(
    settings: Settings,
    store: Store,
    to: str,
    *,
    delete_source: bool = False,
    each: Callable[[str, str], None] | None = None,
) -> Moved:
    """Copy every stored content to the place `to` ("files" or "database"), and remove it
    from the other place when `delete_source`. `each(sha256, what)` is told of every step
    (COPIED, PRESENT, DAMAGED or GONE) once it is done. One move runs at a time."""
    if to not in PLACES:
        raise ValueError(f"no such place for attachments: {to!r}")
    files, blobs = files_place(settings), BlobStore()
    target, source = (blobs, files) if to == DATABASE else (files, blobs)
    moved = Moved(to)
    with exclusive(store, MOVE_LOCK, settings.data_dir / "locks") as held:
        if not held:
            raise TemporaryError(
                "another move of attachments is running: wait for it to end and run this again"
            )
        after = ""
        while page := _listed(store, source, after):
            for digest in page:
                what = _move_one(store, source, target, digest, moved)
                if delete_source and what in (COPIED, PRESENT):
                    with _connection(store, source) as connection:
                        source.remove(connection, digest)
                    moved.removed += 1
                if each is not None:
                    each(digest, what)
            after = page[-1]
        moved.missing = nowhere(store, files)
    return moved


def _move_one(store: Store, source: Place, target: Place, digest: str, moved: Moved) -> str:
    """Copy one content unless the target has it; COPIED, PRESENT, DAMAGED or GONE."""
    try:
        # One transaction: the database side is written whole or not at all.
        with _connection(store, target) as connection:
            if target.size_of(connection, digest) is not None:
                moved.present += 1
                return PRESENT
            size = source.size_of(connection, digest)
            if size is None:
                return GONE  # removed meanwhile (by `spam --purge`, say): nothing to move
            written = target.copy_in(connection, digest, size, source.chunks(connection, digest))
    except AttachmentMissing:
        return GONE
    except AttachmentDamaged as error:
        log.warning("%s; left where it is", error)
        moved.damaged.append(digest)
        return DAMAGED
    moved.copied += 1
    moved.bytes += written
    log.info("attachment %s: %d bytes copied to the %s", digest, written, target.name)
    return COPIED


@contextmanager
def _connection(store: Store, writing_to: Place) -> Iterator[sa.Connection]:
    """A connection in a transaction: a writer's when `writing_to` is the database."""
    with store.write() if writing_to.name == DATABASE else store.read() as session:
        yield session.connection()


def _listed(store: Store, place: Place, after: str) -> list[str]:
    with store.read() as session:
        return place.digest_page(session.connection(), after, PAGE)


def nowhere(store: Store, files: AttachmentStore) -> list[str]:
    """Digests that attachments refer to but neither place holds."""
    missing: list[str] = []
    after = ""
    while True:
        with store.read() as session:
            values = {"after": after, "limit": PAGE}
            page = list(session.connection().execute(_not_in_database(), values).scalars())
        missing += [digest for digest in page if files.size_of(None, digest) is None]
        if len(page) < PAGE:
            return missing
        after = page[-1]


@functools.cache
def _not_in_database() -> sa.Select[tuple[str]]:
    parts = Attachment.__table__  # type: ignore[attr-defined]
    stored = sa.select(BLOBS.c.sha256).where(BLOBS.c.sha256 == parts.c.sha256)
    return (
        sa.select(parts.c.sha256)
        .where(parts.c.sha256 > sa.bindparam("after"), ~stored.exists())
        .group_by(parts.c.sha256)
        .order_by(parts.c.sha256)
        .limit(sa.bindparam("limit"))
    )
