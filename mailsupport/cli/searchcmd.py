"""`search`: full-text search over subjects and message texts, one line per ticket."""

from __future__ import annotations

import os
import shutil
import sys

import typer

from mailsupport.cli.app import app, print_json, state

AGENT = "Agent"  # the help panel of the agents' commands


@app.command(
    "search",
    rich_help_panel=AGENT,
    # `-word` excludes a word: unknown dashed arguments belong to the query, not to us.
    context_settings={"ignore_unknown_options": True},
)
def search(
    ctx: typer.Context,
    words: list[str] | None = typer.Argument(
        None, metavar="QUERY", help="Words to find; several arguments make one query."
    ),
    status: str | None = typer.Option(
        None, help="Only tickets with this status: new, open, pending, closed."
    ),
    limit: int = typer.Option(20, metavar="N", min=1, help="At most this many tickets."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Find tickets by the words in their messages, best match first.

    Searches the subject and text of every message: customers' mail, our
    replies and internal notes (not attachments, nor our acknowledgements and
    the articles they quote). Each ticket is listed once, with a snippet of
    its message whose text matches best, the matches in [brackets]. A merged
    ticket is found as the one it was merged into.

    Every word must occur, in any of its forms (Russian and English:
    принтеры finds принтер, printers finds printer) and any case; ё and е
    are the same letter. "two words" (quoted inside the shell's quotes) must
    occur together exactly as written; word* matches words that start so (3
    letters or more); -word must not occur; OR between words finds either.
    An address (ivan@example.org) finds the tickets it takes part in, and
    -ivan@example.org leaves them out. Other punctuation only separates
    words. A query has at most 200 words, phrases and addresses. A query that
    matches more than 10,000 messages ranks the newest 10,000 of them: add a
    word, a phrase or an address to find older ones.

    --json gives a list of objects: number, subject and status of the
    ticket; message_id, direction (in, out, note), date (ISO 8601, UTC)
    and snippet of the message whose text matches best; rank of the
    ticket (higher is better, comparable within one search).

    Exit status: 0 tickets found, 1 none found (like grep), 2 no word to
    search for (or too many).

    Examples:
        mailsupport search printer offline
        mailsupport search invoice -draft --json
        mailsupport search '"личный кабинет" парол*' --status open
        mailsupport search ivan@example.org принтер
    """
    from mailsupport.errors import NotFoundError, UsageError
    from mailsupport.search import check_size, parse_query, search_reader
    from mailsupport.store import TICKET_STATUSES
    from mailsupport.store.reader import reading

    text = " ".join(words or []).strip()
    query = parse_query(text)
    if query.empty:
        raise UsageError(
            f"nothing to search for in {text!r}: give a word, e.g. `mailsupport search invoice`"
            if text
            else "nothing to search for: give a word, e.g. `mailsupport search invoice`"
        )
    check_size(query)  # before the database is opened
    if status is not None and status not in TICKET_STATUSES:
        raise UsageError(f"unknown status {status!r}: use one of {', '.join(TICKET_STATUSES)}")
    st = state(ctx)
    # The fast path of `list`: the driver alone, without SQLAlchemy and the models.
    with reading(st.settings.db_url, st.store) as reader:
        hits = search_reader(reader, text, status=status, limit=limit)
    if as_json:
        print_json([hit.as_json() for hit in hits])
        if not hits:
            raise typer.Exit(1)
        return
    if not hits:
        where = f" with status {status}" if status else ""
        raise NotFoundError(f"no ticket{where} matches {text!r}")
    from mailsupport.cli.render import clip, terminal_text

    # Bold matches on a terminal that wants colour; brackets anywhere else.
    bold = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    start, end = ("\x1b[1m", "\x1b[22m") if bold else ("[", "]")
    width = shutil.get_terminal_size((100, 20)).columns
    for hit in hits:
        subject = terminal_text(hit.subject, one_line=True)
        typer.echo(clip(f"#{hit.number:<6}{hit.status:<9}{subject}", width))
        # The text between the marks is the mail's, cleaned; the marks become ours.
        snippet = hit.marked_snippet(start, end, lambda text: terminal_text(text, one_line=True))
        label = "(internal note) " if hit.direction == "note" else ""
        if label or snippet:
            typer.echo(f"      {label}{snippet}")
