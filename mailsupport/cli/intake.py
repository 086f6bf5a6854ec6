"""Local intake: `import` files, `ingest` from an MTA pipe, and the `quarantine`."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mailsupport.cli.app import app, print_json, state, sub_app, utcnow
from mailsupport.errors import UsageError

if TYPE_CHECKING:
    from mailsupport.cli.app import State

OPERATOR = "Operator"
IMPORT_NO_ACK = "imported from files (`mailsupport import --ack` acknowledges)"


@app.command("import", rich_help_panel=OPERATOR)
def import_(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(
        ..., metavar="PATH...", help="mbox files, Maildirs, message files, or directories of them."
    ),
    batch: int = typer.Option(
        200, metavar="N", min=1, help="Messages per database transaction (at most 16 MiB)."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar on a terminal."),
    ack: bool = typer.Option(
        False,
        "--ack",
        help="Acknowledge the new tickets as if the mail had just arrived (by the usual rules).",
    ),
    sent: bool = typer.Option(
        False,
        "--sent",
        help="The files hold our own sent mail too: mail in them from our addresses is ours.",
    ),
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Read every file from the start and parse every message again, even those "
        "imported before (they are recognised as duplicates by their Message-ID).",
    ),
) -> None:
    """Import mail history from files. Sends nothing to anyone unless --ack is given.

    Mail from MAILSUPPORT_SUPPORT_ADDRESS (or an alias) counts as our own only with --sent,
    for files you know hold the desk's sent mail (a Sent folder, or a whole mailbox
    exported): anyone can write our address in From. Without --sent such mail is a
    stranger's, unless it carries our signed Message-ID.

    Stopped (Ctrl-C, SIGTERM, kill -9, a crash), it keeps what it committed, one batch at a
    time; the same command goes on from there: an mbox from the message after the last one
    stored (unless the file changed), and messages whose bytes are stored already are skipped
    without being parsed. Ctrl-C finishes and commits the batch in hand, then exits 130
    (143 for SIGTERM); a second Ctrl-C ends it at once.

    Examples:
        mailsupport import archive.mbox
        mailsupport import --sent Sent.mbox INBOX.mbox
        mailsupport import ~/Maildir/.Support --no-progress
        mailsupport import --restart archive.mbox
    """
    import signal

    from mailsupport.cli.render import terminal_text
    from mailsupport.daemon import stop_on_signals
    from mailsupport.imports import FileImport
    from mailsupport.pipeline import UNPROVEN_OURS, Pipeline, describe
    from mailsupport.sources.files import plan_import

    st = state(ctx)
    plan = plan_import(paths)  # validates every path before anything is written
    incoming = {"no_ack_reason": "" if ack else IMPORT_NO_ACK, "live": ack, "sent": sent}
    run = FileImport(st.store(), plan, utcnow, restart=restart, incoming=incoming)
    for line in run.prepare():  # file names are anyone's: a Maildir's, an archive's
        typer.echo(terminal_text(line, one_line=True))
    unproven = 0

    def each(outcome: Any) -> None:
        nonlocal unproven
        unproven += UNPROVEN_OURS in outcome.detail

    show_bar = progress and sys.stderr.isatty()
    with (
        Pipeline(st.settings, st.store()) as pipeline,
        typer.progressbar(
            length=run.remaining_bytes() if show_bar else 0,
            label="importing",
            file=sys.stderr,
            hidden=not show_bar,
        ) as bar,
        stop_on_signals(run),
    ):
        run.on_read = bar.update
        counts = pipeline.run(
            run.items(), utcnow, batch_size=batch, on_each=each, on_batch=run.record
        )
        run.finish()
    for path, reason in plan.skipped:
        typer.echo(terminal_text(f"skipped {path}: {reason}", one_line=True), err=True)
    already = f"; skipped {run.skipped} already imported" if run.skipped else ""
    typer.echo(describe(counts) + already)
    if unproven:
        typer.echo(
            f"{unproven} messages from our own address were filed as a stranger's: if these "
            "files hold our sent mail, import them with --sent (see README, Security)",
            err=True,
        )
    if run.stopped_by is not None:
        typer.echo(
            f"mailsupport: import stopped by {run.stopped_by} after its last batch was stored; "
            "run the same command again to go on from there",
            err=True,
        )
        # 128 + the signal's number, as a shell reports a process that the signal ended.
        number = signal.Signals.__members__.get(run.stopped_by)
        raise typer.Exit(128 + number if number else 1)
    if ack and counts["new"]:
        _send_queued(st)


@app.command("ingest", rich_help_panel=OPERATOR)
def ingest(
    ctx: typer.Context,
    origin: str = typer.Option("stdin", metavar="LABEL", help="A label stored with the message."),
    mailbox: str | None = typer.Option(
        None,
        metavar="NAME",
        help="The mailbox it was delivered to (default: by the address it was sent to).",
    ),
) -> None:
    """Store one message read from standard input (for `|mailsupport ingest` in an MTA).

    When SMTP is set up, the acknowledgement it queued (and any earlier mail of the ticket
    still due) is sent before it exits, for at most about twice MAILSUPPORT_SMTP_TIMEOUT;
    what cannot go now stays in the outbox for `poll`, the daemon or `outbox flush`.

    Exit 0 when stored (or quarantined), whether or not the acknowledgement went out; 75
    when it could not be stored for now: the MTA keeps the message and tries again.

    Examples:
        mailsupport ingest < message.eml
        mailsupport ingest --origin postfix
        mailsupport ingest --mailbox billing
    """
    from mailsupport.cli.render import terminal_text
    from mailsupport.errors import TemporaryError
    from mailsupport.pipeline import Incoming, Pipeline

    raw = sys.stdin.buffer.read()
    if not raw.strip():
        raise UsageError("no message on standard input")
    st = state(ctx)
    try:
        # Bad settings, a bad mailboxes file or --mailbox name too: exit 75 (below), so that
        # the MTA keeps the message until they are fixed.
        boxes = st.mailboxes
        named = boxes.named(mailbox).name if mailbox else ""
        now = utcnow()
        with Pipeline(st.settings, st.store(), mailboxes=boxes) as pipeline:
            outcome = pipeline.ingest(Incoming(raw, origin, now, mailbox=named), now)
    except TemporaryError:
        raise
    except Exception as error:  # never bounce mail because of us: ask the MTA to retry
        # Even a database error that retrying cannot cure: exit 1 would bounce the mail.
        # (Printed through the CLI's error line, which cleans it for the terminal.)
        raise TemporaryError(
            f"could not store the message: {type(error).__name__}: {error}"
        ) from error
    # What is said of a message can quote it (its Message-ID, a parse error).
    if outcome.kind == "quarantined":
        shown = f"quarantined: {outcome.detail}"
    elif outcome.kind == "duplicate":
        shown = f"duplicate <{outcome.message_id}>, already stored"
    else:
        shown = f"ticket #{outcome.ticket_number}: {outcome.detail}"
    typer.echo(terminal_text(shown, one_line=True))
    if outcome.ticket_number is not None and st.mailboxes.sending:
        _send_for_ticket(st, outcome.ticket_number)


def _send_for_ticket(st: State, number: int) -> None:
    """Send ticket #number's due mail (the acknowledgement just queued) within a short time:
    each attempt gets one MAILSUPPORT_SMTP_TIMEOUT in all, and none starts after that much
    time. Failures stay in the outbox and change nothing here: the message is stored."""
    from datetime import timedelta

    from mailsupport.outbox.delivery import deliver_due

    settings = st.settings
    # SmtpConnection gives one message four timeouts (connect, greeting, data, end).
    quick = settings.model_copy(update={"smtp_timeout": max(1, settings.smtp_timeout // 4)})
    deadline = utcnow() + timedelta(seconds=settings.smtp_timeout)
    _send(lambda: deliver_due(st.store(), quick, utcnow, tickets=[number], deadline=deadline))


def _send_queued(st: State) -> None:
    """After `import --ack` or `quarantine retry --ack`: send what is due, as `poll` does."""
    if not st.mailboxes.sending:
        return
    from mailsupport.outbox.delivery import flush

    _send(lambda: flush(st.store(), st.settings, utcnow))


def _send(delivery: Callable[[], Counter[str]]) -> None:
    """Run `delivery` and say what it sent. Failures stay in the outbox and change nothing
    here: the messages are stored either way."""
    from mailsupport.cli.render import terminal_text
    from mailsupport.outbox.delivery import describe_delivery

    try:
        counts = delivery()
    except Exception as error:  # the mail is stored: sending is the outbox's to retry
        note = f"outbox: not sent yet ({type(error).__name__}: {error}); the outbox keeps it"
        typer.echo(terminal_text(note, one_line=True), err=True)
        return
    if counts:
        typer.echo(f"outbox: {describe_delivery(counts)}")


quarantine_app = sub_app(
    """Messages set aside because they could not be processed.

    Examples:
        mailsupport quarantine list
        mailsupport quarantine retry --all
    """
)
app.add_typer(quarantine_app, name="quarantine", rich_help_panel=OPERATOR)


@quarantine_app.command("list")
def quarantine_list(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON for scripts.")
) -> None:
    """List quarantined messages with their errors.

    Examples:
        mailsupport quarantine list
        mailsupport quarantine list --json
    """
    from mailsupport import quarantine
    from mailsupport.cli.render import local_time, terminal_text

    entries = quarantine.entries(state(ctx).store())
    if as_json:
        print_json([quarantine.entry_dict(e, size) for e, size in entries])
        return
    if not entries:
        typer.echo("quarantine is empty")
        return
    for entry, size in entries:
        # The origin names a file or folder, the error can quote the message: both cleaned.
        origin = terminal_text(entry.origin, one_line=True)
        typer.echo(
            f"{entry.id:>5}  {local_time(entry.created_at)}  {size:>9} B  "
            f"tries {entry.retry_count}  {origin}\n"
            f"       {terminal_text(entry.error, one_line=True)}"
        )


@quarantine_app.command("show")
def quarantine_show(
    ctx: typer.Context,
    entry_id: int = typer.Argument(..., metavar="ID", help="The entry, as in `quarantine list`."),
    raw: bool = typer.Option(False, "--raw", help="Print the message's original bytes."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Show one quarantined message: its error and headers, or its raw bytes.

    Examples:
        mailsupport quarantine show 3
        mailsupport quarantine show 3 --raw > message.eml
    """
    from mailsupport import quarantine
    from mailsupport.cli.render import terminal_text

    entry, stored = quarantine.entry(state(ctx).store(), entry_id)
    data = stored.data
    if raw:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    if as_json:
        print_json(quarantine.entry_dict(entry, len(data)) | {"sha256": stored.sha256})
        return
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0][:4000]
    origin = terminal_text(entry.origin, one_line=True)
    typer.echo(f"entry {entry.id} from {origin}, {len(data)} bytes, tried {entry.retry_count}x")
    typer.echo(f"error: {terminal_text(entry.error, one_line=True)}\n")
    # The headers as they came (anyone's bytes): lines kept, escapes and controls not.
    typer.echo(terminal_text(head.decode("utf-8", "replace")))


@quarantine_app.command("retry")
def quarantine_retry(
    ctx: typer.Context,
    entry_id: int | None = typer.Argument(
        None, metavar="ID", help="The entry, as in `quarantine list` (or --all)."
    ),
    all_: bool = typer.Option(False, "--all", help="Retry every quarantined message."),
    ack: bool = typer.Option(
        False, "--ack", help="Acknowledge the new tickets (by the usual rules)."
    ),
) -> None:
    """Process quarantined messages again (after a fix or a settings change).

    Examples:
        mailsupport quarantine retry 3
        mailsupport quarantine retry --all
    """
    from mailsupport import quarantine
    from mailsupport.cli.render import terminal_text
    from mailsupport.pipeline import describe

    if (entry_id is None) == (not all_):
        raise UsageError("give one quarantine ID or --all")
    st = state(ctx)
    counts: Counter[str] = Counter()
    # Each entry is yielded after its own commit: what is printed is true.
    for current, outcome in quarantine.retry(st.store(), st.settings, utcnow, entry_id, ack=ack):
        counts[outcome.kind] += 1
        where = f"ticket #{outcome.ticket_number}" if outcome.ticket_number else outcome.kind
        typer.echo(
            terminal_text(f"entry {current}: {where} {outcome.detail}", one_line=True).rstrip()
        )
    typer.echo(describe(counts))
    if ack and counts["new"]:
        _send_queued(st)
    if counts["quarantined"]:
        raise typer.Exit(1)
