"""The desk's mailboxes: the addresses it serves, each with its own IMAP (and SMTP) settings.

MAILSUPPORT_MAILBOXES_FILE names a TOML file with one [[mailbox]] table per mailbox (see the
README). Without it, the MAILSUPPORT_IMAP_* settings and SUPPORT_ADDRESS are one mailbox
named `default`. Each Mailbox carries a whole Settings of its own: the desk's, with the
mailbox's IMAP, SMTP and OAuth2 keys, its address as SUPPORT_ADDRESS, its display name,
language and templates, and every other address of the desk as an alias (mail from any of
them is ours). So the code that works on one mailbox takes its `settings` as before.

Which mailbox a message belongs to is decided by the address it was sent to (`route`).
"""

from __future__ import annotations

import re
import tomllib
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mailsupport.config import Settings
from mailsupport.errors import ConfigError, UsageError
from mailsupport.mail import Inbound
from mailsupport.parsing.addresses import address_pairs

DEFAULT = "default"
# A mailbox's own keys; every other key is a setting's name without MAILSUPPORT_.
OWN_KEYS = ("name", "address", "aliases", "display_name", "queue", "language", "templates_dir")
# Settings a mailbox may give itself: where its mail is and how to sign in there.
SETTING_PREFIXES = ("imap_", "smtp_", "oauth_")
# And single settings a mailbox may choose for its tickets.
SETTING_KEYS = ("reply_status",)
# A password kept in a file of its own (read once, a trailing newline dropped).
PASSWORD_FILES = {"imap_password_file": "imap_password", "smtp_password_file": "smtp_password"}
# The headers that say to which address a message was delivered, most precise first.
ROUTING_HEADERS = ("delivered-to", "x-original-to")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_ADDRESS = re.compile(r"[^@\s<>,]+@[^@\s<>,]+")


@dataclass(frozen=True)
class Mailbox:
    name: str
    address: str
    aliases: tuple[str, ...]
    display_name: str
    queue: str
    settings: Settings  # the desk's settings as this mailbox sees them (module doc)

    @property
    def addresses(self) -> tuple[str, ...]:
        """Its address and aliases, lowercased."""
        return tuple(a.lower() for a in (self.address, *self.aliases) if a)

    @property
    def polled(self) -> bool:
        """It has a folder to poll (a mailbox may only take mail from `ingest`)."""
        return bool(self.settings.imap_host)


class Mailboxes:
    """Every mailbox of the desk, by name and by address."""

    def __init__(self, boxes: Iterable[Mailbox]) -> None:
        self.all = tuple(boxes)
        self._by_name = {box.name.lower(): box for box in self.all}
        self._by_address = {a: box for box in self.all for a in box.addresses}

    @property
    def default(self) -> Mailbox:
        """The mailbox of tickets that name none (filed before there were several)."""
        return self._by_name.get(DEFAULT, self.all[0])

    @property
    def sending(self) -> bool:
        """Whether any mailbox can send mail (has an SMTP server)."""
        return any(box.settings.smtp_host for box in self.all)

    @property
    def our_addresses(self) -> frozenset[str]:
        return frozenset(self._by_address)

    def named(self, name: str) -> Mailbox:
        """The mailbox called `name`; UsageError naming the others when there is none."""
        found = self._by_name.get(name.strip().lower())
        if found is None:
            names = ", ".join(box.name for box in self.all)
            raise UsageError(f"no mailbox named {name!r} (the mailboxes: {names})")
        return found

    def of_ticket(self, name: str) -> Mailbox:
        """The mailbox a ticket was filed in; the default one when it names none, or one
        that is no longer in the file."""
        return self._by_name.get(name.lower(), self.default) if name else self.default

    def for_address(self, address: str) -> Mailbox | None:
        """The mailbox that `address` reaches: its address or an alias, or with
        plus-addressing the mailbox named by the tag (support+billing@ -> `billing`) when
        the address without it is ours, else that address's mailbox."""
        key = address.strip().lower()
        found = self._by_address.get(key)
        if found is not None or "+" not in key.partition("@")[0]:
            return found
        local, _, domain = key.partition("@")
        base, _, tag = local.partition("+")
        plain = self._by_address.get(f"{base}@{domain}")
        if plain is None:
            return None
        return self._by_name.get(tag, plain)

    def place(self, message: Inbound, named: str, home: Mailbox, ours: bool) -> Mailbox:
        """The mailbox of a new ticket: the one `named` by the source, else (for our own mail)
        the one it was sent from, else the one it was sent to, else `home`: the mailbox it
        came in through."""
        if named:
            return self.named(named)
        if ours and message.from_ is not None:
            found = self.for_address(message.from_.address)
            if found is not None:
                return found
        return self.route(message) or home

    def route(self, message: Inbound) -> Mailbox | None:
        """The mailbox a message was sent to: by Delivered-To, X-Original-To, To, then Cc
        (the first of our addresses found); None when it names none of them (Bcc, a list)."""
        for header in ROUTING_HEADERS:
            for _name, address in address_pairs(message.header_all(header)):
                found = self.for_address(address)
                if found is not None:
                    return found
        for recipient in (*message.to, *message.cc):
            found = self.for_address(recipient.address)
            if found is not None:
                return found
        return None


# A mailbox's settings -> the desk's mailboxes they were made for: loading the mailboxes
# from one mailbox's settings must give the desk's, not the file read anew on top of them.
_DESK_OF: weakref.WeakKeyDictionary[Settings, Mailboxes] = weakref.WeakKeyDictionary()


def load_mailboxes(settings: Settings) -> Mailboxes:
    """The desk's mailboxes: from MAILSUPPORT_MAILBOXES_FILE, or the one `default`. A bad
    file is one ConfigError naming the file, the line and the key. Given one mailbox's
    settings, the mailboxes they belong to."""
    known = _DESK_OF.get(settings)
    if known is not None:
        return known
    if not settings.mailboxes_file:
        box = Mailbox(
            name=DEFAULT,
            address=settings.support_address,
            aliases=tuple(a.strip() for a in settings.support_aliases.split(",") if a.strip()),
            display_name=settings.support_name,
            queue="",
            settings=settings,
        )
        return Mailboxes([box])
    desk = _MailboxesFile(Path(settings.mailboxes_file), settings).read()
    for box in desk.all:
        _DESK_OF[box.settings] = desk
    return desk


class _MailboxesFile:
    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.lines: list[str] = []

    def read(self) -> Mailboxes:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"MAILSUPPORT_MAILBOXES_FILE {self.path}: {error.strerror or error}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"mailboxes file {self.path} is not UTF-8 text") from None
        self.lines = text.splitlines()
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"mailboxes file {self.path}: {error}") from None
        for key in data:
            if key != "mailbox":
                raise self._error(None, key, "unknown table: each mailbox is a [[mailbox]] table")
        tables = data.get("mailbox")
        if not isinstance(tables, list) or not tables:
            raise ConfigError(f"mailboxes file {self.path}: no [[mailbox]] table")
        raw = [self._own(index, table) for index, table in enumerate(tables)]
        self._check_unique(raw)
        every = [a for own, _ in raw for a in (own["address"], *own["aliases"])]
        return Mailboxes(self._mailbox(index, own, keys, every) for index, (own, keys) in
                         enumerate(raw))  # fmt: skip

    def _own(self, index: int, table: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The mailbox's own keys, checked, and its settings keys (as written)."""
        if not isinstance(table, dict):
            raise self._error(index, "mailbox", "must be a table")
        own: dict[str, Any] = {}
        keys: dict[str, Any] = {}
        for key, value in table.items():
            if key in OWN_KEYS:
                own[key] = value
            elif (
                key in PASSWORD_FILES
                or key in SETTING_KEYS
                or (key.startswith(SETTING_PREFIXES) and key in Settings.model_fields)
            ):
                keys[key] = value
            else:
                raise self._error(index, key, "unknown key" + _did_you_mean(key))
        name = own.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise self._error(
                index, "name", "needed: letters, digits, '.', '_' or '-', like billing"
            )
        for key in ("address",):
            value = own.get(key)
            if not isinstance(value, str) or not _ADDRESS.fullmatch(value.strip()):
                raise self._error(index, key, "needed: a bare address like support@example.com")
            own[key] = value.strip()
        aliases = own.get("aliases", [])
        if isinstance(aliases, str):
            aliases = [a for a in re.split(r"[,\s]+", aliases) if a]
        if not isinstance(aliases, list) or not all(
            isinstance(a, str) and _ADDRESS.fullmatch(a.strip()) for a in aliases
        ):
            raise self._error(index, "aliases", "must be a list of bare addresses")
        own["aliases"] = tuple(a.strip() for a in aliases)
        for key in ("display_name", "queue", "language", "templates_dir"):
            if key in own and not isinstance(own[key], str):
                raise self._error(index, key, "must be a string")
        return own, keys

    def _check_unique(self, raw: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        names: set[str] = set()
        addresses: dict[str, str] = {}
        for index, (own, _) in enumerate(raw):
            if own["name"].lower() in names:
                raise self._error(index, "name", f"{own['name']!r} names two mailboxes")
            names.add(own["name"].lower())
            for key, value in [("address", own["address"])] + [("aliases", a) for a in
                                                                own["aliases"]]:  # fmt: skip
                other = addresses.get(value.lower())
                if other is not None:
                    raise self._error(index, key, f"{value} is an address of mailbox {other!r} too")
                addresses[value.lower()] = own["name"]

    def _mailbox(
        self, index: int, own: dict[str, Any], keys: dict[str, Any], every: list[str]
    ) -> Mailbox:
        base = self.settings
        values: dict[str, Any] = {}
        for key, value in keys.items():
            if key in PASSWORD_FILES:
                values[PASSWORD_FILES[key]] = self._password_file(index, key, value)
            else:
                values[key] = value
        values["support_address"] = own["address"]
        values["support_name"] = own.get("display_name") or base.support_name
        # Its own aliases and every other address of the desk: mail from any of them is ours.
        values["support_aliases"] = ", ".join(
            a for a in every if a.lower() != own["address"].lower()
        )
        for key in ("language", "templates_dir"):
            if key in own:
                values[key] = own[key]
        try:
            settings = Settings.model_validate({**base.model_dump(), **values})
        except ValidationError as error:
            first = error.errors()[0]
            key = str(first["loc"][0]) if first["loc"] else "mailbox"
            if key == "support_address":
                key = "address"
            raise self._error(index, key, first["msg"]) from None
        return Mailbox(
            name=own["name"],
            address=own["address"],
            aliases=own["aliases"],
            display_name=settings.support_name,
            queue=own.get("queue", ""),
            settings=settings,
        )

    def _password_file(self, index: int, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self._error(index, key, "must be a file name")
        try:
            return Path(value).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not readable as UTF-8 text"
            raise self._error(index, key, f"{value}: {reason}") from None

    def _error(self, index: int | None, key: str, problem: str) -> ConfigError:
        line = self._line_of(index, key)
        where = f"line {line}, " if line else ""
        which = f"mailbox {index + 1}, " if index is not None else ""
        return ConfigError(f"mailboxes file {self.path}: {where}{which}{key}: {problem}")

    def _line_of(self, index: int | None, key: str) -> int | None:
        """The line of `key` in the index-th [[mailbox]] table (or anywhere, for None)."""
        seen = -1
        pattern = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number, line in enumerate(self.lines, start=1):
            if re.match(r"\s*\[\[\s*mailbox\s*\]\]", line):
                seen += 1
                if index is not None and seen == index and key == "mailbox":
                    return number
                continue
            if (index is None or seen == index) and pattern.match(line):
                return number
        return None


def _did_you_mean(key: str) -> str:
    import difflib

    known = [*OWN_KEYS, *PASSWORD_FILES, *SETTING_KEYS]
    known += [k for k in Settings.model_fields if k.startswith(SETTING_PREFIXES)]
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
