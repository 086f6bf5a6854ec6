"""`report`: statistics of requests over a time range, as tables, JSON or an HTML page."""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path

import typer

from mailsupport.cli.app import app, print_json, state, utcnow

AGENT = "Agent"  # the help panel of the agents' commands


@app.command("report", rich_help_panel=AGENT)
def report(
    ctx: typer.Context,
    since: str | None = typer.Option(
        None,
        "--since",
        metavar="WHEN",
        help="Start: a UTC day (2026-03-01) or a time back from now (30d, 2w, 12h)."
        " Default: 30d, the last 30 days with today.",
    ),
    until: str | None = typer.Option(
        None,
        "--until",
        metavar="WHEN",
        help="End: a UTC day, included (2026-03-31), or a time back from now. Default: now.",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object for scripts."),
    html_file: str | None = typer.Option(
        None,
        "--html",
        metavar="FILE",
        help="Write a self-contained HTML page with charts to FILE ('-': standard output).",
    ),
    top: int = typer.Option(
        10, "--top", metavar="N", min=1, help="Senders, domains and topics to list."
    ),
) -> None:
    """Statistics of the tickets created in a time range.

    Volume per day and per ISO week; tickets by queue, type, priority and
    line; first-response and resolution times (median and 90th percentile,
    nearest-rank); SLA breaches; the backlog at the end of each day; top
    senders and domains; and the most frequent problems: words and phrases
    that recur across subjects and first messages, Russian and English
    inflections folded together, each with example tickets. Over more than
    50,000 tickets the topics are found on an even sample of them; each
    topic's ticket count and examples are still counted over all.

    Days are UTC days and --since/--until are UTC. A date as --until
    includes that day. 30d is the last 30 days with today; 12h is exactly
    12 hours. Merged tickets are left out. Tickets opened by automatic
    mail (bounces, auto-replies, list mail) are no work: they are left out
    of every figure and counted apart.

    --json prints one object: report_version (2); generated_at; range
    (since, until: ISO 8601 UTC, until excluded; days; time_zone "UTC");
    tickets (created in the range); volume.per_day (date, tickets) and
    volume.per_week (week like 2026-W10, start, days_in_range, tickets);
    by_queue, by_type, by_priority, by_line: lists of objects like
    {"queue": "billing", "tickets": 12} ("" for no queue or type);
    first_response and resolution (measured, median_seconds,
    p90_seconds: null when nothing is measured); sla.first_response and
    sla.resolution (with_target, breached, still_waiting, by_priority: the
    same per priority); backlog (date, open); top_senders (address,
    tickets); top_domains (domain, tickets); topics (label, tickets,
    terms: other words merged into it, examples: number and subject of up
    to 5 latest tickets); automatic (tickets opened by automatic mail,
    by_kind: kind, tickets).

    With --html FILE the terminal gets one line saying what was written;
    add --json to get the JSON as well.

    Examples:
        mailsupport report
        mailsupport report --since 7d --json
        mailsupport report --since 2026-03-01 --until 2026-03-31 --html march.html
    """
    from mailsupport.cli.render import terminal_safe
    from mailsupport.errors import MailSupportError, UsageError
    from mailsupport.report import Topic, build_report, parse_period, render_html, render_text
    from mailsupport.report.database import load_tickets
    from mailsupport.report.topicsworker import topics_aside, topics_of
    from mailsupport.store.reader import reading

    if html_file == "-" and as_json:
        raise UsageError("--html - and --json both want standard output: give --html a file")
    now = utcnow()
    period = parse_period(since, until, now)
    st = state(ctx)
    # A year of a big desk is millions of small objects, all kept to the end: the cyclic
    # garbage collector would walk them again and again, for nothing (they hold no cycles).
    collecting = gc.isenabled()
    gc.disable()
    try:
        # The topics in a second process (report/topicsworker.py), the rest here.
        with topics_aside(st.settings.db_url, period, top) as pending_topics:

            def topics() -> list[Topic]:
                found = pending_topics()
                if found is None:  # found here after all
                    found = topics_of(st.settings.db_url, st.store, period, top)
                return found

            with reading(st.settings.db_url, st.store) as reader:  # the driver alone, as `list`
                facts = load_tickets(reader, period.since, period.until, words=False)
            data = build_report(facts, period, now, top=top, topics=topics)
    finally:
        if collecting:
            gc.enable()
    # Subjects, addresses and domains come from mail: the page and the tables get them
    # cleaned of control characters; --json gets them as they are, for scripts.
    shown = terminal_safe(data)

    if html_file == "-":
        typer.echo(render_html(shown), nl=False)
        return
    if html_file:
        path = Path(html_file)
        partial = path.with_name(f".{path.name}.tmp")
        try:  # a reader never sees half a page, and a failure leaves the old one
            partial.write_text(render_html(shown), encoding="utf-8")
            os.replace(partial, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise MailSupportError(f"cannot write {html_file}: {error.strerror or error}") from None
    if as_json:
        print_json(data)
    elif html_file:
        tickets, days = data["tickets"], data["range"]["days"]
        typer.echo(
            f"wrote {html_file}: {tickets} ticket{'' if tickets == 1 else 's'},"
            f" {days} day{'' if days == 1 else 's'}"
        )
    else:
        typer.echo(render_text(shown), nl=False)
