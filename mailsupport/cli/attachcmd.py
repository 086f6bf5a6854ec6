"""`attachments`: list a ticket's attachments, and save them into a directory; and
`db move-attachments`, which moves the stored contents between files and the database.

File names come from mail, written by anyone. Saved files get names that cannot leave the
directory (no separators, no `..`, no leading dot), cannot hide as dot files, carry no
control characters, fit every file system, and never replace or write through anything
already there: each file is created exclusively, without following symbolic links.
"""

from __future__ import annotations

import errno
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer

from mailsupport.cli.app import app, print_json, state, ticket_number
from mailsupport.cli.dbcmd import db_app
from mailsupport.errors import MailSupportError, NotFoundError, UsageError

AGENT = "Agent"
MAX_NAME_BYTES = 200  # leaves room for " (NNN)" within the usual 255-byte limit
MAX_COPIES = 1000  # "name (2).pdf" ... before giving up on a name
_WINDOWS_DEVICES = re.compile(r"(?i)(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)")


def printable(text: str) -> str:
    """`text` without control, format and line-separator characters: safe on a terminal."""
    return "".join(c for c in text if not _invisible(c))


def save_name(name: str, index: int, content_type: str) -> str:
    """A file name for saving an attachment: one plain name inside the target directory.

    Builds on the parser's `safe_filename` (basename only, no controls, no reserved
    characters, no leading dots) and adds what only matters when writing a file: no lone
    surrogates, no Windows device names, and a bound in bytes rather than characters."""
    from mailsupport.parsing import safe_filename

    # Undecodable bytes survive as lone surrogates, which no file system takes.
    text = name.encode("utf-8", "replace").decode("utf-8")
    text = safe_filename(printable(text), index, content_type)
    stem = text.partition(".")[0]
    if _WINDOWS_DEVICES.fullmatch(stem.rstrip(" ")):
        text = "_" + text  # "nul.txt" is the null device on Windows, whatever follows
    return _fit(text, MAX_NAME_BYTES)


def _invisible(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp")


def _fit(name: str, limit: int) -> str:
    """`name` cut to `limit` UTF-8 bytes, keeping a short extension, never mid-character."""
    if len(name.encode("utf-8")) <= limit:
        return name
    root, ext = os.path.splitext(name)
    if len(ext.encode("utf-8")) > 16:
        root, ext = name, ""
    room = limit - len(ext.encode("utf-8"))
    cut = root.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(". ")
    return (cut or "attachment") + ext


def _numbered(name: str, copy: int) -> str:
    if copy == 1:
        return name
    root, ext = os.path.splitext(name)
    return f"{root} ({copy}){ext}"


class _Directory:
    """A directory opened once: files are created relative to it, so a rename or a symlink
    swapped in for a path component later cannot redirect them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        if os.open in os.supports_dir_fd:
            flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
            self.fd = os.open(path, flags)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def create(self, name: str, chunks: Iterable[bytes]) -> str:
        """Write the pieces to a new file named `name`, or `name (2)`, ...; return the name
        used. Never replaces a file and never follows a symbolic link (O_EXCL refuses both).
        An OSError means the name was refused: once it is open, a failure to write is a
        MailSupportError (and the half-written file is removed)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        flags |= getattr(os, "O_NOFOLLOW", 0)
        for copy in range(1, MAX_COPIES + 1):
            candidate = _fit(_numbered(name, copy), MAX_NAME_BYTES + 16)
            try:
                fd = self._open(candidate, flags)
            except FileExistsError:
                continue
            try:
                with os.fdopen(fd, "wb") as handle:
                    for piece in chunks:
                        handle.write(piece)
            except OSError as error:
                self._unlink(candidate)
                why = error.strerror or error
                raise MailSupportError(f"cannot write into {self.path}: {why}") from None
            except BaseException:
                self._unlink(candidate)  # no half-written file left behind
                raise
            return candidate
        raise MailSupportError(
            f"{self.path} already has {MAX_COPIES} files named like {name!r}: "
            "save into an empty directory"
        )

    def _open(self, name: str, flags: int) -> int:
        if self.fd is not None:
            return os.open(name, flags, 0o666, dir_fd=self.fd)
        return os.open(self.path / name, flags, 0o666)

    def _unlink(self, name: str) -> None:
        try:
            if self.fd is not None:
                os.unlink(name, dir_fd=self.fd)
            else:
                (self.path / name).unlink()
        except OSError:
            pass


def _target(directory: Path) -> _Directory:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return _Directory(directory)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"--save {directory}: not a directory") from None
    except OSError as error:
        raise MailSupportError(f"cannot use {directory}: {error.strerror or error}") from None


def _save(target: _Directory, part: dict[str, Any], index: int, chunks: Iterable[bytes]) -> str:
    name = save_name(part["filename"], index, part["content_type"])
    try:
        return target.create(name, chunks)
    except OSError as error:
        if error.errno not in _NAME_REFUSED:
            raise MailSupportError(
                f"cannot write into {target.path}: {error.strerror or error}"
            ) from None
    # A file system stricter than ours (FAT, a network share) refused the name itself.
    return target.create(save_name("", index, part["content_type"]), chunks)


_NAME_REFUSED = {errno.EINVAL, errno.EILSEQ, errno.ENAMETOOLONG}


@app.command("attachments", rich_help_panel=AGENT)
def attachments(
    ctx: typer.Context,
    number: int = typer.Argument(
        ..., metavar="N", parser=ticket_number, help="Ticket number: 12 or #12."
    ),
    save: Path | None = typer.Option(
        None,
        "--save",
        metavar="DIR",
        help="Save every attachment into DIR (created if missing), under safe file names; "
        "existing files are never replaced: a copy gets a number, like `name (2).pdf`.",
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """List a ticket's attachments, or save them into a directory with --save DIR.

    Each line shows the message it came with ([1] is the first, as in `show`). Saved
    files are named after the attachment, cleaned so that no name can reach outside DIR.

    Examples:
        mailsupport attachments 12
        mailsupport attachments 12 --save ~/tickets/12
    """
    from mailsupport.cli.render import terminal_text
    from mailsupport.store.attachments import attachment_store
    from mailsupport.store.files import AttachmentDamaged, AttachmentMissing
    from mailsupport.store.queries import messages_of, ticket_by_number
    from mailsupport.store.reader import reading

    st = state(ctx)
    with reading(st.settings.db_url, st.store) as reader:
        ticket = ticket_by_number(reader, number)
        if ticket is None:
            raise NotFoundError(f"no ticket #{number} (see `mailsupport list`)")
        messages = messages_of(reader, [ticket.id]).get(ticket.id, [])
    found: list[dict[str, Any]] = [
        {"message": position, "message_id": message["message_id"], **part}
        for position, message in enumerate(messages, 1)
        for part in message["attachments"]
    ]
    if save is not None:
        target = _target(save)
        try:
            # Each content streams from wherever it is kept (a file, or the database a
            # piece at a time) into its file.
            with attachment_store(st.settings).reading(st.store()) as read:
                for index, part in enumerate(found, 1):
                    try:
                        chunks = read(part["sha256"])
                    except (AttachmentMissing, ValueError) as error:
                        part["error"] = f"its stored content is missing: {error}"
                        continue
                    except OSError as error:
                        why = error.strerror or str(error)
                        part["error"] = f"its stored file is unreadable: {why}"
                        continue
                    try:
                        part["saved_as"] = str(save / _save(target, part, index, chunks))
                    except AttachmentDamaged as error:  # nothing of it is left in DIR
                        part["error"] = str(error)
        finally:
            target.close()
    failed = [part for part in found if "error" in part]
    if as_json:
        print_json(found)
    elif not found:
        typer.echo(f"ticket #{ticket.number} has no attachments")
    else:
        for part in found:
            inline = ", inline" if part["inline"] else ""
            line = (
                f"[{part['message']}] {printable(part['filename'])} "
                f"({part['content_type']}, {part['size']} bytes{inline})"
            )
            if "saved_as" in part:
                line += f" -> {printable(part['saved_as'])}"
            # The names were made printable above (no format characters either, as when
            # saving); the whole line goes through the one terminal cleaner all the same.
            typer.echo(terminal_text(line, one_line=True))
    for part in failed:
        typer.echo(
            terminal_text(
                f"mailsupport: [{part['message']}] {printable(part['filename'])} not saved: "
                f"{part['error']} (is MAILSUPPORT_DATA_DIR the directory the mail was stored "
                "in?)",
                one_line=True,
            ),
            err=True,
        )
    if failed:
        raise typer.Exit(1)


@db_app.command("move-attachments")
def move_attachments(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", metavar="PLACE", help="Where they go: database, or files."),
    delete_source: bool = typer.Option(
        False,
        "--delete-source",
        help="Remove each one from where it was, once its copy is checked.",
    ),
) -> None:
    """Move stored attachments into the database, or out of it into files.

    Each one is copied and its sha256 checked before anything else happens; the original
    is removed only with --delete-source. Reading finds an attachment in either place,
    so daemons keep working while this runs. Stopped at any point (Ctrl-C, kill), it has
    lost nothing: run it again and it goes on where it stopped. Set
    MAILSUPPORT_ATTACHMENTS to the same place on every host, so new ones go there too.

    Examples:
        mailsupport db move-attachments --to database
        mailsupport db move-attachments --to database --delete-source
        mailsupport db move-attachments --to files --delete-source
    """
    from mailsupport.store.attachments import PLACES, move, place_for

    place = to.strip().lower()
    if place not in PLACES:
        raise UsageError(f"--to {to!r}: use database or files")
    st = state(ctx)
    moved = move(st.settings, st.store(), place, delete_source=delete_source)
    where = "the database" if place == "database" else f"{st.settings.data_dir / 'attachments'}"
    line = f"copied {moved.copied} attachments ({moved.bytes} bytes) to {where}"
    line += f"; {moved.present} were there already"
    if delete_source:
        line += f"; removed {moved.removed} from where they were"
    typer.echo(line)
    if place_for(st.settings) != place:
        typer.echo(
            f"mailsupport: note: MAILSUPPORT_ATTACHMENTS makes new attachments go to the "
            f"{place_for(st.settings)} here: set it to {place} on every host",
            err=True,
        )
    for digest in moved.damaged:
        typer.echo(
            f"mailsupport: attachment {digest} is damaged (its content is not what its sha256 "
            "says): left where it is",
            err=True,
        )
    for digest in moved.missing:
        typer.echo(
            f"mailsupport: attachment {digest} is stored nowhere (is MAILSUPPORT_DATA_DIR the "
            "directory the mail was stored in?)",
            err=True,
        )
    if moved.damaged or moved.missing:
        raise typer.Exit(1)
