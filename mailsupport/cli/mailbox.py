"""The support mailboxes: `poll` once (cron), and `daemon` (systemd)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import typer

from mailsupport.cli.app import app, state, utcnow
from mailsupport.errors import ConfigError, MailSupportError

if TYPE_CHECKING:
    from mailsupport.poll import MailboxPoll

OPERATOR = "Operator"


@app.command("poll", rich_help_panel=OPERATOR)
def poll(
    ctx: typer.Context,
    since: str = typer.Option(
        "",
        "--since",
        metavar="YYYY-MM-DD",
        help="Also take the older mail the first poll left, from this day on, as history.",
    ),
    take_all: bool = typer.Option(
        False, "--all", help="Also take all the older mail the first poll left, as history."
    ),
    mailbox: str = typer.Option(
        "",
        "--mailbox",
        metavar="NAME",
        help="Poll only this mailbox (a name in MAILSUPPORT_MAILBOXES_FILE).",
    ),
) -> None:
    """Take new mail from the IMAP folder of every mailbox once, then exit (for cron).

    The first poll leaves the mail already in the folder (MAILSUPPORT_IMAP_START=new) and
    says how much. --since or --all takes that older mail once, as history: dated by its own
    Date, no due times, no acknowledgement. Taking it again takes nothing.

    With a mailboxes file (MAILSUPPORT_MAILBOXES_FILE) every mailbox that has an IMAP server
    is polled, up to 8 at a time, each on its own; a failing one (its server down, its
    sign-in refused) is one line on stderr naming it and holds up none of the others.

    Exit 0 when done or when another poll of the same folder is running, 2 on a
    configuration error, 75 when the server or the database is unavailable for now; of
    several mailboxes' failures, 2 before 75 before 1.

    Examples:
        mailsupport poll
        mailsupport --config /etc/mailsupport/settings.env poll
        mailsupport poll --since 2026-01-01
        mailsupport poll --all
        mailsupport poll --mailbox billing
    """
    from mailsupport.cli.render import terminal_text
    from mailsupport.errors import UsageError
    from mailsupport.logs import name_mailboxes, redact_also, secrets_of
    from mailsupport.mailboxes import load_mailboxes
    from mailsupport.poll import poll_mailboxes, polled_mailboxes, worst_exit_code

    st = state(ctx)
    settings = st.settings
    history = _history_wanted(since, take_all)
    mailboxes = load_mailboxes(settings)
    redact_also(secret for box in mailboxes.all for secret in secrets_of(box.settings))
    named = bool(settings.mailboxes_file)  # else the one mailbox: `poll` as it always was
    if named:
        name_mailboxes()
    same: dict[str, str] = {}
    if mailbox:
        box = mailboxes.named(mailbox)
        if named and not box.polled:
            raise UsageError(f"mailbox {box.name} has no IMAP server (imap_host): nothing to poll")
        boxes = [box]
    else:
        boxes, same = polled_mailboxes(mailboxes)
        if not boxes:
            raise ConfigError(
                f"no mailbox in {settings.mailboxes_file} has an IMAP server (imap_host): "
                "nothing to poll"
            )
    store = st.store()
    polls = poll_mailboxes(boxes, store, utcnow, mailboxes=mailboxes, history=history)
    if not named and polls[0].error is not None:
        raise polls[0].error
    for done in polls:
        if done.error is None:
            _tell(done, named)
    for name, other in same.items():
        typer.echo(f"poll {name}: the same folder as mailbox {other}, polled with it")
    if any(done.result is not None for done in polls):  # digests and SLA warnings due
        from mailsupport.notify import run_due

        run_due(store, settings, utcnow())
    if mailboxes.sending and any(done.result is not None for done in polls):
        # Then send everything due (acknowledgements, replies), in rounds, once for all.
        from mailsupport.outbox.delivery import describe_delivery, flush

        sent = flush(store, settings, utcnow)
        if sent:
            typer.echo(f"outbox: {describe_delivery(sent)}")
    errors: list[MailSupportError] = []
    for done in polls:
        error = done.error
        if error is None and done.result is not None and done.result.flag_error:
            # The mail is stored; the server refused to flag or move it.
            error = ConfigError(done.result.flag_error)
        if error is None:
            continue
        if not named:
            raise error
        errors.append(error)
        line = terminal_text(f"mailbox {done.mailbox.name}: {error}", one_line=True)
        typer.echo(f"mailsupport: {line}", err=True)
    if errors:
        raise typer.Exit(worst_exit_code(errors))


def _tell(done: MailboxPoll, named: bool) -> None:
    """What `poll` did in one mailbox, as lines on stdout."""
    from mailsupport.pipeline import describe

    settings = done.mailbox.settings
    which = f"{done.mailbox.name} ({settings.imap_folder})" if named else settings.imap_folder
    result = done.result
    if result is None:
        where = f"{settings.imap_account}/{settings.imap_folder}"
        prefix = f"poll {which}: " if named else ""
        typer.echo(f"{prefix}another poll of {where} is running; nothing to do")
        return
    note = " (UIDVALIDITY changed: took unread mail only)" if result.uidvalidity_changed else ""
    if result.history_left and result.history is None:  # else the takeover took it
        option = f" --mailbox {done.mailbox.name}" if named else ""
        note += (
            f"; left {result.history_left} older messages: `mailsupport poll{option} --since "
            f"DATE` or `mailsupport poll{option} --all` takes them"
        )
    typer.echo(f"poll {which}: {describe(result.counts)}{note}")
    if result.history is not None:
        prefix = f"poll {which}, " if named else ""
        typer.echo(f"{prefix}older mail, as history: {describe(result.history)}")


def _history_wanted(since: str, take_all: bool) -> str:
    """The takeover `poll` was asked for: "ALL", "since:YYYY-MM-DD" or "" (none)."""
    if since and take_all:
        raise typer.BadParameter("give --since or --all, not both", param_hint="--since")
    if take_all:
        return "ALL"
    if not since:
        return ""
    try:
        return f"since:{date.fromisoformat(since).isoformat()}"
    except ValueError:
        raise typer.BadParameter("needs a date like 2026-01-31", param_hint="--since") from None


@app.command("daemon", rich_help_panel=OPERATOR)
def daemon(ctx: typer.Context) -> None:
    """Take new mail from the IMAP folder of every mailbox as it arrives, until stopped.

    For systemd. Waits with IMAP IDLE when the server offers it, else polls every
    MAILSUPPORT_IMAP_POLL_SECONDS; reconnects on its own after failures. While another
    poller holds a folder it stands by and takes over when that one ends. SIGTERM or SIGINT
    finishes the message in hand and exits 0. Exit 2 on a configuration error at startup.

    With a mailboxes file (MAILSUPPORT_MAILBOXES_FILE) one process watches every mailbox
    that has an IMAP server, each in a thread of its own: a mailbox whose server is down or
    whose sign-in fails holds up none of the others, and one misconfigured at startup is
    logged and tried again slowly; only when all are, it exits 2.

    Examples:
        mailsupport daemon
        mailsupport -v daemon
    """
    from mailsupport.daemon import setup_logging, stop_on_signals
    from mailsupport.daemons import Daemons
    from mailsupport.mailboxes import load_mailboxes

    st = state(ctx)
    settings = st.settings
    mailboxes = load_mailboxes(settings)
    setup_logging(settings, mailboxes)
    worker = Daemons(settings, mailboxes, st.store(), utcnow)
    with stop_on_signals(worker):
        worker.run()
