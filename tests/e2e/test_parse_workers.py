"""Parsing in worker processes: the same results as parsing in place, in order, and a time
limit that quarantines a stalling message while the mail behind it goes on.

A stalling or crashing parse is made by replacing `mailsupport.parsing.workers.parse`
before the workers start: they are forked, so they run the replacement.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from mailsupport.cli import app
from mailsupport.config import Settings
from mailsupport.mail import Inbound
from mailsupport.parsing import parse
from mailsupport.parsing import workers as parsers
from mailsupport.parsing.workers import (
    Parsed,
    ParseFailure,
    ParserPool,
    parse_safely,
    with_stems,
)
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.store.db import Store
from mailsupport.store.models import Message, QuarantineEntry
from tests.support.mailfactory import make_message
from tests.support.paths import FIXTURES
from tests.support.processes import python_process

STALL = b"X-Test-Stall: yes"
CRASH = b"X-Test-Crash: yes"
SLOW = b"X-Test-Slow: yes"


def fixtures() -> list[bytes]:
    return [path.read_bytes() for path in sorted((FIXTURES / "mail").rglob("*.eml"))]


def troublesome_parse(raw: bytes) -> Inbound:
    """parse(), except that it hangs on STALL, kills its process on CRASH and takes
    0.4 s on SLOW."""
    if SLOW in raw:
        time.sleep(0.4)
    if STALL in raw:
        time.sleep(3600)
    if CRASH in raw:
        os.kill(os.getpid(), signal.SIGKILL)
    return parse(raw)


@pytest.fixture
def trouble(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsers, "parse", troublesome_parse)


@pytest.fixture
def pool() -> Iterator[ParserPool]:
    with ParserPool(2, timeout=1.0) as pool:
        yield pool


def with_header(header: bytes, message_id: str) -> bytes:
    return header + b"\r\n" + make_message(message_id)


def test_workers_give_the_same_results_as_parsing_here_in_the_same_order(
    pool: ParserPool,
) -> None:
    raws = fixtures() * 3
    results = list(pool.parse_all(enumerate(raws), lambda pair: pair[1]))
    assert [i for (i, _), _ in results] == list(range(len(raws)))
    # The same parse, with the search stems the worker computes beside it.
    assert [parsed for _, parsed in results] == [with_stems(parse_safely(raw)) for raw in raws]
    assert len(pool._workers) == 2


def test_the_stems_a_worker_computes_are_those_the_stored_row_would_get(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    """A message filed with its parse from a worker and the same message filed with a parse
    made here (its stems then come from the column defaults) get the same index terms."""
    raws = [raw for raw in fixtures() if not isinstance(parse_safely(raw), ParseFailure)]
    here = Store.open(f"sqlite:///{tmp_path / 'here' / 'mailsupport.db'}")
    now = datetime.now(UTC)
    with Pipeline(settings, store) as pipeline, store.write() as a, here.write() as b:
        items = [Incoming(raw, f"t#{i}") for i, raw in enumerate(raws)]
        for item, parsed in pipeline.parse_all(items):
            assert parsed is not None and parsed.stems is not None
            pipeline.process(a, item, now, parsed)
            pipeline.process(b, item, now, parse_safely(item.raw))
    columns = (Message.message_id, Message.subject_stems, Message.text_stems)
    with store.read() as a, here.read() as b:
        stored = sorted(a.exec(select(*columns)).all())
        assert stored == sorted(b.exec(select(*columns)).all())
    assert sum(bool(row[2]) for row in stored) > len(raws) // 2
    here.engine.dispose()


def test_items_without_bytes_are_passed_through_unparsed(pool: ParserPool) -> None:
    raws = [make_message("a@x.example"), b"", make_message("b@x.example")]
    results = list(pool.parse_all(raws, lambda raw: raw or None))
    assert results[1] == (b"", None)
    assert isinstance(results[0][1], Inbound) and results[0][1].message_id == "a@x.example"
    assert isinstance(results[2][1], Inbound) and results[2][1].message_id == "b@x.example"


@pytest.mark.slow
def test_a_stalling_message_is_stopped_at_the_limit_and_the_rest_goes_on(
    trouble: None, pool: ParserPool
) -> None:
    raws = [
        make_message("before@x.example"),
        with_header(STALL, "stall@x.example"),
        *(make_message(f"after{i}@x.example") for i in range(5)),
    ]
    started = time.monotonic()
    results = [parsed for _, parsed in pool.parse_all(raws, lambda raw: raw)]
    assert time.monotonic() - started < 20  # the limit is 1 s; the stall would be an hour
    assert isinstance(results[1], ParseFailure)
    assert "longer than 1 s" in results[1].detail
    assert "MAILSUPPORT_PARSE_TIMEOUT" in results[1].detail
    ids = [r.message_id for r in results if isinstance(r, Inbound)]
    assert ids == ["before@x.example", *(f"after{i}@x.example" for i in range(5))]
    # The stalled worker was replaced: the pool still works at full size.
    again = list(pool.parse_all([make_message("later@x.example")], lambda raw: raw))
    assert isinstance(again[0][1], Inbound)
    assert all(worker.process.is_alive() for worker in pool._workers)


def test_a_parser_process_that_dies_costs_only_its_message(trouble: None, pool: ParserPool) -> None:
    raws = [make_message("one@x.example"), with_header(CRASH, "crash@x.example")]
    raws.append(make_message("two@x.example"))
    results = [parsed for _, parsed in pool.parse_all(raws, lambda raw: raw)]
    assert isinstance(results[1], ParseFailure)
    assert "parser process died" in results[1].detail and "SIGKILL" in results[1].detail
    assert [isinstance(r, Inbound) for r in results] == [True, False, True]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipes widen on Linux")
def test_handing_a_large_message_over_does_not_wait_for_the_worker_to_read_it(
    pool: ParserPool,
) -> None:
    """The caller goes on storing the message before while the worker takes the next one's
    bytes: a worker that cannot read yet (stopped here) does not hold the caller up."""
    raw = make_message("big@x.example", body=("y" * 70 + "\n") * 12_000)  # 850 KB
    assert 500_000 < len(raw) < parsers.PIPE_BYTES
    worker = pool._idle()  # (starts one)
    job = parsers._Job(raw, raw)
    os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        handing = threading.Thread(target=pool._hand_over, args=(worker, job))
        handing.start()
        handing.join(timeout=10)
        assert not handing.is_alive()  # a socket pair's 200 KB would have blocked it
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    while not job.done:
        pool._collect(block=True)
    assert isinstance(job.result, Inbound) and job.result.message_id == "big@x.example"


def results_of(pool: ParserPool, raws: list[bytes], limit: float = 30) -> list[Parsed | None]:
    """pool.parse_all() of `raws` in a thread: a pool that wedges fails the test, not the run."""
    results: list[Parsed | None] = []
    thread = threading.Thread(
        target=lambda: results.extend(p for _, p in pool.parse_all(raws, lambda raw: raw)),
        daemon=True,
    )
    thread.start()
    thread.join(timeout=limit)
    assert not thread.is_alive(), "the pool wedged"
    return results


def ids_of(results: list[Parsed | None]) -> list[str]:
    return [r.message_id if isinstance(r, Inbound) else "-" for r in results]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipes widen on Linux")
def test_a_busy_worker_is_handed_the_next_messages_without_waiting_for_it() -> None:
    """A worker holds up to AHEAD messages: it finds the next in its pipe when it is done
    with one, and handing them over does not wait for it (stopped here)."""
    raws = [make_message(f"m{i}@x.example") for i in range(parsers.AHEAD + 1)]
    with ParserPool(1, timeout=10.0) as pool:
        worker = pool._idle()
        os.kill(worker.process.pid, signal.SIGSTOP)
        try:
            jobs = [parsers._Job(raw, raw) for raw in raws]
            for job in jobs[: parsers.AHEAD]:
                assert pool._with_room(len(raws[0])) is worker
                handing = threading.Thread(target=pool._hand_over, args=(worker, job))
                handing.start()
                handing.join(timeout=10)
                assert not handing.is_alive()
            assert pool._with_room(len(raws[0])) is None  # AHEAD is the most
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)
        while not all(job.done for job in jobs[: parsers.AHEAD]):
            pool._collect(block=True)
        assert ids_of([job.result for job in jobs[: parsers.AHEAD]]) == [
            f"m{i}@x.example" for i in range(parsers.AHEAD)
        ]


def _unread_bytes(pipe: Connection) -> int:
    import fcntl
    import termios

    count = bytearray(4)
    fcntl.ioctl(pipe.fileno(), termios.FIONREAD, count)
    return int.from_bytes(count, sys.byteorder)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipes widen on Linux")
def test_a_worker_parses_all_it_holds_while_the_caller_reads_no_answers() -> None:
    """Intake takes a window's parses, then files them without reading more: meanwhile each
    worker parses every message it holds, its answers waiting in its pipe (many times what a
    pipe left as it is holds), so the next window's parses are ready when they are asked for."""
    body = ("Das Konto wurde zweimal belastet, bitte prüfen. " * 40 + "\n") * 4  # 8 KB
    raws = [make_message(f"m{i}@x.example", body=body) for i in range(parsers.AHEAD)]
    with ParserPool(1, timeout=10.0) as pool:
        worker = pool._idle()
        jobs = [parsers._Job(raw, raw) for raw in raws]
        for job in jobs:
            assert pool._with_room(len(job.raw or b"")) is worker
            pool._hand_over(worker, job)
        deadline = time.monotonic() + 20
        while _unread_bytes(worker.requests) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _unread_bytes(worker.requests) == 0  # it took the last: all before answered
        assert _unread_bytes(worker.results) > 65536
        while not all(job.done for job in jobs):
            pool._collect(block=True)
    assert ids_of([job.result for job in jobs]) == [f"m{i}@x.example" for i in range(len(raws))]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipes widen on Linux")
def test_large_messages_are_handed_to_a_busy_worker_only_as_its_pipe_holds_them() -> None:
    """A busy worker may be blocked writing a large result the caller has not read; were
    the caller then blocked writing a message into the worker's full pipe, each would wait
    for the other for ever. What a worker has not answered always fits in its pipe."""
    body = ("y" * 70 + "\n") * 12_000  # 850 KB: one fits in the pipe, two do not
    raws = [make_message(f"big{i}@x.example", body=body) for i in range(6)]
    with ParserPool(1, timeout=30.0) as pool:
        worker = pool._idle()
        pool._hand_over(worker, parsers._Job(raws[0], raws[0]))
        assert pool._with_room(len(raws[1])) is None
        assert pool._with_room(1000) is worker  # a small one still fits beside it
        while worker.jobs:
            pool._collect(block=True)
        assert ids_of(results_of(pool, raws)) == [f"big{i}@x.example" for i in range(6)]


def test_messages_waiting_behind_one_that_kills_its_worker_are_parsed_by_the_next(
    trouble: None,
) -> None:
    raws = [make_message("one@x.example"), with_header(CRASH, "crash@x.example")]
    raws += [make_message(f"after{i}@x.example") for i in range(parsers.AHEAD + 2)]
    with ParserPool(1, timeout=10.0) as pool:
        results = results_of(pool, raws)
    assert isinstance(results[1], ParseFailure) and "SIGKILL" in results[1].detail
    assert ids_of(results) == [
        "one@x.example", "-", *(f"after{i}@x.example" for i in range(parsers.AHEAD + 2))
    ]  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipes widen on Linux")
def test_messages_handed_on_to_a_replacement_wait_for_room_in_its_pipe(
    trouble: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The messages behind one that killed its worker fitted that worker's pipe. The
    replacement's may hold less (the kernel stops widening pipes once the user's quota is
    used up): they are handed over as it has room, or each process would wait on the other."""
    body = ("z" * 70 + "\n") * 3_000  # 213 KB: more than a pipe left as it is holds
    raws = [with_header(CRASH, "crash@x.example")]
    raws += [make_message(f"big{i}@x.example", body=body) for i in range(3)]
    with ParserPool(1, timeout=30.0) as pool:
        pool._idle()  # the first worker, its pipe widened
        monkeypatch.setattr(parsers, "_widen", lambda pipe: 65536)  # the next: not widened
        results = results_of(pool, raws)
    assert ids_of(results) == ["-", "big0@x.example", "big1@x.example", "big2@x.example"]


@pytest.mark.slow
def test_the_time_limit_counts_from_when_a_worker_begins_a_message(trouble: None) -> None:
    """Messages wait in a worker's pipe behind others: only the time it spends on each one
    counts against the limit, or a queue of slow but honest messages would be stopped."""
    slow = min(parsers.AHEAD, 4)  # all handed over at once, each begun after the others
    raws = [with_header(SLOW, f"slow{i}@x.example") for i in range(slow)]
    raws.append(with_header(STALL, "stall@x.example"))
    with ParserPool(1, timeout=1.0) as pool:
        results = results_of(pool, raws)
    # Each takes 0.4 s, the last ones begun more than a second after they were handed over.
    expected = [f"slow{i}@x.example" for i in range(slow)]
    assert ids_of(results) == [*expected, "-"]
    assert isinstance(results[-1], ParseFailure) and "longer than 1 s" in results[-1].detail


def test_a_caller_that_stops_early_leaves_the_pool_usable(pool: ParserPool) -> None:
    raws = [make_message(f"m{i}@x.example") for i in range(10)]
    results = pool.parse_all(raws, lambda raw: raw)
    next(results)
    results.close()  # some still in flight
    assert all(not worker.jobs for worker in pool._workers)
    again = [p for _, p in pool.parse_all(raws[:3], lambda raw: raw)]
    assert [p.message_id for p in again if isinstance(p, Inbound)] == [
        "m0@x.example",
        "m1@x.example",
        "m2@x.example",
    ]


def test_closing_the_pool_ends_its_processes() -> None:
    pool = ParserPool(2, timeout=5)
    list(pool.parse_all(fixtures()[:4], lambda raw: raw))
    processes = [worker.process for worker in pool._workers]
    assert len(processes) == 2 and all(p.is_alive() for p in processes)
    pool.close()
    assert not any(p.is_alive() for p in processes)


def test_zero_workers_parse_in_this_process(trouble: None) -> None:
    with ParserPool(0, timeout=1) as pool:
        results = list(pool.parse_all([make_message("here@x.example")], lambda raw: raw))
        assert isinstance(results[0][1], Inbound)
        assert pool._workers == []


@pytest.mark.slow
def test_the_pipeline_quarantines_a_stalling_message_and_files_the_rest(
    trouble: None, settings: Settings, store: Store
) -> None:
    limited = settings.model_copy(update={"parse_timeout": 1.0, "parse_workers": 2})
    items = [
        Incoming(make_message("q1@customer.example.org"), "test#1"),
        Incoming(with_header(STALL, "stall@customer.example.org"), "test#2"),
        Incoming(make_message("q3@customer.example.org"), "test#3"),
    ]
    with Pipeline(limited, store) as pipeline:
        counts = pipeline.run(items, lambda: datetime.now(UTC))
    assert counts["new"] == 2 and counts["quarantined"] == 1
    with store.read() as session:
        stored = set(session.exec(select(Message.message_id)).all())
        entries = session.exec(select(QuarantineEntry)).all()
    assert stored == {"q1@customer.example.org", "q3@customer.example.org"}
    assert [e.origin for e in entries] == ["test#2"]
    assert "longer than 1 s" in entries[0].error


@pytest.mark.slow
def test_import_and_retry_honour_the_time_limit(
    trouble: None,
    env_for_cli: dict[str, str],
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "1.eml").write_bytes(make_message("first@customer.example.org"))
    (folder / "2.eml").write_bytes(with_header(STALL, "stall@customer.example.org"))
    (folder / "3.eml").write_bytes(make_message("third@customer.example.org"))
    env = {**env_for_cli, "MAILSUPPORT_PARSE_TIMEOUT": "1"}
    runner = CliRunner()
    result = runner.invoke(app, ["import", str(folder)], env=env)
    assert result.exit_code == 0, result.output
    assert "new tickets 2" in result.output and "quarantined 1" in result.output
    # Retrying under the same limit quarantines it again (and says why) ...
    result = runner.invoke(app, ["quarantine", "retry", "--all"], env=env)
    assert result.exit_code == 1 and "longer than 1 s" in result.output
    # ... and once parsing is quick again, the retry files it.
    monkeypatch.setattr(parsers, "parse", parse)
    result = runner.invoke(app, ["quarantine", "retry", "--all"], env=env)
    assert result.exit_code == 0, result.output
    with store.read() as session:
        assert "stall@customer.example.org" in set(session.exec(select(Message.message_id)))


@pytest.mark.slow
def test_workers_die_with_their_parent_even_in_the_middle_of_a_message() -> None:
    """A poll killed with SIGKILL must not leave a parser stalling on forever."""
    script = textwrap.dedent(
        """
        import os, signal, time
        from mailsupport.parsing import workers as parsers
        from tests.e2e.test_parse_workers import STALL, troublesome_parse, with_header
        parsers.parse = troublesome_parse
        pool = parsers.ParserPool(2, timeout=3600)
        raw = with_header(STALL, "s@x.example")
        for _ in range(2):  # each worker gets a message it will stall on
            pool._hand_over(pool._idle(), parsers._Job(raw, raw))  # (starts one)
        print(*[w.process.pid for w in pool._workers], flush=True)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    # Returns only when no process holds its stdout: the workers are gone too.
    done = python_process({}, "-c", script)
    pids = [int(p) for p in done.stdout.split()]
    assert done.returncode == -signal.SIGKILL and len(pids) == 2, done.stderr
    deadline = time.monotonic() + 5  # (they may still be on their way out)
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_workers_keep_none_of_the_parents_files(pool: ParserPool, tmp_path: Path) -> None:
    """A lock file or database connection held by a worker would outlive a dead parent."""
    with open(tmp_path / "folder.lock", "w") as lock:
        list(pool.parse_all([make_message("m@x.example")], lambda raw: raw))
        for worker in pool._workers:
            fds = Path(f"/proc/{worker.process.pid}/fd")
            targets = {os.readlink(fd) for fd in fds.iterdir() if int(fd.name) > 2}
            assert lock.name not in targets
            assert len(targets) == 2  # its ends of the two pipes
    assert len(pool._workers) == 1  # one message: the second worker was never needed


def test_a_shared_pool_serves_several_threads_one_batch_at_a_time() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from mailsupport.parsing.workers import SharedParserPool

    raws = fixtures()[:12]
    expected = [with_stems(parse_safely(raw)) for raw in raws]
    with SharedParserPool(2, timeout=10.0) as shared:
        shared.start()  # forked before the threads
        assert len(shared._workers) == 2
        pids = {worker.process.pid for worker in shared._workers}

        def caller(offset: int) -> list[object]:
            mine = raws[offset:] + raws[:offset]  # each thread its own order
            return [parsed for _, parsed in shared.parse_all(mine, lambda raw: raw)]

        with ThreadPoolExecutor(6) as threads:
            results = list(threads.map(caller, range(6)))
        assert {worker.process.pid for worker in shared._workers} == pids  # no worker lost
    for offset, got in enumerate(results):
        assert got == expected[offset:] + expected[:offset]
