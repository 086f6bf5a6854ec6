"""Statements of intake's hot path, run on the database driver's own cursor.

SQLAlchemy spends 0.1-0.2 ms around every statement it runs (a cache key, an execution
context, result metadata) where SQLite itself takes about 0.04 ms: in a profile of intake
that overhead was a quarter of the poll process's time. The statements here are SQLAlchemy
Core statements all the same, compiled once per dialect and set of columns, and run with
the same bind processing (aware times, JSON) and the same column defaults (the search
stems), so a row written here is the row SQLAlchemy would have written. A driver's error
comes out as SQLAlchemy's (IntegrityError, OperationalError, ...), so the callers'
handling of errors does not change.

Only for statements whose results need no conversion: ids, counts, text.

On PostgreSQL every statement is a round trip. Inside `pipelined()` (intake's batched
attempt), writes whose answer nobody reads (`write`, `execute_many`) are sent without
waiting for it, in psycopg's pipeline mode; a read, a statement SQLAlchemy runs, or `sync()`
waits for the answers so far. A write's error therefore comes out there, as SQLAlchemy's
exception, and the caller's handling of it is the same as when it came out at once.

Inside `pipelined()` a row may also be held back (`hold()`: a new ticket, written once with
its final values when its message is filed, rather than inserted and then changed). Inserts
into other tables wait behind it, in order; any other statement writes it first.
"""

from __future__ import annotations

import functools
import operator
import select
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlmodel import Session

Params = Mapping[str, Any]

# Keys of session.info: the psycopg Pipeline of a pipelined() block, and whether writes of
# it wait for their answers.
_PIPELINE = "mailsupport.direct.pipeline"
_UNANSWERED = "mailsupport.direct.unanswered"
_HELD = "mailsupport.direct.held"  # the row held back (hold()) and what waits behind it
_CURSOR = "mailsupport.direct.cursor"  # (DBAPI connection, its cursor for unread statements)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    binds: dict[str, Any]  # each bind's own value, for those the caller does not give
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]  # (bind name, its processor)
    defaults: tuple[sa.Column[Any], ...]  # columns whose Python default the caller left out
    # The row as the driver takes it from the values by name: a tuple in the order of the
    # statement's "?" (SQLite), or the dict itself (psycopg's named parameters).
    ordered: Callable[[dict[str, Any]], Any]


class _DefaultContext:
    """What a column default that reads the row (the stems) is handed."""

    def __init__(self, row: dict[str, Any]) -> None:
        self._row = row

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self._row


_compiled: dict[tuple[int, str, tuple[str, ...]], tuple[sa.Executable, _Compiled]] = {}


def _compile(statement: sa.Executable, dialect: sa.Dialect, keys: tuple[str, ...]) -> _Compiled:
    cache_key = (id(statement), dialect.name, keys)
    found = _compiled.get(cache_key)
    if found is not None and found[0] is statement:
        return found[1]
    is_insert = isinstance(statement, sa.Insert)
    compiled: Any = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=list(keys) if is_insert else None
    )
    if "POSTCOMPILE" in compiled.string:  # a list in IN (...): see in_values
        raise ValueError(f"a statement with an expanding IN cannot run directly: {statement}")
    prefetch = tuple(compiled.insert_prefetch) + tuple(compiled.update_prefetch)
    result = _Compiled(
        sql=compiled.string,
        binds={n: b.value for b, n in compiled.bind_names.items() if n not in keys},
        processors=tuple(compiled._bind_processors.items()),
        defaults=tuple(c for c in prefetch if c.key not in keys and c.default is not None),
        ordered=_in_order(tuple(compiled.positiontup)) if compiled.positional else _as_named,
    )
    _compiled[cache_key] = (statement, result)  # the statement kept: its id stays its own
    return result


def _in_order(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The values of `names`, in that order, as a tuple (itemgetter: one C call a row)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    return lambda values: tuple(values[name] for name in names)


def _as_named(values: dict[str, Any]) -> dict[str, Any]:
    return values


def _row(compiled: _Compiled, params: Params) -> Any:
    values = {**compiled.binds, **params} if compiled.binds else dict(params)
    for column in compiled.defaults:
        default: Any = column.default
        value = default.arg(_DefaultContext(values)) if default.is_callable else default.arg
        values[column.key] = value
    for name, process in compiled.processors:
        value = values.get(name)
        if value is not None:
            values[name] = process(value)
    return compiled.ordered(values)


def execute(
    session: Session, statement: sa.Executable, params: Params, *, unread: bool = False
) -> Any:
    """Run `statement` with `params` in the session's transaction; returns the cursor (behind
    a held row: one that runs it when the row is written, see hold()). `unread`: nobody reads
    its result, so it may run on the cursor kept for those (_cursor)."""
    held = _held_back(session, statement)
    if held is not None:
        kept = dict(params)  # (the caller's dict may change before it runs)
        return held.behind(session, lambda: _execute(session, statement, kept, unread=unread))
    return _execute(session, statement, params, unread=unread)


def _execute(
    session: Session, statement: sa.Executable, params: Params, *, unread: bool = False
) -> Any:
    connection = session.connection()
    dialect = connection.dialect
    compiled = _compile(statement, dialect, tuple(sorted(params)))
    row = _row(compiled, params)
    cursor = _cursor(session, connection, unread)
    try:
        cursor.execute(compiled.sql, row)
    except dialect.loaded_dbapi.Error as error:
        raise _wrapped(compiled.sql, row, error, dialect) from error
    return cursor


def execute_many(session: Session, statement: sa.Executable, rows: Sequence[Params]) -> None:
    """Run `statement` once for each of `rows` (all with the same keys), in one call of the
    driver: psycopg sends them all before it waits for the first answer."""
    if not rows:
        return
    held = _held_back(session, statement)
    if held is not None:
        kept = [dict(row) for row in rows]
        held.behind(session, lambda: _execute_many(session, statement, kept))
        _unanswered(session)
        return
    _execute_many(session, statement, rows)


def _execute_many(session: Session, statement: sa.Executable, rows: Sequence[Params]) -> None:
    connection = session.connection()
    dialect = connection.dialect
    compiled = _compile(statement, dialect, tuple(sorted(rows[0])))
    values = [_row(compiled, row) for row in rows]
    cursor = _cursor(session, connection, unread=True)
    try:
        cursor.executemany(compiled.sql, values)
    except dialect.loaded_dbapi.Error as error:
        raise _wrapped(compiled.sql, values, error, dialect) from error
    _unanswered(session)


def _cursor(session: Session, connection: sa.Connection, unread: bool) -> Any:
    """A new cursor of the session's connection, or for a statement whose result nobody
    reads, the one kept for those: psycopg builds a cursor's adapters anew, and learns each
    parameter type's dumper again, for every cursor (about 2% of the PostgreSQL poll's
    time, one cursor a statement)."""
    dbapi = connection.connection.dbapi_connection
    if not unread:
        return dbapi.cursor()  # type: ignore[union-attr]
    kept = session.info.get(_CURSOR)
    if kept is None or kept[0] is not dbapi:  # the session's first, or a new connection
        kept = session.info[_CURSOR] = (dbapi, dbapi.cursor())  # type: ignore[union-attr]
    return kept[1]


def write(session: Session, statement: sa.Executable, params: Params) -> None:
    """Run a statement whose answer nobody reads; in pipelined(), without waiting for it."""
    execute(session, statement, params, unread=True)  # (the kept cursor: never closed)
    _unanswered(session)


class Later:
    """The first column of a statement's first row, or None, read when asked for (get()).
    In pipelined() the statement goes out without waiting for its answer, which arrives
    with the next read's (the server answers in order), so a value needed a little later
    costs no round trip of its own. Elsewhere it is read at once."""

    __slots__ = ("_cursor", "_session", "_statement", "_value")

    def __init__(self, session: Session, statement: sa.Executable, cursor: Any) -> None:
        self._session, self._statement = session, statement
        self._cursor: Any = cursor
        self._value: Any = None
        if _PIPELINE not in session.info:
            self.get()

    @classmethod
    def known(cls, value: Any) -> Later:
        """One whose value is known already (an id drawn ahead: store.window)."""
        later = cls.__new__(cls)
        later._session = later._statement = later._cursor = None  # type: ignore[assignment]
        later._value = value
        return later

    def get(self) -> Any:
        if self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            try:
                row = cursor.fetchone()
            except Exception as error:  # pipelined: this or an earlier write's error
                raise _driver_error(self._session, self._statement, error) from error
            finally:
                cursor.close()
            self._value = row[0] if row else None
        return self._value


def sent(session: Session, statement: sa.Executable, params: Params) -> Any:
    """Run a statement whose rows are read later from the cursor it returns; in
    pipelined(), without waiting for its answer."""
    cursor = execute(session, statement, params)
    _unanswered(session)
    return cursor


def fetched(
    session: Session, cursor: Any, statement: sa.Executable | None = None, *, one: bool = False
) -> list[tuple[Any, ...]]:
    """The rows on `cursor` (only the first when `one`), of `statement` or one sent(). In
    pipelined(), an earlier write's error comes out here, as SQLAlchemy's exception."""
    try:
        found = cursor.fetchmany(1) if one else cursor.fetchall()
    except Exception as error:
        what = statement if statement is not None else sa.text("(pipelined statements)")
        raise _driver_error(session, what, error) from error
    finally:
        cursor.close()
    session.info.pop(_UNANSWERED, None)  # every answer before this one has come
    return [tuple(row) for row in found]


def later(session: Session, statement: sa.Executable, params: Params) -> Later:
    """scalar(), its answer read when needed (see Later)."""
    cursor = execute(session, statement, params)
    _unanswered(session)
    return Later(session, statement, cursor)


def scalar(session: Session, statement: sa.Executable, params: Params) -> Any:
    """The first column of the first row, or None."""
    found = rows(session, statement, params, one=True)
    return found[0][0] if found else None


def rows(
    session: Session, statement: sa.Executable, params: Params, *, one: bool = False
) -> list[tuple[Any, ...]]:
    """The rows of a query (only the first when `one`)."""
    return fetched(session, execute(session, statement, params), statement, one=one)


def _driver_error(session: Session, statement: sa.Executable, error: Exception) -> Exception:
    dialect = session.connection().dialect
    if isinstance(error, dialect.loaded_dbapi.Error):
        return _wrapped(str(statement), None, error, dialect)
    return error


def _unanswered(session: Session) -> None:
    if _PIPELINE in session.info:
        session.info[_UNANSWERED] = True


class _Behind:
    """The cursor of a statement that waits behind a held row: run when the row is written
    (release()), or when its rows are asked for first."""

    __slots__ = ("_closed", "_cursor", "_run", "_session")

    def __init__(self, session: Session, run: Callable[[], Any]) -> None:
        self._session, self._run = session, run
        self._cursor: Any = None
        self._closed = False

    def run(self) -> None:
        self._cursor = self._run()
        if self._closed and self._cursor is not None:
            self._cursor.close()

    def _ran(self) -> Any:
        if self._cursor is None:
            release(self._session)
        return self._cursor

    def fetchone(self) -> Any:
        return self._ran().fetchone()

    def fetchmany(self, size: int) -> Any:
        return self._ran().fetchmany(size)

    def fetchall(self) -> Any:
        return self._ran().fetchall()

    def close(self) -> None:
        if self._cursor is None:
            self._closed = True
        else:
            self._cursor.close()


class _Held:
    """A row held back (hold()) and the statements waiting behind it, in order."""

    __slots__ = ("behind_it", "key", "table", "write_row")

    def __init__(self, key: object, table: str, write_row: Callable[[], None]) -> None:
        self.key, self.table, self.write_row = key, table, write_row
        self.behind_it: list[_Behind] = []

    def admits(self, statement: sa.Executable) -> bool:
        """Whether `statement` may run after the held row is written: an insert into another
        table (a foreign key to the row is then satisfied when it is checked)."""
        return isinstance(statement, sa.Insert) and statement.table.name != self.table  # type: ignore[attr-defined]

    def behind(self, session: Session, run: Callable[[], Any]) -> _Behind:
        waiting = _Behind(session, run)
        self.behind_it.append(waiting)
        return waiting


def can_hold(session: Session) -> bool:
    """Whether hold() may be used: inside pipelined() on PostgreSQL."""
    return _PIPELINE in session.info


def hold(session: Session, key: object, table: str, write_row: Callable[[], None]) -> None:
    """Hold back the insert of a row of `table` that its writer completes later (`key`: what
    release() knows it by). `write_row()` writes it, when release() is called or before any
    statement that is not an insert into another table (a read, an update, whatever
    SQLAlchemy runs, the end of the block), so no statement can miss the row; inserts into
    other tables are sent after it, in the order they came. Only in pipelined()."""
    if not can_hold(session):
        raise RuntimeError("hold() outside pipelined()")
    release(session)
    session.info[_HELD] = _Held(key, table, write_row)


def _held_back(session: Session, statement: sa.Executable) -> _Held | None:
    """The held row `statement` waits behind; None when it runs now (a held row it may not
    wait behind is written first)."""
    held: _Held | None = session.info.get(_HELD)
    if held is not None and not held.admits(statement):
        release(session)
        return None
    return held


def release(session: Session, key: object = None) -> bool:
    """Write the held row, then what waits behind it; whether it was `key`'s."""
    held: _Held | None = session.info.pop(_HELD, None)
    if held is None:
        return False
    held.write_row()
    for waiting in held.behind_it:
        waiting.run()
    return key is not None and held.key is key


@contextmanager
def pipelined(session: Session) -> Iterator[None]:
    """Within, on PostgreSQL: writes are sent without waiting for their answers (see the
    module's docstring). Statements SQLAlchemy runs wait for theirs as before (the ORM reads
    the count of rows an UPDATE changed). The block ends with sync(). Elsewhere: nothing."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        yield
        return
    with connection.connection.dbapi_connection.pipeline() as pipeline:  # type: ignore[union-attr]

        def answered(*_: Any) -> None:
            _send_all(pipeline)
            pipeline.sync()  # inside SQLAlchemy's execution: an error comes out as its own
            session.info.pop(_UNANSWERED, None)

        def written(*_: Any) -> None:  # a held row before anything SQLAlchemy runs
            release(session)

        session.info[_PIPELINE] = pipeline
        sa.event.listen(connection, "after_cursor_execute", answered)
        sa.event.listen(connection, "before_cursor_execute", written)
        sa.event.listen(session, "before_flush", written)
        try:
            yield
            sync(session)
        finally:
            sa.event.remove(session, "before_flush", written)
            sa.event.remove(connection, "before_cursor_execute", written)
            sa.event.remove(connection, "after_cursor_execute", answered)
            session.info.pop(_HELD, None)
            session.info.pop(_PIPELINE, None)
            session.info.pop(_UNANSWERED, None)


def sync(session: Session) -> None:
    """In pipelined(): wait for the answers to the writes sent so far; their first error
    comes out here, as SQLAlchemy's exception. A no-op when nothing waits."""
    release(session)
    pipeline = session.info.get(_PIPELINE)
    if pipeline is None or not session.info.pop(_UNANSWERED, False):
        return
    try:
        _send_all(pipeline)
        pipeline.sync()
    except Exception as error:
        raise _driver_error(session, sa.text("(pipelined writes)"), error) from error


def _send_all(pipeline: Any) -> None:
    """Send what the connection still holds of the statements sent so far. psycopg's
    Pipeline.sync() stops sending when its queue is empty, not when the socket has taken
    everything, and then waits for answers: a statement of megabytes (a large message's
    bytes) was left half sent, with the server waiting for its rest (psycopg issue 685).
    Answers that arrive meanwhile are read into the connection, for sync() to take."""
    pgconn = pipeline.pgconn
    while pgconn.flush():  # 1: more to send
        readable, _, _ = select.select([pgconn.socket], [pgconn.socket], [])
        if readable:
            pgconn.consume_input()


def _wrapped(sql: str, params: Any, error: Exception, dialect: sa.Dialect) -> exc.DBAPIError:
    return exc.DBAPIError.instance(  # type: ignore[return-value]
        sql, params, error, dialect.loaded_dbapi.Error, dialect=dialect
    )


# Lists in IN (...) go in pieces of at most this many values (SQLite allows 32,766 variables
# in one statement), each piece padded to one of a few lengths with its own last value (IN
# takes a value twice as once): a statement is compiled and kept for every length it is
# built for, and one for each length up to 500 took 80 MiB, a slow climb in a long run.
LIST_PIECE = 500
LIST_LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256, LIST_PIECE)


def _listed(values: Sequence[Any]) -> list[dict[str, Any]]:
    """`values` as the parameters of statements built with `in_values`, piece by piece."""
    pieces = []
    for start in range(0, len(values), LIST_PIECE):
        piece = list(values[start : start + LIST_PIECE])
        length = next(n for n in LIST_LENGTHS if n >= len(piece))
        piece += [piece[-1]] * (length - len(piece))
        pieces.append({f"v{i}": value for i, value in enumerate(piece)})
    return pieces


def rows_in(
    session: Session,
    build: Callable[[int], sa.Executable],
    values: Sequence[Any],
    fixed: Params | None = None,
) -> list[tuple[Any, ...]]:
    """The rows of the statements `build(n)` makes (with `in_values` for n values) for all
    of `values`, piece by piece, each with the parameters `fixed` too."""
    found: list[tuple[Any, ...]] = []
    for piece in _listed(values):
        found += rows(session, build(len(piece)), {**piece, **(fixed or {})})
    return found


def sent_in(
    session: Session,
    build: Callable[[int], sa.Executable],
    values: Sequence[Any],
    fixed: Params | None = None,
) -> list[Any]:
    """rows_in(), sent: the cursors to read its rows from later (fetched_in)."""
    return [sent(session, build(len(p)), {**p, **(fixed or {})}) for p in _listed(values)]


def fetched_in(session: Session, cursors: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of what sent_in() sent."""
    return [row for cursor in cursors for row in fetched(session, cursor)]


def write_in(
    session: Session, build: Callable[[int], sa.Executable], values: Sequence[Any]
) -> None:
    """write() the statements `build(n)` makes (with `in_values`) for all of `values`."""
    for piece in _listed(values):
        write(session, build(len(piece)), piece)


def in_values(column: Any, count: int) -> Any:
    """`column IN (:v0, :v1, ...)` for `count` values (see rows_in)."""
    return column.in_([sa.bindparam(f"v{i}") for i in range(count)])


def set_by_id(session: Session, model: Any, row_id: int, **values: Any) -> None:
    """UPDATE the row of `model` with this id: its columns `values` (a write)."""
    statement = _update_by_id(model.__table__, tuple(sorted(values)))
    write(session, statement, {"b_id": row_id, **{f"b_{k}": v for k, v in values.items()}})


@functools.cache
def insert_ignoring(dialect: str, model: Any) -> sa.Insert:
    """INSERT ... ON CONFLICT DO NOTHING into `model`'s table for one row, built once and
    run with many: a statement built per call (its VALUES sized to the rows) was compiled
    every time."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert(model.__table__).on_conflict_do_nothing()


def set_many_by_id(
    session: Session, model: Any, changes: Sequence[tuple[int, dict[str, Any]]]
) -> None:
    """set_by_id() for each (id, values) of `changes`, all with the same columns: one call
    of the driver (execute_many)."""
    if not changes:
        return
    statement = _update_by_id(model.__table__, tuple(sorted(changes[0][1])))
    rows = [{"b_id": i, **{f"b_{k}": v for k, v in values.items()}} for i, values in changes]
    execute_many(session, statement, rows)


@functools.cache
def _update_by_id(table: sa.Table, columns: tuple[str, ...]) -> sa.Update:
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(f"b_{name}") for name in columns})
    )
