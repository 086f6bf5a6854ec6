"""Read side for people and scripts: `list`, `show`, `export`.

These read through `store.reader.reading`, which on SQLite needs neither SQLAlchemy nor
the models: keep heavy imports out of this module and inside the commands.
"""

from __future__ import annotations

import re
import shutil
import sys
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from mailsupport.cli.app import app, print_json, state, ticket_number, to_json, use_colour, utcnow
from mailsupport.errors import NotFoundError, UsageError
from mailsupport.store import PRIORITIES
from mailsupport.store import TICKET_STATUSES as STATUSES

if TYPE_CHECKING:
    from mailsupport.cli.app import State
    from mailsupport.store.reader import Reader

AGENT = "Agent"
SORT_KEYS = ("updated", "created", "priority", "number")
UNASSIGNED = "none"
_DURATION = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@app.command("list", rich_help_panel=AGENT)
def list_(
    ctx: typer.Context,
    status: str | None = typer.Option(
        None, help="Only tickets with this status: " + ", ".join(STATUSES)
    ),
    mine: bool = typer.Option(False, "--mine", help="Only tickets assigned to me."),
    as_name: str | None = typer.Option(
        None,
        "--as",
        metavar="NAME",
        help="Who I am for --mine (default: MAILSUPPORT_AGENT, else the login name).",
    ),
    assignee: str | None = typer.Option(
        None, metavar="NAME", help=f"Only tickets assigned to NAME; `{UNASSIGNED}`: unassigned."
    ),
    priority: str | None = typer.Option(
        None, help="Only tickets with this priority: " + ", ".join(PRIORITIES)
    ),
    queue: str | None = typer.Option(None, metavar="NAME", help="Only tickets in this queue."),
    mailbox: str | None = typer.Option(
        None, metavar="NAME", help="Only tickets of this mailbox (MAILSUPPORT_MAILBOXES_FILE)."
    ),
    waiting: bool = typer.Option(
        False, "--waiting", help="Only tickets whose customer wrote last (waiting for us)."
    ),
    requester: str | None = typer.Option(
        None, metavar="ADDR", help="Only tickets of this customer (their address)."
    ),
    line: int | None = typer.Option(
        None, min=1, max=9, metavar="LINE", help="Only tickets on this line of support (1, 2...)."
    ),
    type_: str | None = typer.Option(
        None, "--type", metavar="TYPE", help="Only tickets of this type (billing, incident...)."
    ),
    overdue: bool = typer.Option(
        False,
        "--overdue",
        help="Only open tickets past their first-response or resolution due time.",
    ),
    due_within: str | None = typer.Option(
        None,
        "--due-within",
        metavar="DURATION",
        help="Only open tickets due (first response or resolution) within 30m, 4h, 2d...; "
        "overdue ones included.",
    ),
    tag: list[str] = typer.Option(
        [], "--tag", metavar="TAG", help="Only tickets with this tag (repeat: all of them)."
    ),
    since: str | None = typer.Option(
        None,
        metavar="WHEN",
        help="Only tickets updated since a date (2026-03-01, local time) or for a while "
        "(30m, 12h, 7d, 2w).",
    ),
    sort: str = typer.Option(
        "updated",
        metavar="KEY",
        help="Order by updated, created, number (newest first) or priority (most urgent "
        "first, then updated).",
    ),
    reverse: bool = typer.Option(False, "--reverse", help="The opposite order."),
    limit: int = typer.Option(50, metavar="N", min=1, help="At most this many tickets."),
    offset: int = typer.Option(0, metavar="N", min=0, help="Skip this many (for paging)."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """List tickets, most recently updated first.

    Filters combine: --status open --mine lists my open tickets. Spam is listed only
    with --status spam. Paging: --limit and --offset; the table says when there are more.
    LAST says who wrote last: cust (the customer: waiting for us), us, or - (nobody yet;
    acknowledgements and notes do not count).

    Examples:
        mailsupport list
        mailsupport list --status open --mine
        mailsupport list --overdue --sort priority
        mailsupport list --tag billing --since 7d --json
        mailsupport list --waiting --mine --sort priority
        mailsupport list --requester anna@example.org
    """
    from mailsupport.store.queries import TicketFilter, list_tickets

    st = state(ctx)
    if mine and assignee is not None:
        raise UsageError("--mine and --assignee cannot be combined")
    if as_name is not None and not mine:
        raise UsageError("--as NAME goes with --mine (or use --assignee NAME)")
    if sort not in SORT_KEYS:
        raise UsageError(f"unknown sort key {sort!r}: use one of {', '.join(SORT_KEYS)}")
    unassigned = not mine and assignee is not None and assignee.strip().lower() == UNASSIGNED
    who = st.agent_name(as_name) if mine else None if unassigned else assignee
    where = TicketFilter(
        status=_choice("status", status, STATUSES),
        assignee=None if who is None else " ".join(who.split()),  # as `assign` stores it
        unassigned=unassigned,
        priority=_choice("priority", priority, PRIORITIES),
        queue=queue,
        tags=tuple(t.strip().lower() for t in tag),  # tags are kept lowercased
        since=None if since is None else parse_since(since, utcnow()),
        line=line,
        type=type_.strip().lower() if type_ else None,
        due_before=_due_before(overdue, due_within, utcnow()),
        mailboxes=() if mailbox is None else _mailbox_names(st, mailbox),
        waiting=waiting,
        requester=requester.strip().strip("<>").lower() if requester else None,
    )
    with _reading(st) as reader:
        # One more than asked, to tell whether there is a next page.
        rows = list_tickets(reader, where, sort, reverse, limit + 1, offset)
    more = len(rows) > limit
    rows = rows[:limit]
    default = st.mailboxes.default.name
    for row in rows:
        row["mailbox"] = row["mailbox"] or default
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no tickets")
        return
    from mailsupport.cli.render import ticket_table

    terminal = sys.stdout.isatty()
    width = shutil.get_terminal_size((100, 20)).columns if terminal else None
    for line in ticket_table(rows, width, use_colour()):
        typer.echo(line)
    if more:
        typer.echo(f"(more: --offset {offset + limit})")


def _mailbox_names(st: Any, name: str) -> tuple[str, ...]:
    """`list --mailbox NAME`: its name, and "" for the default one (tickets filed before
    there were several mailboxes)."""
    box = st.mailboxes.named(name)
    return (box.name, "") if box is st.mailboxes.default else (box.name,)


@app.command("show", rich_help_panel=AGENT)
def show(
    ctx: typer.Context,
    number: int = typer.Argument(
        ..., metavar="N", parser=ticket_number, help="Ticket number: 12 or #12."
    ),
    full: bool = typer.Option(
        False, "--full", help="Show quoted history in full instead of folding it away."
    ),
    history: bool = typer.Option(
        False, "--history", help="Also list every change to the ticket: when, who, what."
    ),
    raw: str | None = typer.Option(
        None,
        "--raw",
        metavar="MESSAGE",
        help="Print one message's original bytes: its number in the conversation ([1] is "
        "the first) or its Message-ID.",
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Show a ticket: its conversation in order, attachments and notes.

    Quoted history in the messages is folded away (--full shows it); --history adds every
    change to the ticket.

    Examples:
        mailsupport show 12
        mailsupport show '#12' --history
        mailsupport show 12 --raw 1 > first.eml
    """
    from mailsupport.store.queries import (
        find_message,
        original_bytes,
        ticket_by_number,
        ticket_detail,
    )

    st = state(ctx)
    with _reading(st) as reader:
        ticket = ticket_by_number(reader, number)
        if ticket is None:
            raise NotFoundError(f"no ticket #{number} (see `mailsupport list`)")
        if raw is not None:
            message = find_message(reader, ticket, raw)
            if message is None:
                raise NotFoundError(
                    f"ticket #{ticket.number} has no message {raw} "
                    "(a number shown by `mailsupport show`, or a Message-ID)"
                )
            data = original_bytes(reader, message)
            if data is None:
                what = "an internal note" if message.direction == "note" else "not stored"
                raise NotFoundError(
                    f"message {raw} of ticket #{ticket.number} has no bytes: {what}"
                )
        else:
            detail = ticket_detail(reader, ticket)
            box = st.mailboxes.of_ticket(detail["mailbox"])
            detail["mailbox"] = box.name
            if len(st.mailboxes.all) > 1:  # one mailbox: nothing worth a line
                detail["mailbox_address"] = box.address
    if raw is not None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    if as_json:
        print_json(detail)
        return
    from mailsupport.cli.render import ticket_text

    typer.echo(ticket_text(detail, number, full=full, history=history, colour=use_colour()))


@app.command("next", rich_help_panel=AGENT)
def next_ticket(
    ctx: typer.Context,
    as_name: str | None = typer.Option(
        None, "--as", metavar="NAME", help="Who I am (default: MAILSUPPORT_AGENT, else login)."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Show the most urgent ticket waiting for me: the customer wrote last.

    Mine first (assigned to me), then unassigned ones; the most urgent by
    priority, then the most recently updated (the order of `list --sort
    priority`). Exit 1 when nothing waits.

    Examples:
        mailsupport next
        mailsupport next --as olga
    """
    from mailsupport.store.queries import (
        TicketFilter,
        list_tickets,
        ticket_by_number,
        ticket_detail,
    )

    st = state(ctx)
    me = st.agent_name(as_name)
    found = None
    with _reading(st) as reader:
        for where in (
            TicketFilter(waiting=True, assignee=me),
            TicketFilter(waiting=True, unassigned=True),
        ):
            rows = list_tickets(reader, where, "priority", False, 1, 0)
            if rows:
                found = ticket_by_number(reader, rows[0]["number"])
                break
        if found is None:
            raise NotFoundError(f"nothing waits for {me}: no customer wrote last on yours")
        detail = ticket_detail(reader, found)
    detail["mailbox"] = st.mailboxes.of_ticket(detail["mailbox"]).name
    if as_json:
        print_json(detail)
        return
    from mailsupport.cli.render import ticket_text

    typer.echo(ticket_text(detail, found.number, colour=use_colour()))


@app.command("export", rich_help_panel=AGENT)
def export(ctx: typer.Context) -> None:
    """Every ticket with its messages as JSON Lines on stdout, one ticket per line.

    Examples:
        mailsupport export > tickets.jsonl
    """
    from mailsupport.store.queries import export_tickets

    st = state(ctx)
    default = st.mailboxes.default.name
    with _reading(st) as reader:
        for line in export_tickets(reader):
            line["mailbox"] = line["mailbox"] or default
            typer.echo(to_json(line))


def _reading(st: State) -> AbstractContextManager[Reader]:
    from mailsupport.store.reader import reading

    return reading(st.settings.db_url, st.store)


def _choice(name: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if value not in choices:
        raise UsageError(f"unknown {name} {value!r}: use one of {', '.join(choices)}")
    return value


def _due_before(overdue: bool, due_within: str | None, now: datetime) -> datetime | None:
    if due_within is None:
        return now if overdue else None
    match = _DURATION.fullmatch(due_within.strip().lower())
    if not match:
        raise UsageError(f"--due-within {due_within!r}: use a duration like 30m, 4h, 2d, 1w")
    return now + timedelta(**{_UNITS[match[2]]: int(match[1])})


def parse_since(value: str, now: datetime) -> datetime:
    """A duration back from `now` (30m, 12h, 7d, 2w) or a date or time in local time."""
    text = value.strip().lower()
    match = _DURATION.fullmatch(text)
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(text.upper())
    except ValueError:
        raise UsageError(
            f"--since {value!r}: use a date (2026-03-01), a time (2026-03-01T09:00) "
            "or a duration (30m, 12h, 7d, 2w)"
        ) from None
    return when.astimezone() if when.tzinfo is None else when  # naive: the local zone
