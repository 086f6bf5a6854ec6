"""Command line: `mailsupport` (console script) and `python -m mailsupport`."""

from __future__ import annotations

from mailsupport.cli import (  # noqa: F401  (registers the commands)
    agentcmd,
    attachcmd,
    dbcmd,
    intake,
    kbcmd,
    mailbox,
    ops,
    outboxcmd,
    reportcmd,
    rulescmd,
    searchcmd,
    tickets,
)
from mailsupport.cli.app import app


def main() -> None:
    app(prog_name="mailsupport")
