"""Writing a reply or a note: the text from -m, --file or $EDITOR, and what guards it.

The editor opens on a draft like `git commit`'s: the agent writes above a marker line, and
below it reads what they answer (who gets it, how the template frames the text, the latest
messages). Text an agent wrote is never lost: when sending fails, or they stop because the
ticket changed while they wrote, it is kept in a file and the error says where.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mailsupport.cli.render import local_time, terminal_text
from mailsupport.errors import RefusedError, UsageError

if TYPE_CHECKING:
    from mailsupport.desk import Conversation
    from mailsupport.drafting import Frame
    from mailsupport.store.models import Message

MARKER = "# ------------------------ >8 ------------------------"
# The first lines of each new message shown when the ticket changed while the agent wrote.
NEWS_LINES = 4


def given_text(message: str | None, file: str | None) -> str | None:
    """The text of -m or --file (- for standard input); None when neither was given."""
    if message is not None and file is not None:
        raise UsageError("give the text with -m or --file, not both")
    if message is not None:
        return message
    if file == "-":
        return sys.stdin.read()
    if file is not None:
        try:
            return Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read {file}: {error}") from None
    return None


def joined(parts: Sequence[str], what: str) -> str:
    """The non-empty `parts`, a blank line apart, without surrounding blank lines; an empty
    result does nothing (RefusedError)."""
    text = "\n\n".join(p.strip("\n").rstrip() for p in parts if p.strip())
    if not text.strip():
        raise RefusedError(f"empty {what}: nothing done")
    return text


def context(found: Conversation) -> tuple[str, str]:
    """The ticket's name and its latest messages, for the editor to show below the marker."""
    lines = []
    for m in found.messages:
        lines += ["", *_heading(m), ""]
        lines += [f"   {line}".rstrip() for line in m.text.splitlines()]
    t = found.ticket
    title = f'#{t.number} "{t.subject}" from {t.requester or "nobody"}'
    return title, "\n".join(lines)


def framed(frame: Frame) -> str:
    """How the template frames the agent's text, as lines below the marker: the greeting
    and the signature are there already, so that nobody types them twice."""
    if not frame.greeting and not frame.signature:
        return ""
    shown = [*frame.greeting, "", "[your text]", "", *frame.signature]
    if frame.more:
        shown.append("[...]")
    lines = ["", "#", "# The reply template puts a greeting and a signature around your text:"]
    return "\n".join([*lines, "#", *(f"#     {line}".rstrip() for line in shown), ""])


def edit(title: str, what: str, below: str, prefill: str = "") -> str:
    """Open $VISUAL or $EDITOR on a draft and return what was written above the marker."""
    import shlex
    import subprocess
    import tempfile

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    draft = "\n".join(
        [
            f"\n\n{prefill}\n" if prefill else "",
            MARKER,
            f"# Write your {what} above the line; everything below it is ignored.",
            f"# This is the {title}.",
            "# Leave it empty to cancel.",
            below,
            "",
        ]
    )
    with tempfile.NamedTemporaryFile(
        "w", suffix=".txt", prefix=f"mailsupport-{what}-", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(draft)
        path = Path(handle.name)
    try:
        try:
            done = subprocess.run([*shlex.split(editor), str(path)], check=False)
        except OSError as error:
            raise UsageError(
                f"cannot start the editor {editor!r}: {error.strerror or error} "
                "(set VISUAL or EDITOR, or use -m or --file)"
            ) from None
        if done.returncode != 0:
            raise RefusedError(f"the editor exited with status {done.returncode}: nothing done")
        written = path.read_text(encoding="utf-8", errors="replace")
    finally:
        path.unlink(missing_ok=True)
    return written.split(MARKER, 1)[0]


def keep(text: str, what: str) -> str:
    """Save the agent's text in a file of its own; its path."""
    import tempfile

    with tempfile.NamedTemporaryFile(
        "w", suffix=".txt", prefix=f"mailsupport-{what}-", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text + "\n")
    return handle.name


@contextlib.contextmanager
def kept_on_failure(text: str, what: str) -> Iterator[None]:
    """If what follows fails, keep the agent's text in a file and say where: nobody wants
    to type a long reply twice."""
    try:
        yield
    except Exception:
        typer.echo(f"mailsupport: your {what} text is kept in {keep(text, what)}", err=True)
        raise


def check_news(number: int, news: Sequence[Message], text: str, *, force: bool) -> None:
    """Before sending a reply written in the editor: when messages arrived on the ticket
    meanwhile (the customer wrote, another agent answered or left a note), show them and
    ask whether to send anyway. Without a terminal to ask on, refuse unless `force`; when
    not sent, the text is kept in a file."""
    if not news:
        return
    many = f"{len(news)} new messages" if len(news) > 1 else "a new message"
    lines = [f"mailsupport: ticket #{number} got {many} while you wrote:"]
    for m in news:
        lines += ["", *_heading(m)]
        body = [line for line in m.text.splitlines() if line.strip()]
        lines += [f"   {line}" for line in body[:NEWS_LINES]]
        if len(body) > NEWS_LINES:
            lines.append("   [...]")
    typer.echo(terminal_text("\n".join(lines)), err=True)
    typer.echo("", err=True)
    if force:
        typer.echo("mailsupport: sending anyway (--force)", err=True)
        return
    if interactive() and typer.confirm("Send your reply anyway?", default=False, err=True):
        return
    path = keep(text, "reply")
    raise RefusedError(
        f"ticket #{number} changed while you wrote: nothing sent; your reply is kept in "
        f"{path} (`mailsupport reply {number} --file {path}` sends it; --force sends "
        "without asking)"
    )


def interactive() -> bool:
    """Whether someone at a terminal can answer a question."""
    return sys.stdin.isatty()


def _heading(m: Message) -> list[str]:
    arrow = {"in": "<<", "out": ">>"}.get(m.direction, "-- internal note,")
    who = m.author or (f"{m.from_name} <{m.from_address}>" if m.from_name else m.from_address)
    return [f"{arrow} {who}  {local_time(m.received_at)}"]
