"""Daemons in tests: `mailsupport daemon` as a process (the `daemons` fixture), a Daemon in a
thread, and waiting for what they do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailsupport.daemon import Daemon
from tests.support.paths import ROOT

WAIT = 10.0  # the longest any single expectation may take


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


class DaemonProcess:
    """`python -m mailsupport daemon` with its stderr in a file."""

    def __init__(self, env: dict[str, str], cwd: Path, name: str) -> None:
        self.log_path = cwd / f"{name}.log"
        with open(self.log_path, "wb") as output:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailsupport", "daemon"],
                # The checkout under test, not whatever copy is installed.
                env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, count: int = 1, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.count(text) >= count:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"daemon did not log {text!r} (x{count}) within {timeout:.0f} s "
            f"(exit {self.proc.poll()}); its log:\n{self.log}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], DaemonProcess]]:
    """Starts daemons; every one is killed when the test ends, whatever happened."""
    started: list[DaemonProcess] = []

    def start(env: dict[str, str]) -> DaemonProcess:
        started.append(DaemonProcess(env, tmp_path, f"daemon{len(started) + 1}"))
        return started[-1]

    try:
        yield start
    finally:
        for process in started:
            process.kill()


class DaemonThread:
    """A Daemon running in a thread; stopped (and joined) by the `with` block's end."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as error:  # reported by __exit__
            self.error = error

    def __enter__(self) -> DaemonThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.request_stop("test over")
        self.thread.join(timeout=WAIT)
        assert not self.thread.is_alive(), "the daemon did not stop"
        if self.error is not None and exc[0] is None:
            raise self.error
