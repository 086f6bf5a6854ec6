"""Who sends an outbox item: the SMTP server (and the IMAP Sent folder) of the mailbox it was
queued for (`outbox.mailbox`, see mailboxes.py). One connection per mailbox for a run, opened
when its first item is sent; without a mailboxes file there is one, the desk's.
"""

from __future__ import annotations

from datetime import timedelta

from mailsupport.config import Settings
from mailsupport.mailboxes import load_mailboxes
from mailsupport.outbox.sentcopies import SentCopies
from mailsupport.outbox.smtp import SmtpConnection


class Senders:
    def __init__(self, settings: Settings) -> None:
        self.mailboxes = load_mailboxes(settings)
        self._smtp: dict[str, SmtpConnection] = {}
        self._copies: dict[str, SentCopies] = {}

    @property
    def budget(self) -> timedelta:
        """The longest one send may take with any mailbox's SMTP settings."""
        slowest = max(box.settings.smtp_timeout for box in self.mailboxes.all)
        return timedelta(seconds=4 * slowest)

    @property
    def any_smtp(self) -> bool:
        return self.mailboxes.sending

    def name(self, mailbox: str) -> str:
        """The mailbox an item's `mailbox` names (the default one for "" or a gone one)."""
        return self.mailboxes.of_ticket(mailbox).name

    def settings(self, mailbox: str) -> Settings:
        return self.mailboxes.of_ticket(mailbox).settings

    def smtp(self, mailbox: str) -> SmtpConnection:
        name = self.name(mailbox)
        if name not in self._smtp:
            self._smtp[name] = SmtpConnection(self.settings(name))
        return self._smtp[name]

    def copies(self, mailbox: str) -> SentCopies:
        name = self.name(mailbox)
        if name not in self._copies:
            self._copies[name] = SentCopies(self.settings(name))
        return self._copies[name]

    def close(self) -> None:
        for smtp in self._smtp.values():
            smtp.close()
        for copies in self._copies.values():
            copies.close()
