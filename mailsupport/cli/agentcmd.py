"""What agents do: `reply`, `note`, `close`, `reopen`, `assign`, `priority`, `tag`, `merge`.

Each command makes its change in one transaction (through `desk`, the use cases these
commands share with scripts) and says in one line what it did. Mail (replies, closing
notices) is queued with the change, then sent at once when SMTP is set up, after whatever
earlier mail of the ticket is still due, in order; if sending fails for now, the outbox
keeps it for the daemon or `outbox flush`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mailsupport.cli import editor
from mailsupport.cli.app import app, state, ticket_number, utcnow
from mailsupport.cli.render import terminal_text
from mailsupport.errors import ConfigError, TemporaryError, UsageError

if TYPE_CHECKING:
    from mailsupport.agent import Recipients
    from mailsupport.cli.app import State
    from mailsupport.config import Settings
    from mailsupport.desk import Desk
    from mailsupport.mail import Address

AGENT = "Agent"

AS_OPTION = typer.Option(
    None, "--as", metavar="NAME", help="Act as this agent (default: MAILSUPPORT_AGENT, login)."
)
NUMBER = typer.Argument(..., metavar="N", parser=ticket_number, help="Ticket number: 12 or #12.")
MESSAGE_OPTION = typer.Option(None, "--message", "-m", metavar="TEXT", help="The text.")
FILE_OPTION = typer.Option(
    None, "--file", "-F", metavar="PATH", help="Read the text from a file (- for stdin)."
)


# ------------------------------------------------------------------------------------------
# Mail
# ------------------------------------------------------------------------------------------


@app.command("reply", rich_help_panel=AGENT)
def reply(
    ctx: typer.Context,
    number: int = NUMBER,
    message: str | None = MESSAGE_OPTION,
    file: str | None = FILE_OPTION,
    macro: list[str] = typer.Option(
        [],
        "--macro",
        metavar="NAME",
        help="Start from a canned reply, filled in for the ticket (`mailsupport macro list`; "
        "repeat for more).",
    ),
    attach: list[Path] = typer.Option(
        [], "--attach", metavar="FILE", help="Attach a file (repeat for more)."
    ),
    cc: list[str] = typer.Option(
        [],
        "--cc",
        metavar="ADDR",
        help="Copy someone else, on this and later replies (repeat for more).",
    ),
    to: list[str] = typer.Option(
        [],
        "--to",
        metavar="ADDR",
        help="Send to exactly these people (and --cc) instead of the ticket's customer and "
        "copies (repeat for more). Needed after merging different customers' tickets.",
    ),
    kb: list[str] = typer.Option(
        [], "--kb", metavar="ARTICLE", help="Insert a knowledge-base article (repeat for more)."
    ),
    close: bool = typer.Option(False, "--close", help="Close the ticket with this reply."),
    pending: bool = typer.Option(
        False, "--pending", help="Set the ticket pending (waiting for the customer)."
    ),
    open_: bool = typer.Option(
        False, "--open", help="Leave the ticket open (the answer is not the last word)."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Send what the editor gave even when the ticket got new messages meanwhile.",
    ),
    no_send: bool = typer.Option(
        False, "--no-send", help="Only queue it; the daemon or `outbox flush` sends it."
    ),
    from_: str | None = typer.Option(
        None,
        "--from",
        metavar="ADDR",
        help="Answer from another of our addresses (default: the ticket's mailbox).",
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Answer the customer by mail, threaded into the conversation.

    The text comes from -m, --file, or $EDITOR opened on a file that shows, below a marker
    line (like `git commit`), who gets the reply, the greeting and signature the `reply`
    template puts around it, and the conversation. An empty text sends nothing. --macro
    fills in a canned reply: in the editor, or after the text of -m or --file (-m '' sends
    it alone); --kb articles come last. The ticket becomes pending (waiting for the
    customer) unless --open or --close says otherwise, or MAILSUPPORT_REPLY_STATUS does; a
    closed ticket stays closed unless asked.

    Who gets it is printed before it is sent. Addresses that only later mail brought in are
    not mailed until an agent adds them (`mailsupport cc`, or --cc). A reply quotes only a
    message its recipients wrote. If the customer wrote, or someone answered or left a
    note, while the editor was open, the reply shows what arrived and asks before sending
    (without a terminal it is not sent, unless --force); the text is kept in a file.

    Examples:
        mailsupport reply 12
        mailsupport reply 12 -m 'The invoice is attached.' --attach invoice.pdf
        mailsupport reply 12 --macro password-reset
        mailsupport reply 12 --macro need-more-info -m 'Sorry for the wait.' --open
        mailsupport reply 12 --to anna@example.org --file answer.txt
        mailsupport reply '#12' --file answer.txt --close
        mailsupport reply 12 --kb reset-password --close
        mailsupport reply 12 --from billing@example.com -m 'Refunded today.'
    """
    from mailsupport.ticketmail import file_part

    chosen = [name for name, on in (("closed", close), ("pending", pending), ("open", open_)) if on]
    if len(chosen) > 1:
        raise UsageError("choose one of --close, --pending and --open")
    st = state(ctx)
    sender = (from_ or "").strip()
    if sender and st.mailboxes.for_address(sender) is None:  # before the editor opens
        known = ", ".join(sorted(st.mailboxes.our_addresses))
        raise UsageError(f"--from {sender}: not one of our addresses ({known})")
    who = st.agent_name(as_)
    copies, named = _addresses(cc, "--cc"), _addresses(to, "--to")
    files = [file_part(path.name, _read_attachment(path)) for path in attach]
    articles = _articles(st.settings, kb)
    desk = desk_for(st, who)
    start = desk.start_reply(number, to=named, cc=copies, macros=macro, from_address=sender)
    title, conversation = editor.context(start.conversation)
    whom = _whom(start.people)
    given = editor.given_text(message, file)
    if given is None:  # the editor starts with the macros and articles in place
        heading = "".join(f"\n# Reply {line}" for line in whom)
        below = heading + editor.framed(start.frame) + conversation
        prefill = "\n\n".join(p for p in (start.frame.canned, articles) if p)
        text = editor.joined([editor.edit(f"reply to {title}", "reply", below, prefill)], "reply")
        editor.check_news(number, desk.news(number, start.mark), text, force=force)
    else:
        text = editor.joined([given, start.frame.canned, articles], "reply")
    typer.echo(terminal_text(f"ticket #{number}: reply {'; '.join(whom)}", one_line=True))
    with editor.kept_on_failure(text, "reply"):
        replied = desk.reply(
            number, text, cc=copies, to=named, attachments=files,
            status=chosen[0] if chosen else None, from_address=sender,
        )  # fmt: skip
    t = replied.ticket
    typer.echo(f"ticket #{t.number}: reply queued as <{replied.message_id}>, {t.status}")
    _send_now(st, t.number, replied.item_id, no_send)


@app.command("note", rich_help_panel=AGENT)
def note(
    ctx: typer.Context,
    number: int = NUMBER,
    message: str | None = MESSAGE_OPTION,
    file: str | None = FILE_OPTION,
    as_: str | None = AS_OPTION,
) -> None:
    """Add an internal note for agents; it is never mailed to anyone.

    The text comes from -m, --file, or $EDITOR (an empty text adds nothing).

    Examples:
        mailsupport note 12 -m 'Called the customer, waiting for logs.'
        mailsupport note 12
    """
    desk = desk_for(state(ctx), as_)
    title, conversation = editor.context(desk.conversation(number))
    given = editor.given_text(message, file)
    if given is None:
        given = editor.edit(f"internal note on {title}", "note", conversation)
    text = editor.joined([given], "note")
    with editor.kept_on_failure(text, "note"):
        t = desk.note(number, text)
    typer.echo(f"ticket #{t.number}: note added")


# ------------------------------------------------------------------------------------------
# Status and fields
# ------------------------------------------------------------------------------------------


@app.command("close", rich_help_panel=AGENT)
def close(
    ctx: typer.Context,
    number: int = NUMBER,
    silent: bool = typer.Option(False, "--silent", help="Do not mail the closing notice."),
    message: str | None = typer.Option(
        None, "--message", "-m", metavar="TEXT", help="A few words for the closing notice."
    ),
    no_send: bool = typer.Option(
        False, "--no-send", help="Only queue the notice; the daemon or `outbox flush` sends it."
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Close a ticket and mail the customer the `closed` notice.

    No notice with --silent, or when MAILSUPPORT_CLOSED_NOTICE=false, nor to a
    ticket opened by automatic mail (a bounce, an out-of-office reply), a spam
    ticket, one a rule said not to notify, or a requester that is a mail system
    or no-reply address.

    Examples:
        mailsupport close 12
        mailsupport close 12 -m 'Fixed in release 2.4.'
        mailsupport close 12 --silent
    """
    st = state(ctx)
    closed = desk_for(st, as_).close(number, silent=silent, comment=message or "")
    typer.echo(f"ticket #{closed.ticket.number} closed; {closed.detail}")
    _send_now(st, closed.ticket.number, closed.item_id, no_send)


@app.command("reopen", rich_help_panel=AGENT)
def reopen(ctx: typer.Context, number: int = NUMBER, as_: str | None = AS_OPTION) -> None:
    """Open a closed or pending ticket again.

    Examples:
        mailsupport reopen 12
    """
    t = desk_for(state(ctx), as_).reopen(number)
    typer.echo(f"ticket #{t.number} is open again")


@app.command("assign", rich_help_panel=AGENT)
def assign(
    ctx: typer.Context,
    number: int = NUMBER,
    assignee: str = typer.Argument(
        ..., metavar="AGENT", help="Who takes it: a name, `me`, or `none` to unassign."
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Give a ticket to an agent (`me` for yourself, `none` to take it back).

    Examples:
        mailsupport assign 12 me
        mailsupport assign 12 olga
        mailsupport assign 12 none
    """
    desk = desk_for(state(ctx), as_)
    who = desk.agent
    name = who if assignee == "me" else None if assignee.lower() in ("none", "-") else assignee
    t = desk.assign(number, name)
    typer.echo(
        f"ticket #{t.number} assigned to {name}" if name else f"ticket #{t.number} unassigned"
    )


@app.command("priority", rich_help_panel=AGENT)
def priority(
    ctx: typer.Context,
    number: int = NUMBER,
    level: str = typer.Argument(..., metavar="LEVEL", help="low, normal, high or urgent."),
    as_: str | None = AS_OPTION,
) -> None:
    """Set a ticket's priority: low, normal, high or urgent (SLA due times follow it).

    Examples:
        mailsupport priority 12 urgent
    """
    t = desk_for(state(ctx), as_).set_priority(number, level)
    typer.echo(f"ticket #{t.number} priority {t.priority}")


@app.command("escalate", rich_help_panel=AGENT)
def escalate(
    ctx: typer.Context,
    number: int = NUMBER,
    to: int | None = typer.Option(
        None, "--to", metavar="LINE", help="The line to move it to (default: the next one)."
    ),
    reason: str = typer.Option("", "--reason", metavar="TEXT", help="Why, for the history."),
    no_send: bool = typer.Option(
        False, "--no-send", help="Only queue the team's notice; the daemon sends it."
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Move a ticket to another line of support (the next one by default).

    Recorded in the history; the line's team address (MAILSUPPORT_LINE_ADDRESSES) gets a
    notice by mail. `--to 1` returns it to the first line.

    Examples:
        mailsupport escalate 12 --reason 'needs a database fix'
        mailsupport escalate 12 --to 1
    """
    st = state(ctx)
    moved = desk_for(st, as_).escalate(number, to_line=to, reason=reason)
    typer.echo(f"ticket #{moved.ticket.number} is on line {moved.ticket.line} now; {moved.detail}")
    _send_now(st, moved.ticket.number, moved.item_id, no_send)


@app.command(
    "tag",
    rich_help_panel=AGENT,
    # `-x` removes tag x: let it through as an argument instead of an unknown option.
    context_settings={"ignore_unknown_options": True},
)
def tag(
    ctx: typer.Context,
    number: int = NUMBER,
    changes: list[str] = typer.Argument(
        ..., metavar="+TAG|-TAG...", help="+x (or x) adds tag x, -x removes it."
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Add and remove tags: `mailsupport tag 12 +billing -urgent`.

    Examples:
        mailsupport tag 12 +billing -urgent
    """
    t, tags = desk_for(state(ctx), as_).change_tags(number, changes)
    typer.echo(f"ticket #{t.number} tags: {' '.join(tags) if tags else '(none)'}")


@app.command(
    "cc",
    rich_help_panel=AGENT,
    # `-addr` stops mailing addr: let it through as an argument, not an unknown option.
    context_settings={"ignore_unknown_options": True},
)
def cc(
    ctx: typer.Context,
    number: int = NUMBER,
    changes: list[str] | None = typer.Argument(
        None,
        metavar="+ADDR|-ADDR...",
        help="+addr (or addr) mails addr with every reply from now on; -addr stops it.",
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Choose who is copied on a ticket's replies, or show who is.

    The customer and the people their first message copied are mailed with every reply.
    Addresses that later mail brings in (anyone can put anyone in Cc) are only shown, as
    not mailed, until an agent adds them here or with `reply --cc`. -addr keeps the address
    on the ticket, not mailed. Without changes, lists who is who.

    Examples:
        mailsupport cc 12
        mailsupport cc 12 +boss@customer.example.org
        mailsupport cc 12 -eve@example.net
    """
    t, people = desk_for(state(ctx), as_).change_cc(number, changes or [])
    summary = f"ticket #{t.number}: replies go {'; '.join(_whom(people))}"
    typer.echo(terminal_text(summary, one_line=True))  # names come from mail


@app.command("merge", rich_help_panel=AGENT)
def merge(
    ctx: typer.Context,
    number: int = typer.Argument(
        ..., metavar="N", parser=ticket_number, help="The ticket that stays: 12 or #12."
    ),
    other: int = typer.Argument(
        ..., metavar="M", parser=ticket_number, help="The ticket merged into N and closed."
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Merge ticket M into N; replies to either land in N from then on.

    M's messages, participants, tags and history move to N; M is closed and points at N.

    Examples:
        mailsupport merge 12 15
    """
    target = desk_for(state(ctx), as_).merge(number, other)
    typer.echo(f"ticket #{other} merged into #{target.number}")


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def desk_for(st: State, as_: str | None) -> Desk:
    """The acting agent (--as, else the settings, else the login) at work on the store."""
    from mailsupport.desk import Desk

    who = st.agent_name(as_)  # before opening the store: "who are you?" comes first
    return Desk(st.store(), st.settings, who, utcnow)


def _send_now(st: State, number: int | None, item_id: int | None, no_send: bool) -> None:
    """Send the queued mail now when SMTP is set up, with the ticket's earlier mail that is
    still due before it (so the customer reads them in order); the outbox keeps what
    cannot go now."""
    settings = st.settings
    if item_id is None or number is None or no_send:
        return
    if not st.mailboxes.sending:
        typer.echo("not sent yet: MAILSUPPORT_SMTP_HOST is not set (the outbox keeps it)")
        return
    from mailsupport.outbox.delivery import deliver_due

    outcomes: dict[int, str] = {}
    try:
        deliver_due(st.store(), settings, utcnow, tickets=[number], outcomes=outcomes)
    except (ConfigError, TemporaryError) as error:
        typer.echo(
            terminal_text(f"not sent yet: {error} (the outbox keeps it)", one_line=True), err=True
        )
        return
    earlier = sum(1 for i, o in outcomes.items() if i != item_id and o == "sent")
    if earlier:
        typer.echo(f"sent first: {earlier} earlier {_messages(earlier)} of ticket #{number}")
    outcome = outcomes.get(item_id)
    if outcome == "sent":
        typer.echo("sent")
    elif outcome == "failed":
        typer.echo("delivery failed: see `mailsupport outbox list --status failed`", err=True)
        raise typer.Exit(1)
    elif outcome in (None, "held"):
        typer.echo(
            "not sent yet: it waits behind earlier mail of this ticket that the server has "
            "not taken yet (the outbox sends them in order)"
        )
    else:
        typer.echo("not sent yet: the server is not taking it now (the outbox retries)")


def _messages(n: int) -> str:
    return "message" if n == 1 else "messages"


def _addresses(values: list[str], option: str) -> list[Address]:
    from mailsupport.agent import checked_address
    from mailsupport.parsing.addresses import address_pairs

    return [checked_address(name, address, option) for name, address in address_pairs(values)]


def _whom(people: Recipients) -> list[str]:
    """Who a reply goes to, and whom the ticket knows but does not mail."""
    lines = [f"to {', '.join(map(str, people.to))}"]
    if people.cc:
        lines.append(f"cc {', '.join(map(str, people.cc))}")
    if people.not_mailed:
        shown = ", ".join(a.address for a in people.not_mailed)
        lines.append(f"not mailed: {shown} (`mailsupport cc N +ADDR` adds)")
    return lines


def _read_attachment(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error} (--attach)") from None


def _articles(settings: Settings, slugs: list[str]) -> str:
    """The text of the knowledge-base articles named by --kb, one after another."""
    if not slugs:
        return ""
    from mailsupport.kb import article_text, find_article

    return "\n\n".join(article_text(find_article(settings, s)).strip("\n") for s in slugs)
