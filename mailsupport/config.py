"""Settings, read once at the edge (environment and an env file) and passed down."""

from __future__ import annotations

import os
import re
from datetime import date
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, DotEnvSettingsSource, SettingsConfigDict

from mailsupport.errors import ConfigError
from mailsupport.threads import DEFAULT_TICKET_TAG, tag_pattern_of

ENV_PREFIX = "MAILSUPPORT_"
DEFAULT_ENV_FILE = "settings.env"
EXAMPLE_FILE = "settings.example.env"
# Names the settings file: read from the environment by _env_file, not a field.
CONFIG_VARIABLE = ENV_PREFIX + "CONFIG"
# Reserved for the test suite and CI, never read by mailsupport: .ci/run exports
# MAILSUPPORT_TEST_DATABASE_URL for the whole run, and a developer's shell may keep it. No
# setting may start with TEST_ (tests/unit/test_settings_mistakes.py checks).
RESERVED_ENV_PREFIX = ENV_PREFIX + "TEST_"
# name[+driver]:// at the start of a database URL.
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\+(\w+))?://")
# [USER[:PASSWORD]@]HOST[:PORT] after the scheme, each part ending where SQLAlchemy ends it:
# the password after the user's first colon, up to the first @.
_URL_AUTHORITY = re.compile(
    r"(?:[^:/]*(?::(?P<password>[^@]*))?@)?(?P<host>\[[^/?]*\]|[^/:?]*)(?::(?P<port>[^/?]*))?"
)
# The module behind a SQLAlchemy driver name, where the two differ.
_DRIVER_MODULES = {"pysqlite": "sqlite3", "pysqlcipher": "sqlcipher3", "psycopg_async": "psycopg"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        case_sensitive=False,
        frozen=True,
        env_file_encoding="utf-8",  # as load_settings says, whatever the locale
    )

    data_dir: Path = Path("./mailsupport-data")
    database_url: str = ""
    # Where attachment contents are kept: "files" under DATA_DIR/attachments, "database" in
    # the database itself (several hosts then need only DATABASE_URL), or "auto": the
    # database on PostgreSQL, files on SQLite. `db move-attachments` moves them.
    attachments: Literal["auto", "files", "database"] = "auto"
    support_address: str = ""
    support_name: str = "Support"
    # Other addresses that deliver into this desk; mail from them counts as ours.
    support_aliases: str = ""
    # A TOML file of the desk's mailboxes, one [[mailbox]] each (see mailboxes.py and the
    # README); "" = one mailbox, `default`, from SUPPORT_ADDRESS and the IMAP_* settings.
    mailboxes_file: str = ""
    max_message_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    # Processes that parse incoming mail ("auto" = one per core, at most 4; 0 = parse in
    # the main process, without a time limit), and the time limit on one message (seconds).
    parse_workers: int | None = Field(default=None, ge=0, le=64)
    parse_timeout: float = Field(default=60.0, gt=0)
    ticket_tag: str = DEFAULT_TICKET_TAG
    log_level: str = "WARNING"
    # A directory of mail templates that replace the built-in ones file by file ("" = none).
    templates_dir: str = ""
    # The language of our mail: en, ru, or auto (the customer's, from their message).
    language: Literal["auto", "en", "ru"] = "auto"
    # Keys the HMAC token in our Message-IDs; "" = generated into DATA_DIR/secret.
    secret: SecretStr = SecretStr("")
    # At most this many acknowledgements per sender within ACK_WINDOW; 0 turns them off.
    ack_limit: int = Field(default=3, ge=0)
    ack_window: int = Field(default=24 * 3600, gt=0)  # seconds, or 24h-style (see _duration)
    # At most this many acknowledgements of mail from one From domain within ACK_WINDOW
    # (forged senders of one organisation); 0 = no domain limit.
    ack_domain_limit: int = Field(default=20, ge=0)
    # Mail providers shared by unrelated people: no domain limit there, where it would only
    # measure the provider's popularity (the per-address limits still hold).
    ack_shared_domains: str = (
        "gmail.com, googlemail.com, outlook.com, hotmail.com, live.com, msn.com, yahoo.com, "
        "icloud.com, me.com, aol.com, proton.me, protonmail.com, gmx.de, gmx.net, web.de, "
        "yandex.ru, ya.ru, mail.ru, inbox.ru, list.ru, bk.ru, rambler.ru"
    )

    # Who is working: the name recorded with every change (`--as NAME` wins; "" = login name).
    agent: str = ""
    # How registered agents hear about their tickets (`agent add --notify` overrides it per
    # agent): "instant" (a mail per event), "digest:30m" (at most one mail per interval), "off".
    notify: str = "instant"
    # Agents are told when a ticket's first answer or resolution falls due within this long
    # (like 1h, 30m); "" = never.
    sla_warning: str = "1h"
    # A customer's mail to a ticket closed longer than this many days opens a new ticket that
    # links the old one; 0 = always reopen the closed ticket.
    reopen_days: int = Field(default=0, ge=0)
    # `close` mails the customer the `closed` notice (unless --silent); false = never.
    closed_notice: bool = True
    # The status a reply leaves a new, open or pending ticket in when the agent names none:
    # pending (waiting for the customer; their answer opens it again), open, or closed.
    reply_status: Literal["pending", "open", "closed"] = "pending"
    # Spam: a spam filter's score at or above this is spam even when the mail server let it
    # pass; unset = the server's own verdict (X-Spam-Flag, X-Spam-Status, X-Spamd-Result...).
    spam_score: float | None = None
    # `spam --purge` deletes spam tickets not updated for this many days (their mail stays in
    # the quarantine); 0 = never.
    spam_days: int = Field(default=0, ge=0)
    # A reference (or subject tag) to a ticket from a sender who takes part in it neither as a
    # participant nor by quoting one of our signed Message-IDs: "new-ticket" opens a new
    # ticket that links it; "join" lets it join (anyone who knows a Message-ID can write in).
    stranger_replies: Literal["new-ticket", "join"] = "new-ticket"
    # At most this many addresses from one message's From, To and Cc become participants of
    # its ticket (the rest are only shown with the message).
    max_participants: int = Field(default=20, ge=1, le=1000)

    # The folder of knowledge-base articles (see kb/README.md); "" = no knowledge base.
    kb_dir: str = ""
    # How relevant (0..1) an article must be to be suggested in an acknowledgement.
    kb_threshold: float = Field(default=0.3, ge=0, le=1)
    # At most this many articles suggested in an acknowledgement; 0 = none.
    kb_suggestions: int = Field(default=3, ge=0, le=10)

    # Classification rules for new tickets (TOML, see the README); "" = none.
    rules_file: str = ""
    # Team addresses told when a ticket is escalated to their line: "2=l2@example.com, ...".
    line_addresses: str = ""
    # SLA targets per priority ("" = none) and the hours they count in ("" = round the clock).
    sla_first_response: str = "urgent=1h, high=4h, normal=1d, low=3d"
    sla_resolution: str = "urgent=1d, high=3d, normal=5d, low=10d"
    timezone: str = "UTC"  # of the business hours (an IANA name like Europe/Moscow)
    business_hours: str = ""

    imap_host: str = ""
    imap_port: int = Field(default=0, ge=0, le=65535)  # 0: 993 for ssl, 143 otherwise
    imap_user: str = ""
    imap_password: SecretStr = SecretStr("")
    imap_security: Literal["ssl", "starttls", "none"] = "ssl"
    imap_folder: str = "INBOX"
    imap_processed_folder: str = ""
    imap_quarantine_folder: str = ""
    imap_batch: int = Field(default=200, ge=1, le=10000)
    imap_poll_seconds: int = Field(default=60, ge=1)
    imap_start: str = "new"
    imap_timeout: int = Field(default=60, ge=1)
    # The daemon's longest wait between attempts after the server or the database failed.
    imap_retry_max_seconds: int = Field(default=300, ge=1)
    # Where a copy of every sent message is appended ("" = nowhere), e.g. "Sent".
    imap_sent_folder: str = ""

    smtp_host: str = ""
    smtp_port: int = Field(default=0, ge=0, le=65535)  # 0: 465 for ssl, 587 starttls, 25 none
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_security: Literal["ssl", "starttls", "none"] = "starttls"
    # Seconds; "2d", "36h", "90m" and "45s" are accepted too (see _duration).
    smtp_max_age: int = Field(default=2 * 24 * 3600, gt=0)
    smtp_timeout: int = Field(default=60, ge=1)

    # Sign-in to the IMAP and SMTP servers: "password", or "oauth2" with the OAUTH_* settings
    # below (see mailsupport/oauth/ and the README's OAuth2 section).
    imap_auth: Literal["password", "oauth2"] = "password"
    smtp_auth: Literal["password", "oauth2"] = "password"
    oauth_provider: Literal["", "microsoft", "google", "generic"] = ""
    oauth_client_id: str = ""
    oauth_client_secret: SecretStr = SecretStr("")
    # Microsoft: the directory (tenant) ID or a verified domain.
    oauth_tenant: str = "organizations"
    oauth_scopes: str = ""  # space-separated; "" = the provider's default for the flow
    oauth_token_url: str = ""  # "" = the provider's (required for generic)
    oauth_device_url: str = ""
    # "" = service-account with a key file, client-credentials with a secret, else device-code.
    oauth_flow: Literal["", "client-credentials", "device-code", "service-account"] = ""
    oauth_key_file: str = ""  # Google: the service account's JSON key

    @field_validator("ticket_tag")
    @classmethod
    def _tag_has_one_number(cls, value: str) -> str:
        if value.count("{number}") != 1:
            raise ValueError("must contain {number} exactly once, like [#{number}]")
        if not value.replace("{number}", "").strip():
            raise ValueError("needs some text around {number}, like [#{number}]")
        return value

    @field_validator("support_address")
    @classmethod
    def _address_shape(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", value):
            raise ValueError("must be a bare address like support@example.com")
        return value

    @field_validator("imap_start")
    @classmethod
    def _start_choice(cls, value: str) -> str:
        value = value.strip().lower()
        if value in {"new", "unseen", "all"}:
            return value
        if value.startswith("since:"):
            try:
                date.fromisoformat(value.removeprefix("since:"))
            except ValueError:
                raise ValueError("since: needs a date like since:2026-01-31") from None
            return value
        raise ValueError("must be new, unseen, all or since:YYYY-MM-DD")

    @field_validator(
        "language",
        "reply_status",
        "stranger_replies",
        "imap_auth",
        "smtp_auth",
        "oauth_provider",
        "oauth_flow",
        mode="before",
    )
    @classmethod
    def _lowercase_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("smtp_max_age", "ack_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        """Whole seconds, or a number with one unit: 2d, 36h, 90m, 45s."""
        if not isinstance(value, str):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([dhms]?)\s*", value.lower())
        if not match:
            raise ValueError("must be seconds, or a number with d, h, m or s, like 2d or 36h")
        number, unit = match.groups()
        return int(number) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}[unit]

    @field_validator("sla_first_response", "sla_resolution")
    @classmethod
    def _targets(cls, value: str) -> str:
        from mailsupport.sla import parse_targets

        parse_targets(value)  # ValueError names the bad part
        return value

    @field_validator("notify")
    @classmethod
    def _notify(cls, value: str) -> str:
        from mailsupport.team import parse_notify

        return str(parse_notify(value))  # ValueError names the bad value

    @field_validator("sla_warning")
    @classmethod
    def _sla_warning(cls, value: str) -> str:
        from mailsupport.sla import parse_duration

        if value.strip():
            parse_duration(value)
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone: use a name like Europe/Moscow or UTC") from None
        return value.strip()

    @field_validator("business_hours")
    @classmethod
    def _hours(cls, value: str, info: Any) -> str:
        from mailsupport.sla import parse_hours

        parse_hours(value, info.data.get("timezone", "UTC"))
        return value

    @field_validator("ack_shared_domains")
    @classmethod
    def _domains(cls, value: str) -> str:
        _parse_domains(value)
        return value

    @cached_property
    def shared_domains(self) -> frozenset[str]:
        """ACK_SHARED_DOMAINS, lowercased."""
        return _parse_domains(self.ack_shared_domains)

    @field_validator("line_addresses")
    @classmethod
    def _line_addresses(cls, value: str) -> str:
        _parse_line_addresses(value)
        return value

    @property
    def team_addresses(self) -> dict[int, str]:
        """Line number -> the address told when a ticket is escalated to that line."""
        return _parse_line_addresses(self.line_addresses)

    @field_validator("parse_workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "auto") else value

    @field_validator("spam_score", mode="before")
    @classmethod
    def _spam_score_off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "off") else value

    @property
    def parse_workers_or_default(self) -> int:
        """PARSE_WORKERS, or one per core (at most 4) when it is auto."""
        if self.parse_workers is not None:
            return self.parse_workers
        # One worker per core the process may use (the main process mostly waits on the
        # database meanwhile), at most four: beyond that the main process is the limit.
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, min(cores, 4))

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        return normalize_database_url(value)

    @property
    def db_url(self) -> str:
        """DATABASE_URL, or SQLite in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'mailsupport.db').resolve()}"

    @property
    def templates_path(self) -> Path | None:
        return Path(self.templates_dir) if self.templates_dir else None

    @property
    def imap_port_or_default(self) -> int:
        return self.imap_port or (993 if self.imap_security == "ssl" else 143)

    @property
    def smtp_port_or_default(self) -> int:
        return self.smtp_port or {"ssl": 465, "starttls": 587, "none": 25}[self.smtp_security]

    @property
    def imap_account(self) -> str:
        """Names the mailbox in the ledger and in messages: user@host:port."""
        return f"{self.imap_user}@{self.imap_host}:{self.imap_port_or_default}"

    @cached_property
    def our_addresses(self) -> frozenset[str]:
        """Every address of this desk, lowercased."""
        found = {a.strip().lower() for a in self.support_aliases.split(",") if a.strip()}
        if self.support_address:
            found.add(self.support_address.lower())
        return frozenset(found)

    @cached_property
    def tag_pattern(self) -> re.Pattern[str]:
        """Matches the ticket tag in a subject (threads.tag_pattern_of)."""
        return tag_pattern_of(self.ticket_tag)

    def format_tag(self, number: int) -> str:
        return self.ticket_tag.replace("{number}", str(number))


def _parse_domains(value: str) -> frozenset[str]:
    found: set[str] = set()
    for item in filter(None, (x.strip().lower().lstrip("@").rstrip(".") for x in value.split(","))):
        if not re.fullmatch(r"[^\s@,/:]+\.[^\s@,/:.]+", item):
            raise ValueError(f"{item!r}: write domain names separated by commas, like gmail.com")
        found.add(item)
    return frozenset(found)


def _parse_line_addresses(value: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for item in filter(None, (x.strip() for x in value.split(","))):
        line, equals, address = item.partition("=")
        if not equals or not line.strip().isdigit() or "@" not in address:
            raise ValueError(f"{item!r}: write line=address, like 2=second-line@example.com")
        found[int(line)] = address.strip()
    return found


def normalize_database_url(url: str) -> str:
    """The URL with the driver mailsupport uses; ValueError (never quoting the URL, which holds
    the password) for what cannot work. Light on purpose: no SQLAlchemy, which then parses
    the rest (see store.db.create_db_engine)."""
    url = url.strip()
    if not url:
        return url
    match = _URL_SCHEME.match(url)
    if not match:
        raise ValueError(
            "not a database URL: write postgresql://USER:PASSWORD@HOST/DBNAME, "
            "or leave it empty for SQLite in MAILSUPPORT_DATA_DIR"
        )
    backend, driver = match[1].lower(), (match[2] or "").lower()
    if backend == "postgres":  # libpq's and Heroku's spelling; SQLAlchemy knows postgresql only
        backend = "postgresql"
    if backend == "postgresql":
        # psycopg 3 is the driver we install; SQLAlchemy 2.0 would pick psycopg2 for plain
        # postgresql://, and no other driver is tested.
        driver = driver or "psycopg"
        instead = "write postgresql:// to use psycopg (version 3), which mailsupport installs"
    elif backend == "sqlite":
        instead = "write sqlite:///PATH, or leave it empty for SQLite in MAILSUPPORT_DATA_DIR"
    else:
        raise ValueError(
            f"{backend} is not supported: use PostgreSQL (postgresql://USER:PASSWORD@HOST/DBNAME)"
            " or SQLite (leave it empty)"
        )
    if driver and driver != "psycopg" and find_spec(_DRIVER_MODULES.get(driver, driver)) is None:
        raise ValueError(f"the {driver} driver is not installed: {instead}")
    # An @ left in the host means the password holds one, and the server's "cannot resolve
    # host" would show the password's tail; SQLAlchemy's own port error can quote it too.
    authority = _URL_AUTHORITY.match(url, match.end())
    if authority and "@" in authority["host"]:
        raise ValueError("an @ in the password must be written as %40 (and a % as %25)")
    if authority and authority["port"] and not authority["port"].isdigit():
        raise ValueError("the port must be a number, as in postgresql://USER:PASSWORD@HOST:5432/DB")
    return f"{backend}{'+' + driver if driver else ''}{url[match.end() - 3 :]}"


def database_url_password(url: str) -> str:
    """The password of a database URL as written ("" without one), read as SQLAlchemy reads
    it: urlsplit stops at a / and takes the last @, so it can see only part of it."""
    scheme = _URL_SCHEME.match(url)
    authority = _URL_AUTHORITY.match(url, scheme.end()) if scheme else None
    return (authority["password"] or "") if authority else ""


def _env_file(config_path: str | None) -> Path | None:
    """--config PATH, else MAILSUPPORT_CONFIG, else ./settings.env when it exists."""
    explicit = config_path or os.environ.get(CONFIG_VARIABLE)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                f"configuration file not found: {path} (check --config or MAILSUPPORT_CONFIG)"
            )
        return path
    default = Path(DEFAULT_ENV_FILE)
    return default if default.is_file() else None


def load_settings(config_path: str | None = None, **overrides: Any) -> Settings:
    """Build Settings; any problem becomes one ConfigError line naming the key."""
    env_file = _env_file(config_path)
    try:
        _check_names(env_file)
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"configuration file is not UTF-8 text: {env_file}") from None


def _check_names(env_file: Path | None) -> None:
    """A MAILSUPPORT_* name that is no setting is a typo: pydantic would ignore it, and the
    setting meant would silently keep its default. Names are case-insensitive, as in Settings."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {CONFIG_VARIABLE}
    for name in sorted(os.environ):
        upper = name.upper()
        reserved = upper.startswith(RESERVED_ENV_PREFIX)
        if upper.startswith(ENV_PREFIX) and upper not in known and not reserved:
            raise ConfigError(_unknown(name, "in the environment", known))
    if env_file is None:
        return
    # Read as Settings reads it (same parser, same encoding), keeping the names as written.
    source = DotEnvSettingsSource(
        Settings, env_file=env_file, env_file_encoding="utf-8", case_sensitive=True
    )
    for name in source.env_vars:
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known:
            raise ConfigError(_unknown(name, f"in {env_file}", known))


def _unknown(name: str, where: str, known: set[str]) -> str:
    import difflib

    # Compared without the prefix, which every name shares and would make all look alike.
    short = {key.removeprefix(ENV_PREFIX): key for key in known}
    close = difflib.get_close_matches(name.upper().removeprefix(ENV_PREFIX), short, n=1)
    if close:
        hint = f"did you mean {short[close[0]]}?"
    else:
        hint = f"no setting has a similar name; {EXAMPLE_FILE} lists them all"
    return f"unknown setting {name} {where} ({hint})"


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ENV_PREFIX + str(error["loc"][0]).upper() if error["loc"] else "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    # The database URL holds its password, in a form no pattern can reliably blank out.
    secret = any(word in key for word in ("PASSWORD", "SECRET", "DATABASE_URL"))
    shown = f" (got {value!r})" if isinstance(value, str | int) and not secret else ""
    return f"invalid setting {key}: {message}{shown}"
