"""Child processes for the tests: `mailsupport` run as a user runs it, helpers that die with
pytest, and which members of a process group are still alive."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux/glibc: no parent-death signal
        return None


# Looked up here, in the parent: between fork and exec the child only makes the one call.
_PRCTL = _load_prctl() if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Runs in the child before exec: if pytest itself is SIGKILLed, the child goes with it."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


# The `preexec_fn` for a long-lived helper (a server, a forkserver); None where unsupported.
DIE_WITH_PARENT: Callable[[], None] | None = _die_with_parent if _PRCTL is not None else None


def python_process(
    env: Mapping[str, str], *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """A fresh `python ARGS` on the checkout under test, in the current directory (the
    test's own, see conftest.clean_env), with `env` added to this process's environment.
    NO_COLOR is left out unless `env` sets it: output to a pipe is plain anyway."""
    full_env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, env=full_env, timeout=60
    )


def mailsupport_process(
    env: Mapping[str, str], *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """`python -m mailsupport ARGS`, as a user at a terminal or an MTA pipe runs it."""
    return python_process(env, "-m", "mailsupport", *args, stdin=stdin)


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group `pgid` that are not zombies (Linux /proc; elsewhere: killpg probe)."""
    proc_root = Path("/proc")
    if not (proc_root / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members
