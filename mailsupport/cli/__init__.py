"""Command line: `mailsupport` (console script) and `python -m mailsupport`."""

from __future__ import annotations

from mailsupport.cli import agentcmd, dbcmd, intake, mailbox, ops, outboxcmd, tickets  # noqa: F401  (registers the commands)
from mailsupport.cli.app import app


def main() -> None:
    app(prog_name="mailsupport")
