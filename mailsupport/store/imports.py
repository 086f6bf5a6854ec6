"""What `import` remembers between runs: how far it got in each mbox file, and which
messages' bytes are stored already (mailsupport/imports.py decides with them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailsupport.store.db import Store
from mailsupport.store.models import ImportFile, QuarantineEntry, RawMessage

# Digests per lookup: well under SQLite's 32,766 bound parameters, few round trips.
DIGESTS_PER_QUERY = 500


def progress(store: Store, paths: Iterable[str]) -> dict[str, ImportFile]:
    """The recorded progress of these files (absolute paths), by path; detached rows."""
    wanted = list(paths)
    if not wanted:
        return {}
    with store.read() as session:
        rows = session.exec(select(ImportFile).where(col(ImportFile.path).in_(wanted))).all()
        return {row.path: row for row in rows}


def record(
    session: Session, path: str, offset: int, messages: int, checksum: str, now: datetime
) -> None:
    """In the transaction of the batch that took the file's messages up to `offset`."""
    row = session.get(ImportFile, path)
    if row is None:
        row = ImportFile(path=path, byte_offset=0, messages=0, checksum="", updated_at=now)
    row.byte_offset, row.messages, row.checksum, row.updated_at = offset, messages, checksum, now
    session.add(row)


def stored_digests(store: Store, digests: list[str]) -> set[str]:
    """Which of these sha256 digests are raw bytes the desk stores and does not hold in the
    quarantine: processing those bytes again would change nothing (the message is stored,
    or was a duplicate of one that is), so a re-run need not parse them. Quarantined bytes
    are left to the pipeline, which files them if they can be filed now."""
    raws = RawMessage.__table__  # type: ignore[attr-defined]
    held = QuarantineEntry.__table__  # type: ignore[attr-defined]
    found: set[str] = set()
    with store.read() as session:
        for start in range(0, len(digests), DIGESTS_PER_QUERY):
            chunk = digests[start : start + DIGESTS_PER_QUERY]
            query = sa.select(raws.c.sha256).where(
                raws.c.sha256.in_(chunk),
                ~sa.exists().where(held.c.raw_id == raws.c.id),
            )
            found.update(session.connection().execute(query).scalars())
    return found
