"""The support mailbox: `poll` once (cron), and later `daemon`, `status`, `doctor`."""

from __future__ import annotations

from datetime import date

import typer

from mailsupport.cli.app import app, state, utcnow
from mailsupport.errors import ConfigError

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
) -> None:
    """Take new mail from the IMAP folder once, then exit (for cron).

    The first poll leaves the mail already in the folder (MAILSUPPORT_IMAP_START=new) and
    says how much. --since or --all takes that older mail once, as history: dated by its own
    Date, no due times, no acknowledgement. Taking it again takes nothing.

    Exit 0 when done or when another poll of the same folder is running, 2 on a
    configuration error, 75 when the server or the database is unavailable for now.

    Examples:
        mailsupport poll
        mailsupport --config /etc/mailsupport/settings.env poll
        mailsupport poll --since 2026-01-01
        mailsupport poll --all
    """
    from mailsupport.pipeline import describe
    from mailsupport.poll import poll_once

    st = state(ctx)
    settings = st.settings
    store = st.store()
    result = poll_once(settings, store, utcnow, history=_history_wanted(since, take_all))
    if result is None:
        where = f"{settings.imap_account}/{settings.imap_folder}"
        typer.echo(f"another poll of {where} is running; nothing to do")
        return
    note = " (UIDVALIDITY changed: took unread mail only)" if result.uidvalidity_changed else ""
    if result.history_left and result.history is None:  # else the takeover took it
        note += (
            f"; left {result.history_left} older messages: "
            "`mailsupport poll --since DATE` or `mailsupport poll --all` takes them"
        )
    typer.echo(f"poll {settings.imap_folder}: {describe(result.counts)}{note}")
    if result.history is not None:
        typer.echo(f"older mail, as history: {describe(result.history)}")
    if settings.smtp_host:  # then send everything due (acknowledgements, replies), in rounds
        from mailsupport.outbox.delivery import describe_delivery, flush

        sent = flush(store, settings, utcnow)
        if sent:
            typer.echo(f"outbox: {describe_delivery(sent)}")
    if result.flag_error:  # the mail is stored; the server refused to flag or move it
        raise ConfigError(result.flag_error)


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
    """Take new mail from the IMAP folder as it arrives, until stopped (for systemd).

    Waits with IMAP IDLE when the server offers it, else polls every
    MAILSUPPORT_IMAP_POLL_SECONDS; reconnects on its own after failures. While another poller
    holds the folder it stands by and takes over when that one ends. SIGTERM or SIGINT
    finishes the message in hand and exits 0. Exit 2 on a configuration error at startup.

    Examples:
        mailsupport daemon
        mailsupport -v daemon
    """
    from mailsupport.daemon import Daemon, setup_logging, stop_on_signals

    st = state(ctx)
    settings = st.settings
    setup_logging(settings)
    worker = Daemon(settings, st.store(), utcnow)
    with stop_on_signals(worker):
        worker.run()
