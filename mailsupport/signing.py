"""Our Message-IDs, signed: made for all our mail, recognised in every reply to it.

A Message-ID of ours ends in an HMAC token of the rest, so a reference to it proves the
sender saw our mail (the customer, or whoever they forwarded it to) without a database
lookup, and one made up by a stranger proves nothing. Both directions use it: compose.py
signs what we send, the pipeline checks what arrives. The key is MAILSUPPORT_SECRET, or a
file in the data directory made on first use.
"""

from __future__ import annotations

import base64
import errno
import hmac
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mailsupport.errors import ComposeError, ConfigError

SECRET_FILE = "secret"
_TOKEN_LENGTH = 10  # base32 characters of the HMAC: 50 bits


def ascii_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".")
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ComposeError(f"invalid mail domain {domain!r}") from None


def _token(secret: bytes, body: str) -> str:
    digest = hmac.digest(secret, body.encode("utf-8"), "sha256")
    # Base32 writes each 5 bytes as 8 characters on its own: the first 10 characters of the
    # whole digest's are those of its first 10 bytes (b32encode is Python, per 5 bytes).
    return base64.b32encode(digest[:10]).decode("ascii")[:_TOKEN_LENGTH].lower()


def make_message_id(secret: bytes, domain: str, now: datetime | None = None) -> str:
    """A new Message-ID of ours, without angle brackets: `[time.]random.token@domain`.

    `token` is an HMAC of the part before it, so `is_our_message_id` can tell our own IDs
    from forged ones without a database. The time, when given, only helps people reading
    logs; the 80 random bits make the ID unique.
    """
    if not secret:
        raise ValueError("the Message-ID secret is empty")
    body = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    if now is not None:
        body = f"{now.astimezone(UTC):%Y%m%d%H%M%S}.{body}"
    return f"{body}.{_token(secret, body)}@{ascii_domain(domain).lower()}"


def is_our_message_id(message_id: str, secret: bytes, domain: str) -> bool:
    """Whether `message_id` (with or without brackets) was made by `make_message_id` with
    this secret and domain. Constant-time comparison of the token."""
    if not secret:
        return False
    value = message_id.strip().removeprefix("<").removesuffix(">")
    local, at, found_domain = value.rpartition("@")
    try:
        wanted = ascii_domain(domain).lower()
    except ComposeError:
        return False
    if not at or found_domain.lower() != wanted:
        return False
    body, dot, token = local.rpartition(".")
    if not dot or not body or not body.isascii() or not token.isascii():
        return False
    if len(token) != _TOKEN_LENGTH:
        return False
    return hmac.compare_digest(token, _token(secret, body))


def make_notice_id(
    secret: bytes, domain: str, ticket_number: int, agent_address: str, now: datetime
) -> str:
    """The Message-ID of a notification to an agent: `n<ticket>.<time>.<random>.<token>@domain`.

    Its token is an HMAC of the rest together with the agent's address: a reply carrying it
    from that address proves the agent answers about that ticket (`notice_ticket`). The token
    differs from `make_message_id`'s, so the ID is not one of our customer mail's: it lets no
    one into a ticket's conversation."""
    if not secret:
        raise ValueError("the Message-ID secret is empty")
    random_part = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    body = f"n{ticket_number}.{now.astimezone(UTC):%Y%m%d%H%M%S}.{random_part}"
    token = _token(secret, _notice_body(body, agent_address))
    return f"{body}.{token}@{ascii_domain(domain).lower()}"


def notice_ticket(message_id: str, secret: bytes, agent_address: str) -> int | None:
    """The ticket number of a notification's Message-ID made for `agent_address` with this
    secret (any domain: each mailbox sends from its own), or None."""
    value = message_id.strip().removeprefix("<").removesuffix(">")
    local, at, _ = value.rpartition("@")
    body, dot, token = local.rpartition(".")
    number = body.partition(".")[0].removeprefix("n")
    if not (secret and at and dot and body.startswith("n") and number.isdigit()):
        return None
    if not body.isascii() or len(token) != _TOKEN_LENGTH:
        return None
    if not hmac.compare_digest(token, _token(secret, _notice_body(body, agent_address))):
        return None
    return int(number)


def _notice_body(body: str, agent_address: str) -> str:
    return f"notice {agent_address.strip().lower()} {body}"


def load_or_create_secret(data_dir: Path, configured: str | None) -> bytes:
    """The key for our Message-ID tokens.

    MAILSUPPORT_SECRET when set; else `data_dir/secret`, created on first use with 32
    random bytes (written as 64 hex digits, mode 0600), so every process sharing the data
    directory uses the same key. Copy the file's content into MAILSUPPORT_SECRET to share
    the key with hosts that do not share the directory: both give the same key.
    """
    if configured and configured.strip():
        return configured.strip().encode("utf-8")
    from mailsupport.store.files import private_dir  # the data directory's rules, on first use

    path = data_dir / SECRET_FILE
    try:
        existing = _read_secret(path)
        if existing is not None:
            return existing
        private_dir(data_dir)
        _create_secret(path, secrets.token_hex(32) + "\n")
        created = _read_secret(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read or create the secret file {path}: {exc.strerror or exc} "
            "(check MAILSUPPORT_DATA_DIR, or set MAILSUPPORT_SECRET)"
        ) from None
    if created is None:  # pragma: no cover - removed between creating and reading
        raise ConfigError(f"the secret file {path} disappeared while it was being created")
    return created


def _read_secret(path: Path) -> bytes | None:
    try:
        value = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    if not value:
        raise ConfigError(
            f"the secret file {path} is empty: delete it to have a new one made "
            "(replies to mail sent before then still thread by their Message-IDs)"
        )
    return value


def _create_secret(path: Path, value: str) -> None:
    """Write the file complete under a temporary name, then link it into place: readers
    never see it half written, and the first of several racing processes wins."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(value)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process was first: use its secret
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            _create_exclusive(path, value)  # a file system without hard links
    finally:
        os.unlink(temporary)
    _fsync_dir(path.parent)


def _create_exclusive(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(value)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system syncs directories; the file itself is synced
    finally:
        os.close(fd)
