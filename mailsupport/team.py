"""Agents' names and notification modes, without the database: settings validate
MAILSUPPORT_NOTIFY with these, and the command line checks `--as` against the registry."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from mailsupport.errors import UsageError

AGENT_NAME = re.compile(r"[^\W_][\w.@+-]{0,63}")
MAX_LINE = 9
INSTANT, OFF, DIGEST = "instant", "off", "digest"
_DIGEST = re.compile(r"digest(?::\s*(\d+)\s*([mhd]?))?")
DEFAULT_DIGEST = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class NotifyMode:
    """How an agent hears about tickets: each event mailed at once, gathered into a digest
    mailed at most every `every`, or nothing."""

    kind: str  # INSTANT, DIGEST or OFF
    every: timedelta = timedelta()

    def __str__(self) -> str:
        if self.kind != DIGEST:
            return self.kind
        minutes = int(self.every.total_seconds() // 60)
        return f"digest:{minutes // 60}h" if minutes % 60 == 0 else f"digest:{minutes}m"


def parse_notify(text: str) -> NotifyMode:
    """`instant`, `off`, `digest` (every 30 minutes) or `digest:N[m|h|d]`; ValueError else."""
    value = text.strip().lower()
    if value in (INSTANT, OFF):
        return NotifyMode(value)
    match = _DIGEST.fullmatch(value)
    if match is None:
        raise ValueError(
            f"not a notification mode: {text!r} (use instant, off, or digest:30m, digest:2h)"
        )
    number, unit = match.groups()
    if number is None:
        return NotifyMode(DIGEST, DEFAULT_DIGEST)
    every = int(number) * {"m": timedelta(minutes=1), "": timedelta(minutes=1),
                           "h": timedelta(hours=1), "d": timedelta(days=1)}[unit]  # fmt: skip
    if not timedelta(minutes=1) <= every <= timedelta(days=7):
        raise ValueError(f"a digest interval must be 1 minute to 7 days, not {text!r}")
    return NotifyMode(DIGEST, every)


def check_line(line: int) -> None:
    """UsageError unless `line` is a support line (1 to MAX_LINE)."""
    if not 1 <= line <= MAX_LINE:
        raise UsageError(f"line {line} does not exist: lines are 1 to {MAX_LINE}")


def registered_name(name: str, names: Iterable[str]) -> str:
    """`name` as registered among `names` (ignoring case), when any agent is: an unknown one
    is a UsageError then. With no agent registered, any name goes."""
    names = list(names)
    wanted = " ".join(name.split())
    found = next((n for n in names if n.lower() == wanted.lower()), None)
    if found is not None or not names:
        return found or wanted
    shown = ", ".join(sorted(names)[:10]) + (", ..." if len(names) > 10 else "")
    raise UsageError(f"no agent {wanted!r} is registered (agents: {shown}; see `agent list`)")
