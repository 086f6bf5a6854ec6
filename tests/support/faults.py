"""Tools for fault-injection tests (tests/e2e/test_faults.py): killing runs, cutting connections.

- `Forkserver`: runs `mailsupport` commands as real processes and SIGKILLs them after a
  chosen delay. One helper process imports mailsupport once and forks a child per run, so a
  run starts in milliseconds instead of the ~1 s a fresh interpreter spends importing; the
  child is an ordinary process running the ordinary CLI code, and the kill is a real
  SIGKILL from outside, at any instruction. The helper reaps its own children, so a kill
  can never hit a recycled pid.
- `CutProxy`: a TCP proxy in front of an IMAP server that, once armed, forwards a chosen
  number of the server's bytes, then calls a hook (kill the server) and cuts both sides: the
  client is left holding half a response, as when the server machine dies mid-FETCH.
- `let_time_pass`: the outbox as it would be after a long pause: leases of dead senders run
  out, retries come due.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import sqlalchemy as sa
from sqlmodel import select

from mailsupport.store.db import WRITE_LOCK, Store
from mailsupport.store.models import OutboxItem
from tests.support.paths import ROOT
from tests.support.processes import DIE_WITH_PARENT

# Everything `poll` and `outbox flush` import on the way, loaded once before any fork.
PRELOAD = (
    "mailsupport.cli",
    "mailsupport.acks",
    "mailsupport.compose",
    "mailsupport.config",
    "mailsupport.locks",
    "mailsupport.outbox.delivery",
    "mailsupport.poll",
    "mailsupport.pipeline",
    "mailsupport.sources.imap",
    "mailsupport.store.db",
    "mailsupport.store.files",
    "mailsupport.store.tickets",
    "aiosmtplib",
    "imapclient",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql",
    "psycopg",
)

# The helper: reads one JSON request per line, forks a child for it, reports the child's
# pid at once and its fate when it ends. Only the helper reaps, so the pid it kills is
# always its own child (a zombie keeps its pid until reaped).
_FORKSERVER = r"""
import importlib, json, os, random, resource, signal, sys, time, traceback

for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
from mailsupport.cli import main

def child(request):
    os.chdir(request["cwd"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.clear()
    os.environ.update(request["env"])
    random.seed()  # as a fresh interpreter would be: not the helper's state, shared by all
    if request.get("fsize") is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (request["fsize"], request["fsize"]))
    for name, value in request.get("patch", {}).items():
        module, attribute = name.rsplit(".", 1)
        setattr(importlib.import_module(module), attribute, value)
    sys.argv = ["mailsupport", *request["argv"]]
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)

def say(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()

say(ready=True)
for line in sys.stdin:
    request = json.loads(line)
    began = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            child(request)
        finally:
            os._exit(70)
    kill_after, limit = request.get("kill_after"), request["timeout"]
    killed = timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        elapsed = time.monotonic() - began
        if kill_after is not None and not killed and elapsed >= kill_after:
            os.kill(pid, signal.SIGKILL)
            killed = True
        elif elapsed >= limit and not killed:
            os.kill(pid, signal.SIGKILL)
            killed = timed_out = True
        time.sleep(0.0005)
    code = os.waitstatus_to_exitcode(status)
    say(code=code, killed=killed and code == -signal.SIGKILL, timed_out=timed_out,
        seconds=time.monotonic() - began)
"""


@dataclass(frozen=True)
class Run:
    """What became of one run."""

    code: int  # exit status; -9 when SIGKILLed
    killed: bool  # our SIGKILL ended it (not: it finished before the kill was due)
    seconds: float
    output: str  # its stdout and stderr

    def __str__(self) -> str:
        fate = "killed" if self.killed else f"exit {self.code}"
        return f"{fate} after {self.seconds:.3f} s"


class Forkserver:
    """Runs `mailsupport ARGS` in forked children of one preloaded helper process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.runs = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> Self:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the checkout under test
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _FORKSERVER, json.dumps(PRELOAD)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=self.workdir, text=True,
            preexec_fn=DIE_WITH_PARENT,
        )  # fmt: skip
        assert json.loads(self._reply()) == {"ready": True}
        return self

    def run(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        *,
        kill_after: float | None = None,
        timeout: float = 60.0,
        file_size_limit: int | None = None,
        patch: dict[str, Any] | None = None,
    ) -> Run:
        """Run `mailsupport *argv` with exactly `env` (plus PYTHONPATH); SIGKILL it after
        `kill_after` seconds if still running. `file_size_limit` sets RLIMIT_FSIZE in the
        child; `patch` sets module attributes there ("package.module.NAME": value)."""
        assert self._proc is not None and self._proc.stdin is not None, "not started"
        self.runs += 1
        log = self.workdir / f"run-{self.runs}.log"
        request = {
            "argv": list(argv),
            "env": {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", ""), **env},
            "cwd": str(self.workdir),
            "log": str(log),
            "kill_after": kill_after,
            "timeout": timeout,
            "fsize": file_size_limit,
            "patch": patch or {},
        }
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        result = json.loads(self._reply(timeout + 30))
        if result["timed_out"]:
            raise AssertionError(f"mailsupport {' '.join(argv)} hung for {timeout} s")
        output = log.read_text(errors="replace") if log.exists() else ""
        return Run(result["code"], result["killed"], result["seconds"], output)

    def _reply(self, timeout: float = 60.0) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        stdout: IO[str] = self._proc.stdout
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready or not ready[0]:
            raise AssertionError(f"the fork server did not answer (exit {self._proc.poll()})")
        return ready[0]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()  # the helper's loop ends at EOF
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Pace:
    """When to kill a run: it spends about `startup` seconds before it touches any mail,
    then `take` seconds per message taken and `send` seconds per message sent (measured by
    the caller on runs that were not killed). `draw` picks one of the three spans at random,
    then a moment in it, so kills spread over whole runs instead of piling up in the longest
    phase. `learn` scales all three by how long finished runs really took, as the machine's
    load and the backlog left by killed runs change."""

    def __init__(self, startup: float, take: float, send: float) -> None:
        self.startup, self.take, self.send = startup, take, send
        self.scale = 1.0

    def predict(self, to_take: int, to_send: int) -> float:
        return self.scale * (self.startup + self.take * to_take + self.send * to_send)

    def draw(
        self,
        rng: random.Random,
        to_take: int,
        to_send: int,
        weights: dict[str, float] | None = None,
    ) -> tuple[float, str]:
        """A moment to kill at, and the span it was aimed at ("start-up", "intake" or
        "delivery", chosen with `weights`, equal by default)."""
        start = self.scale * self.startup
        intake_end = start + self.scale * self.take * to_take
        spans = {
            "start-up": (0.0, start),
            "intake": (start, intake_end),
            "delivery": (intake_end, self.predict(to_take, to_send)),
        }
        names = [name for name, (low, high) in spans.items() if high > low]
        [aim] = rng.choices(names, [(weights or {}).get(name, 1.0) for name in names])
        low, high = spans[aim]
        return rng.uniform(low, high), aim

    def learn(self, run: Run, to_take: int, to_send: int) -> None:
        if not run.killed and run.code == 0:
            ratio = run.seconds / self.predict(to_take, to_send) * self.scale
            self.scale = 0.7 * self.scale + 0.3 * ratio

    def __str__(self) -> str:
        return (
            f"start-up {self.startup:.3f} s, {self.take * 1000:.0f} ms per message taken, "
            f"{self.send * 1000:.0f} ms per message sent, x{self.scale:.2f}"
        )


# ------------------------------------------------------------------------------------------
# A proxy that cuts the server's answer short
# ------------------------------------------------------------------------------------------


class CutProxy:
    """Forwards 127.0.0.1:`port` to the server at `target`. `arm(after, trigger, on_cut,
    occurrence)`: on the next connection, once the client has sent `trigger` for the
    `occurrence`-th time (at once when `trigger` is empty), let `after` more bytes of the
    server's answer through, then call `on_cut` and close both sockets. Connections after
    that one pass untouched until armed again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._armed: _Plan | None = None
        self.cut = threading.Event()
        self.mid_answer = False  # the cut fell inside the answer to the triggering command
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def arm(
        self, after: int, trigger: bytes, on_cut: Callable[[], None], occurrence: int = 1
    ) -> None:
        self.cut.clear()
        self.mid_answer = False
        self._armed = _Plan(after, trigger, on_cut, occurrence)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            plan, self._armed = self._armed, None
            _Session(self, client, server, plan).start()


@dataclass(frozen=True)
class _Plan:
    after: int  # bytes of the server's answer let through once triggered
    trigger: bytes  # what the client must send first
    on_cut: Callable[[], None]
    occurrence: int  # ... for the how-many-th time


class _Session:
    def __init__(
        self, proxy: CutProxy, client: socket.socket, server: socket.socket, plan: _Plan | None
    ) -> None:
        self.proxy, self.client, self.server, self.plan = proxy, client, server, plan
        self.triggered = threading.Event()
        self.sent = b""  # what the client said, kept only until the trigger shows
        self.tag = b""  # the IMAP tag of the triggering command
        if plan is None or not plan.trigger:
            self.triggered.set()

    def start(self) -> None:
        for target in (self._upstream, self._downstream):
            threading.Thread(target=target, daemon=True).start()

    def _upstream(self) -> None:
        while chunk := _recv(self.client):
            if self.plan is not None and not self.triggered.is_set():
                self.sent += chunk  # commands only: small
                if self.sent.count(self.plan.trigger) >= self.plan.occurrence:
                    line = self.sent[: self.sent.rindex(self.plan.trigger)].rsplit(b"\n", 1)[-1]
                    self.tag = line.split(b" ", 1)[0]
                    self.triggered.set()
            if not _send(self.server, chunk):
                break
        self._close()

    def _downstream(self) -> None:
        budget = self.plan.after if self.plan is not None else -1
        answer = b""  # the server's bytes since the trigger, up to the cut
        while chunk := _recv(self.server):
            if self.plan is not None and self.triggered.is_set():
                if len(chunk) >= budget:
                    answer += chunk[:budget]
                    _send(self.client, chunk[:budget])
                    done = answer.startswith(self.tag + b" ") or b"\n" + self.tag + b" " in answer
                    self.proxy.mid_answer = not done
                    self.plan.on_cut()  # e.g. kill the server, half an answer on the wire
                    self.proxy.cut.set()
                    break
                budget -= len(chunk)
                answer += chunk
            if not _send(self.client, chunk):
                break
        self._close()

    def _close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------------
# The outbox's clock
# ------------------------------------------------------------------------------------------


def let_time_pass(store: Store, by: timedelta = timedelta(days=1)) -> None:
    """The outbox as `by` later: claims of senders that died run out and retries come due.
    Only the times the next sender compares with its clock move; SMTP_MAX_AGE (counted from
    queued_at) is not brought nearer. Call only while no sender runs."""
    with store.write() as session:
        for item in session.exec(select(OutboxItem).where(OutboxItem.status == "queued")):
            item.next_attempt_at -= by
            if item.claimed_until is not None:
                item.claimed_until -= by
            session.add(item)


@contextlib.contextmanager
def write_lock_held(store: Store) -> Iterator[None]:
    """Another writer in the middle of its transaction: on SQLite it holds the write lock
    (BEGIN IMMEDIATE), on PostgreSQL the writers' advisory lock that stands in for it."""
    if store.engine.dialect.name == "sqlite":
        assert store.engine.url.database
        conn = sqlite3.connect(store.engine.url.database, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    with store.engine.connect() as pg:
        pg.execute(WRITE_LOCK)
        try:
            yield
        finally:
            pg.rollback()


def impatient(
    store: Store, env: dict[str, str], seconds: float
) -> tuple[dict[str, str], dict[str, Any]]:
    """The environment and patches that make a process give up waiting for the write lock
    after `seconds` (SQLite's busy timeout is 30 s; PostgreSQL waits as long as it takes
    unless told otherwise with lock_timeout)."""
    if store.engine.dialect.name == "sqlite":
        return env, {"mailsupport.store.db.SQLITE_BUSY_SECONDS": seconds}
    url = sa.engine.make_url(env["MAILSUPPORT_DATABASE_URL"])
    options = f"{url.query.get('options', '')} -clock_timeout={int(seconds * 1000)}".strip()
    url = url.update_query_dict({"options": options})
    return {**env, "MAILSUPPORT_DATABASE_URL": url.render_as_string(hide_password=False)}, {}
