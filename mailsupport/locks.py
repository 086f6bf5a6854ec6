"""One poller per folder at a time: a file lock on SQLite, an advisory lock on PostgreSQL.

Both are released by the operating system or the database when the process dies."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc

from mailsupport.config import Settings
from mailsupport.store.db import Store
from mailsupport.store.files import private_dir


def folder_lock(settings: Settings) -> tuple[str, Path]:
    """Name and file-lock directory of the lock on one IMAP folder: `poll` and `daemon` take
    the same one, so cron polls and daemons take turns."""
    name = f"imap:{settings.imap_account}/{settings.imap_folder}"
    return name, settings.data_dir / "locks"


def lock_key(name: str, schema: str = "public") -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock. Advisory locks are the
    database's, not a schema's: desks sharing a database on schemas of their own (a
    search_path in the URL) lock apart by the schema's name, while "public" keeps the keys
    it always had (a daemon of the last release and one of this lock alike)."""
    named = name if schema == "public" else f"{schema}/{name}"
    return int.from_bytes(hashlib.sha256(named.encode()).digest()[:8], "big", signed=True)


class Lock:
    """The lock called `name`, held from acquire() until release() or the process's death.

    `exclusive()` is the with-statement form for one-shot commands. The daemon holds a Lock
    for its whole life and asks `still_held()` before each pass: on PostgreSQL the lock lives
    in a database session, and a database restart ends that session (and frees the lock)
    without telling us."""

    def __init__(self, store: Store, name: str, lock_dir: Path) -> None:
        self.store = store
        self.name = name
        self.lock_dir = lock_dir
        self._conn: sa.Connection | None = None
        self._backend_pid: int | None = None
        self._key = 0  # the advisory lock's, once held
        self._fd: int | None = None

    @property
    def _postgres(self) -> bool:
        return self.store.engine.dialect.name == "postgresql"

    @property
    def held(self) -> bool:
        """Whether we took the lock and have not released it (see still_held())."""
        return self._conn is not None or self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if it is free; never waits. True when we hold it."""
        if self.held:
            return True
        return self._acquire_advisory() if self._postgres else self._acquire_file()

    def _acquire_advisory(self) -> bool:
        with self.store.translated():
            conn = self.store.lock_engine.connect()
            try:
                schema = conn.execute(sa.select(sa.func.current_schema())).scalar()
                key = lock_key(self.name, schema or "public")
                held = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar())
                pid = conn.execute(sa.select(sa.func.pg_backend_pid())).scalar()
                conn.commit()  # never sit "idle in transaction" while holding the lock
            except BaseException:
                conn.close()
                raise
        if not held:
            conn.close()
            return False
        self._conn, self._backend_pid, self._key = conn, pid, key
        return True

    def _acquire_file(self) -> bool:
        private_dir(self.lock_dir)
        path = self.lock_dir / (hashlib.sha256(self.name.encode()).hexdigest()[:24] + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.name}\n".encode())
        self._fd = fd
        return True

    def still_held(self) -> bool:
        """Whether the lock is still ours. A file lock cannot be lost; an advisory lock is lost
        with its database session, which a new backend pid (or an error) reveals."""
        if self._fd is not None:
            return True
        conn = self._conn
        if conn is None or conn.invalidated:
            return False
        try:
            pid = conn.execute(sa.select(sa.func.pg_backend_pid())).scalar()
            conn.commit()
        except (exc.SQLAlchemyError, OSError):
            return False
        return pid == self._backend_pid

    def release(self) -> None:
        """Give the lock up (a no-op when not held). Never raises."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing releases the lock
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(self._key)))
            conn.commit()
        except (exc.SQLAlchemyError, OSError):
            # Never hand a session that may still hold the lock back to the pool: closing
            # the database session for good is what frees the lock then.
            with contextlib.suppress(Exception):
                conn.invalidate()
        finally:
            with contextlib.suppress(Exception):
                conn.close()


@contextmanager
def exclusive(store: Store, name: str, lock_dir: Path) -> Iterator[bool]:
    """Try to take the lock called `name`; yields whether we hold it. Never waits."""
    lock = Lock(store, name, lock_dir)
    try:
        yield lock.acquire()
    finally:
        lock.release()
