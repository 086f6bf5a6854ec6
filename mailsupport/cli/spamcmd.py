"""`mailsupport spam`: set a ticket aside as spam, release one (`--not`), purge old spam."""

from __future__ import annotations

import typer

from mailsupport.cli.agentcmd import AGENT, AS_OPTION, desk_for
from mailsupport.cli.app import app, state, ticket_number
from mailsupport.errors import UsageError


@app.command("spam", rich_help_panel=AGENT)
def spam(
    ctx: typer.Context,
    number: int | None = typer.Argument(
        None, metavar="[N]", parser=ticket_number, help="Ticket number: 12 or #12."
    ),
    not_spam: bool = typer.Option(
        False, "--not", help="Release the ticket: not spam, new again, with due times."
    ),
    purge: bool = typer.Option(
        False, "--purge", help="Delete spam older than MAILSUPPORT_SPAM_DAYS (mail kept)."
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Set a ticket aside as spam, release it with --not, or purge old spam.

    Spam tickets are left out of `list` (`list --status spam` shows them),
    have no due times and are not counted in `report`. Mail a spam filter
    marked (X-Spam-Flag, X-Spam-Status, X-Spamd-Result, X-Spam, DMARC
    failing for a domain with p=reject, MAILSUPPORT_SPAM_SCORE) opens its
    ticket as spam, unacknowledged. A released ticket is new again, with
    due times from its creation; no acknowledgement is sent for it.

    --purge deletes the spam tickets not updated for MAILSUPPORT_SPAM_DAYS
    days; each message's raw bytes stay in the quarantine.

    Examples:
        mailsupport spam 12
        mailsupport spam 12 --not
        mailsupport spam --purge
    """
    from mailsupport.spamdesk import SpamDesk

    desk = SpamDesk(desk_for(state(ctx), as_))
    if purge:
        if number is not None or not_spam:
            raise UsageError("--purge takes no ticket number and no --not")
        done = desk.purge()
        numbers = ", ".join(f"#{n}" for n in done.numbers) or "none"
        kept = f"{done.kept} messages kept in the quarantine"
        typer.echo(f"purged {len(done.numbers)} spam tickets ({numbers}); {kept}")
        return
    if number is None:
        raise UsageError("give a ticket number (or --purge)")
    if not_spam:
        t = desk.release(number)
        typer.echo(f"ticket #{t.number} is not spam: {t.status} again")
    else:
        t = desk.mark(number)
        typer.echo(f"ticket #{t.number} set aside as spam")
