"""Attachment contents in the database (MAILSUPPORT_ATTACHMENTS=database, the default on
PostgreSQL): daemons on any number of hosts then share them through the database URL alone.

One `attachment_blobs` row per distinct content (its sha256, size and number of pieces) and
its bytes in `attachment_chunks`, CHUNK_BYTES a row. Content is written a piece at a time
and read through a cursor a piece at a time, so neither side holds a large attachment whole
beyond the bytes the parsed message already has.

Writes run in the caller's transaction: a message and its attachments commit together or
not at all, which files cannot give (a file is written at once, and stays when the message
is rolled back). The same content is stored once: the blob row goes in with ON CONFLICT DO
NOTHING, and only the writer whose row went in writes the pieces (a small content's one
piece goes in the same way, ignoring a conflict: see UNASKED_BYTES). A second writer of the
same content waits on that row until the first commits (then writes nothing) or rolls back
(then writes it itself), so two daemons racing never fail nor leave half a blob.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from mailsupport.store import direct
from mailsupport.store.files import CHUNK_BYTES, AttachmentDamaged, AttachmentMissing, check_digest
from mailsupport.store.models import AttachmentBlob, AttachmentChunk

BLOBS = AttachmentBlob.__table__  # type: ignore[attr-defined]
CHUNKS = AttachmentChunk.__table__  # type: ignore[attr-defined]
# Content up to this size is stored by two statements that ignore a conflict, sent without
# waiting for their answers (a message's other writes go the same way on PostgreSQL): asking
# first whether the blob row went in cost a round trip and the wait for every write before
# it, a tenth of a poll's time on PostgreSQL where one message in eleven has an attachment.
# Content stored already is then sent again and ignored, which larger content should not be.
UNASKED_BYTES = 256 * 1024


class BlobStore:
    """Attachment contents in the database; every method works in `connection`'s
    transaction (the caller's)."""

    name = "database"

    def put(self, session: Session, data: bytes) -> str:
        """Store `data` once and return its sha256. The pieces are views of `data`: no copy
        of the whole is made. Content of up to UNASKED_BYTES goes without waiting for an
        answer (see there)."""
        digest = hashlib.sha256(data).hexdigest()
        if len(data) <= UNASKED_BYTES:
            dialect = session.connection().dialect.name
            direct.write(session, direct.insert_ignoring(dialect, AttachmentBlob), {
                "sha256": digest, "size": len(data), "chunks": 1 if data else 0,
            })  # fmt: skip
            if data:
                piece = {"sha256": digest, "seq": 0, "data": data}
                direct.write(session, direct.insert_ignoring(dialect, AttachmentChunk), piece)
            return digest
        connection = session.connection()
        view = memoryview(data)
        pieces = (view[at : at + CHUNK_BYTES] for at in range(0, len(view), CHUNK_BYTES))
        self._write(connection, digest, len(view), pieces, verify=False)
        return digest

    def size_of(self, connection: sa.Connection, sha256: str) -> int | None:
        """The stored content's size; None when it is not here."""
        values = {"sha256": check_digest(sha256)}
        found = connection.execute(_size_of(), values).scalar()
        return None if found is None else int(found)

    def chunks(self, connection: sa.Connection, sha256: str) -> Iterator[bytes]:
        """The content, a piece at a time, through a server-side cursor on PostgreSQL. One
        statement reads the blob row and its pieces (one snapshot: a blob removed meanwhile
        is read whole or not at all). Raises AttachmentMissing at once when there is none."""
        values = {"sha256": check_digest(sha256)}
        result = connection.execute(_pieces_of(), values, execution_options={"yield_per": 1})
        rows = iter(result)
        first = next(rows, None)
        if first is None:
            result.close()
            raise AttachmentMissing(f"attachment {sha256} is not in the database")
        return _read(sha256, first, rows, result)

    def copy_in(
        self, connection: sa.Connection, sha256: str, size: int, chunks: Iterable[bytes]
    ) -> int:
        """Store `size` bytes arriving in pieces under `sha256`, checking that they are what
        the digest says: AttachmentDamaged when not, after which the caller must roll back
        (the rows written so far are in its transaction). The bytes written; 0 when the
        content was there already."""
        return self._write(connection, check_digest(sha256), size, chunks, verify=True)

    def remove(self, connection: sa.Connection, sha256: str) -> None:
        digest = check_digest(sha256)
        connection.execute(CHUNKS.delete().where(CHUNKS.c.sha256 == digest))
        connection.execute(BLOBS.delete().where(BLOBS.c.sha256 == digest))

    def digest_page(self, connection: sa.Connection, after: str, limit: int) -> list[str]:
        """Up to `limit` stored digests after `after`, in order."""
        values = {"after": after, "limit": limit}
        return list(connection.execute(_page(), values).scalars())

    def _write(
        self,
        connection: sa.Connection,
        digest: str,
        size: int,
        pieces: Iterable[bytes],
        *,
        verify: bool,
    ) -> int:
        # The blob row first: it is the one that conflicts, and it holds off a second writer.
        expected = -(-size // CHUNK_BYTES)
        row = {"sha256": digest, "size": size, "chunks": expected}
        if connection.execute(_insert_blob(connection.dialect.name), row).first() is None:
            return 0  # stored already, by us or by another writer that committed first
        total, count, check = 0, 0, hashlib.sha256()
        for count, piece in enumerate(_sized(pieces), start=1):
            connection.execute(_insert_piece(), {"sha256": digest, "seq": count - 1, "data": piece})
            total += len(piece)
            if verify:
                check.update(piece)
        if verify and (total != size or count != expected or check.hexdigest() != digest):
            raise AttachmentDamaged(
                f"attachment {digest}: its {total} bytes have sha256 {check.hexdigest()}"
            )
        return total


def _read(
    sha256: str,
    first: sa.Row[tuple[int, bytes | None]],
    rows: Iterator[Any],
    result: sa.Result[Any],
) -> Iterator[bytes]:
    expected, got = first[0], 0
    try:
        piece = first[1]
        while piece is not None:  # None: an empty attachment, a blob row and no pieces
            got += 1
            yield piece
            row = next(rows, None)
            piece = None if row is None else row[1]
    finally:
        result.close()  # also when the reader stops early: the cursor goes
    if got != expected:
        raise AttachmentDamaged(f"attachment {sha256}: {got} of its {expected} pieces are stored")


def _sized(pieces: Iterable[bytes]) -> Iterator[bytes | memoryview]:
    """The pieces re-cut to CHUNK_BYTES (a file read may come in other sizes)."""
    pending = bytearray()
    for piece in pieces:
        if not pending and len(piece) == CHUNK_BYTES:
            yield piece
            continue
        pending += piece
        while len(pending) >= CHUNK_BYTES:
            yield bytes(pending[:CHUNK_BYTES])
            del pending[:CHUNK_BYTES]
    if pending:
        yield bytes(pending)


@functools.cache
def _insert_blob(dialect: str) -> sa.Insert:
    return direct.insert_ignoring(dialect, AttachmentBlob).returning(BLOBS.c.sha256)


@functools.cache
def _insert_piece() -> sa.Insert:
    return sa.insert(CHUNKS)


@functools.cache
def _size_of() -> sa.Select[tuple[int]]:
    return sa.select(BLOBS.c.size).where(BLOBS.c.sha256 == sa.bindparam("sha256"))


@functools.cache
def _pieces_of() -> sa.Select[tuple[int, bytes | None]]:
    joined = BLOBS.outerjoin(CHUNKS, CHUNKS.c.sha256 == BLOBS.c.sha256)
    return (
        sa.select(BLOBS.c.chunks, CHUNKS.c.data)
        .select_from(joined)
        .where(BLOBS.c.sha256 == sa.bindparam("sha256"))
        .order_by(CHUNKS.c.seq)
    )


@functools.cache
def _page() -> sa.Select[tuple[str]]:
    return (
        sa.select(BLOBS.c.sha256)
        .where(BLOBS.c.sha256 > sa.bindparam("after"))
        .order_by(BLOBS.c.sha256)
        .limit(sa.bindparam("limit"))
    )
