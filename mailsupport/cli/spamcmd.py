"""`mailsupport spam`: set a ticket aside as spam, or release one (`--not`)."""

from __future__ import annotations

import typer

from mailsupport.cli.agentcmd import AGENT, AS_OPTION, NUMBER, _desk
from mailsupport.cli.app import app, state


@app.command("spam", rich_help_panel=AGENT)
def spam(
    ctx: typer.Context,
    number: int = NUMBER,
    not_spam: bool = typer.Option(
        False, "--not", help="Release the ticket: not spam, new again, with due times."
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Set a ticket aside as spam, or release it with --not.

    Spam tickets are left out of `list` (`list --status spam` shows them),
    have no due times and are not counted in `report`. Mail a spam filter
    marked (X-Spam-Flag, X-Spam-Status, X-Spamd-Result, X-Spam, DMARC
    failing for a domain with p=reject, MAILSUPPORT_SPAM_SCORE) opens its
    ticket as spam, unacknowledged. A released ticket is new again, with
    due times from its creation; no acknowledgement is sent for it.

    Examples:
        mailsupport spam 12
        mailsupport spam 12 --not
    """
    from mailsupport.spamdesk import SpamDesk

    desk = SpamDesk(_desk(state(ctx), as_))
    if not_spam:
        t = desk.release(number)
        typer.echo(f"ticket #{t.number} is not spam: {t.status} again")
    else:
        t = desk.mark(number)
        typer.echo(f"ticket #{t.number} set aside as spam")
