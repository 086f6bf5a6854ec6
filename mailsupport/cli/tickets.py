"""Read side for people and scripts: `list`, `show`, `export`."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from typing import Any

import typer

from mailsupport.cli.app import app, local_time, print_json, state
from mailsupport.errors import NotFoundError, UsageError

AGENT = "Agent"
STATUSES = ("new", "open", "pending", "closed")


@app.command("list", rich_help_panel=AGENT)
def list_(
    ctx: typer.Context,
    status: str | None = typer.Option(
        None, help="Only tickets with this status: " + ", ".join(STATUSES)
    ),
    limit: int = typer.Option(50, min=1, help="At most this many tickets."),
    offset: int = typer.Option(0, min=0, help="Skip this many (for paging)."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """List tickets, most recently updated first."""
    from mailsupport.store.queries import list_tickets, ticket_dict

    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    with state(ctx).store().read() as session:
        rows = list_tickets(session, status, limit, offset)
    if as_json:
        print_json([ticket_dict(t) | {"messages": n} for t, n in rows])
        return
    if not rows:
        typer.echo("no tickets")
        return
    width = shutil.get_terminal_size((100, 20)).columns
    header = f"{'#':>6}  {'STATUS':<7}  {'UPDATED':<16}  {'MSGS':>4}  {'REQUESTER':<28}  SUBJECT"
    typer.echo(header)
    for ticket, count in rows:
        line = (
            f"{ticket.number:>6}  {ticket.status:<7}  {local_time(ticket.updated_at):<16}  "
            f"{count:>4}  {_clip(ticket.requester, 28):<28}  {ticket.subject}"
        )
        typer.echo(_clip(line, width))


@app.command("show", rich_help_panel=AGENT)
def show(
    ctx: typer.Context,
    number: int = typer.Argument(..., metavar="N", help="Ticket number."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Show a ticket: its conversation in order, attachments and history."""
    from mailsupport.store.queries import ticket_detail
    from mailsupport.store.tickets import ticket_by_number

    with state(ctx).store().read() as session:
        ticket = ticket_by_number(session, number)
        if ticket is None:
            raise NotFoundError(f"no ticket #{number} (see `mailsupport list`)")
        detail = ticket_detail(session, ticket)
    if as_json:
        print_json(detail)
        return
    typer.echo(_render(detail, asked=number))


@app.command("export", rich_help_panel=AGENT)
def export(ctx: typer.Context) -> None:
    """Every ticket with its messages as JSON Lines on stdout, one ticket per line."""
    from mailsupport.store.queries import export_tickets

    with state(ctx).store().read() as session:
        for line in export_tickets(session):
            typer.echo(json.dumps(line, ensure_ascii=False))


def _render(detail: dict[str, Any], asked: int) -> str:
    out = []
    if detail["number"] != asked:
        out.append(f"(ticket #{asked} was merged into #{detail['number']})")
    requester = detail["requester"]
    if detail["requester_name"]:
        requester = f"{detail['requester_name']} <{requester}>"
    out.append(f"#{detail['number']}  {detail['subject']}")
    out.append(
        f"status {detail['status']}, priority {detail['priority']}, requester {requester}, "
        f"{len(detail['messages'])} messages"
    )
    for message in detail["messages"]:
        arrow = {"in": "<<", "out": ">>", "note": "--"}.get(message["direction"], "??")
        out.append("")
        when = local_time(datetime.fromisoformat(message["date"]))
        out.append(f"{arrow} {message['from']}  {when}")
        out.append(f"   {message['subject']}")
        out.append(f"   [{message['thread_reason']}]")
        if message["ack"]:
            out.append(f"   [{message['ack']}]")
        if message["delivery"]:
            delivery = message["delivery"]
            trouble = f": {delivery['last_error']}" if delivery["last_error"] else ""
            out.append(f"   [delivery {delivery['status']}{trouble}]")
        out.append("")
        out.extend("   " + line if line else "" for line in message["text"].splitlines())
        for part in message["attachments"]:
            out.append(f"   + {part['filename']} ({part['content_type']}, {part['size']} bytes)")
    return "\n".join(out)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"
