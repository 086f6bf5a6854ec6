"""The outbox for operators: `outbox list`, `outbox flush`, `outbox retry`."""

from __future__ import annotations

import shutil
from datetime import datetime
from typing import TYPE_CHECKING

import typer

from mailsupport.cli.app import app, print_json, state, sub_app, utcnow
from mailsupport.cli.render import local_time
from mailsupport.errors import ConfigError, NotFoundError, PermanentError, TemporaryError

if TYPE_CHECKING:
    from mailsupport.store.db import Store
    from mailsupport.store.models import OutboxItem

OPERATOR = "Operator"
STATUSES = ("queued", "sent", "failed")  # as mailsupport.outbox.STATUSES, without importing it
# Claimed per round by `flush`: short claims, so a running daemon can share the work.
FLUSH_BATCH = 100

outbox_app = sub_app(
    """Outgoing mail: what waits, what was sent, what failed.

    Examples:
        mailsupport outbox list --status queued
        mailsupport outbox flush
    """
)
app.add_typer(outbox_app, name="outbox", rich_help_panel=OPERATOR)


@outbox_app.command("list")
def outbox_list(
    ctx: typer.Context,
    status: str | None = typer.Option(
        None, help="Only items with this status: " + ", ".join(STATUSES) + " (default: all)."
    ),
    limit: int = typer.Option(
        50, metavar="N", min=1, help="At most this many items: the most recent ones."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """List outgoing mail, the most recent --limit items, oldest of them first.

    Each item with its ticket, kind, status, attempts, next attempt (for queued mail),
    recipients, and its last error on a line below.

    Examples:
        mailsupport outbox list
        mailsupport outbox list --status failed
    """
    from mailsupport.cli.render import clip, terminal_text
    from mailsupport.outbox.admin import item_dict, latest

    rows, more = latest(state(ctx).store(), status, limit)
    if as_json:
        print_json([item_dict(item, number) for item, number in rows])
        return
    if not rows:
        typer.echo("outbox is empty" if status is None else f"no {status} items in the outbox")
        return
    width = shutil.get_terminal_size((100, 20)).columns
    typer.echo(
        f"{'ID':>6}  {'TICKET':>7}  {'KIND':<8}  {'STATUS':<6}  {'TRIES':>5}  "
        f"{'NEXT ATTEMPT':<16}  RECIPIENTS"
    )
    for item, number in rows:
        # Cleaned before clipping: recipients come from mail, errors quote SMTP servers.
        typer.echo(clip(terminal_text(_row(item, number), one_line=True), width))
        if item.last_error:
            # The error on a line of its own: a column would leave it a few characters.
            error = " ".join(terminal_text(item.last_error, one_line=True).split())
            typer.echo(clip("        " + error, width))
    if more:
        typer.echo(f"(only the latest {limit} shown: use --status or a larger --limit)")


def _row(item: OutboxItem, number: int | None) -> str:
    ticket = f"#{number}" if number is not None else "-"
    next_attempt = local_time(item.next_attempt_at) if item.status == "queued" else "-"
    return (
        f"{item.id:>6}  {ticket:>7}  {item.kind:<8}  {item.status:<6}  {item.attempts:>5}  "
        f"{next_attempt:<16}  {', '.join(item.recipients)}"
    )


@outbox_app.command("flush")
def outbox_flush(
    ctx: typer.Context,
    all_: bool = typer.Option(
        False,
        "--all",
        help="Also send queued mail that waits for its next retry (e.g. after fixing the "
        "SMTP server).",
    ),
) -> None:
    """Send the outgoing mail that is due now, then exit.

    Exit 0 when something was sent and the rest (if any) waits for a retry, or when nothing
    was due; 1 when a message failed for good in this run (the ticket records why); 75 when
    nothing could be sent because of temporary failures (server unreachable, 4xx replies):
    the mail stays queued and retries later; 2 on a configuration error.

    Examples:
        mailsupport outbox flush
        mailsupport outbox flush --all
    """
    from mailsupport.outbox.admin import make_due
    from mailsupport.outbox.delivery import describe_delivery, flush

    st = state(ctx)
    settings = st.settings
    if not st.mailboxes.sending:
        # Checked first: asked to send, a missing server is an error even with nothing due.
        raise ConfigError(
            "MAILSUPPORT_SMTP_HOST is not set: outgoing mail waits in the outbox until it is"
        )
    store = st.store()
    if all_:
        moved = make_due(store, utcnow())
        if moved:
            typer.echo(f"{moved} waiting {_items(moved)} made due now")
    counts = flush(store, settings, utcnow, FLUSH_BATCH)
    if not counts:
        typer.echo("nothing to send" + _waiting_note(store, utcnow()))
        return
    typer.echo(describe_delivery(counts))
    if counts["failed"]:
        raise PermanentError(
            f"{counts['failed']} {_items(counts['failed'])} failed for good: "
            "see `mailsupport outbox list --status failed`, then `mailsupport outbox retry ID`"
        )
    if counts["retry"] and not counts["sent"]:
        raise TemporaryError(
            f"nothing sent, {counts['retry']} {_items(counts['retry'])} queued for a retry: "
            "see `mailsupport outbox list --status queued`"
        )


def _waiting_note(store: Store, now: datetime) -> str:
    """ " (2 waiting for a retry, the next at 14:05; --all sends them now)", or ""."""
    from mailsupport.outbox.admin import waiting as waiting_retry

    waiting, first = waiting_retry(store, now)
    if not waiting:
        return ""
    return (
        f" ({waiting} waiting for a retry, the next at {local_time(first)}; --all sends them now)"
    )


@outbox_app.command("retry")
def outbox_retry(
    ctx: typer.Context,
    item_id: int = typer.Argument(..., metavar="ID", help="Outbox item (see `outbox list`)."),
) -> None:
    """Queue a failed outbox item again, due now, with a fresh SMTP_MAX_AGE.

    Recipients that already got it do not get it again. It goes out with the next poll,
    the daemon, or `mailsupport outbox flush`. Exit 1 when there is no such item, 2 when it
    was sent to every recipient already.

    Examples:
        mailsupport outbox retry 7
    """
    from mailsupport.outbox.admin import retry_item

    try:
        item, number = retry_item(state(ctx).store(), item_id, utcnow())
    except NotFoundError as error:
        raise NotFoundError(f"{error} (see `mailsupport outbox list`)") from None
    pending = [r for r in item.recipients if r not in item.recipient_status]
    from mailsupport.cli.render import terminal_text

    # Printed after the commit: what it says is true.
    again = f"outbox item {item_id} for ticket #{number} queued again to {', '.join(pending)}"
    typer.echo(terminal_text(again, one_line=True))


def _items(n: int) -> str:
    return "item" if n == 1 else "items"
