"""One poller per folder at a time: a file lock on SQLite, an advisory lock on PostgreSQL.

Both are released by the operating system or the database when the process dies."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from mailsupport.store.db import Store


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def exclusive(store: Store, name: str, lock_dir: Path) -> Iterator[bool]:
    """Try to take the lock called `name`; yields whether we hold it. Never waits."""
    if store.engine.dialect.name == "postgresql":
        with store.translated(), store.engine.connect() as conn:
            held = bool(
                conn.execute(sa.select(sa.func.pg_try_advisory_lock(lock_key(name)))).scalar()
            )
            conn.commit()
            try:
                yield held
            finally:
                if held:
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(lock_key(name))))
                    conn.commit()
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / (hashlib.sha256(name.encode()).hexdigest()[:24] + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {name}\n".encode())
        yield True
    finally:
        os.close(fd)  # closing releases the lock
