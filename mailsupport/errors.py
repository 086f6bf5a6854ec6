"""Error taxonomy. Each class carries the process exit code the CLI uses for it."""

from __future__ import annotations


class MailSupportError(Exception):
    """A foreseeable failure with a one-line message for the user."""

    exit_code = 1


class ConfigError(MailSupportError):
    """A missing or invalid setting, or an unusable configuration file."""

    exit_code = 2


class UsageError(MailSupportError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = 2


class SourceError(MailSupportError):
    """A mail source (path, mailbox, server) cannot be read."""

    exit_code = 1


class NotFoundError(MailSupportError):
    """A ticket, message or quarantine entry that does not exist."""

    exit_code = 1


class RefusedError(MailSupportError):
    """The action does not apply: closing a closed ticket, merging a ticket into itself, ..."""

    exit_code = 1


class TemporaryError(MailSupportError):
    """Try again later: the database is locked or unreachable, the disk is full, ..."""

    exit_code = 75  # EX_TEMPFAIL: MTAs and cron wrappers retry


class PermanentError(MailSupportError):
    """Retrying will not help."""

    exit_code = 1


class SchemaError(MailSupportError):
    """The database schema is not the one this version of mailsupport expects."""

    exit_code = 2


class ComposeError(PermanentError):
    """Our mail cannot be composed as asked (no recipient, an invalid address, ...)."""


class GrantRevoked(ConfigError):
    """An OAuth2 server no longer honours the desk's stored sign-in: a person must sign in
    again (`mailsupport auth login`)."""
