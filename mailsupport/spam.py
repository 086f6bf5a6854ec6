"""Is this message spam? The verdicts mail servers already wrote into its headers. No I/O.

SpamAssassin writes X-Spam-Flag and X-Spam-Status, Rspamd X-Spamd-Result and X-Spam (and
often X-Rspamd-Score), and the receiving server's Authentication-Results tells a DMARC failure
of a domain that publishes p=reject: mail its owner asked receivers to refuse. With
MAILSUPPORT_SPAM_SCORE set, a score at or above it is spam even when the server let it pass.

A sender can write any of these headers, but only to harm its own mail: a forged "No" never
counts, as any one "Yes" decides. Only the topmost Authentication-Results is read, as that
is the one our own server wrote.
"""

from __future__ import annotations

import re

from mailsupport.mail import Inbound

__all__ = ["spam_score", "spam_verdict"]

_YES = frozenset({"yes", "true"})
_SPAM_STATUS = re.compile(r"^\s*(yes|no)\b.*?\bscore=(-?\d+(?:\.\d+)?)", re.IGNORECASE | re.DOTALL)
# "default: True [12.30 / 15.00]; ..." (the action may follow: "default: False [2.1 / 15.0]")
_SPAMD_RESULT = re.compile(
    r"^\s*[\w-]+\s*:\s*(true|false)\s*\[\s*(-?\d+(?:\.\d+)?)\s*/", re.IGNORECASE
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_DMARC_FAIL = re.compile(r"\bdmarc\s*=\s*fail\b", re.IGNORECASE)
# OpenDMARC and Gmail "(p=reject ...)", Rspamd "(policy=reject)", RFC 7601's property
# "policy.published-domain-policy=reject"; not "sp=" (the subdomains' policy).
_REJECT_POLICY = re.compile(r"\b(?:p|policy)\s*=\s*reject\b", re.IGNORECASE)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _server_verdicts(message: Inbound) -> list[tuple[str, bool | None, float | None]]:
    """Each spam header as (what it says, spam?, score), in header order."""
    found: list[tuple[str, bool | None, float | None]] = []
    for value in message.header_all("x-spam-flag"):
        found.append((f"X-Spam-Flag: {value}", value.strip().lower() in _YES, None))
    for value in message.header_all("x-spam-status"):
        match = _SPAM_STATUS.match(value)
        if match:
            spam = match.group(1).lower() == "yes"
            found.append((f"X-Spam-Status: {value}", spam, float(match.group(2))))
    for value in message.header_all("x-spamd-result"):
        match = _SPAMD_RESULT.match(value)
        if match:
            spam = match.group(1).lower() == "true"
            found.append((f"X-Spamd-Result: {value}", spam, float(match.group(2))))
    for value in message.header_all("x-spam"):
        found.append((f"X-Spam: {value}", value.strip().lower() in _YES, None))
    # Not X-Spam-Score: some hosts write SpamAssassin's score times ten there.
    for value in message.header_all("x-rspamd-score"):
        number = _NUMBER.match(value.strip())
        if number:
            found.append((f"X-Rspamd-Score: {value}", None, float(number.group(0))))
    return found


def spam_score(message: Inbound) -> float | None:
    """The highest score a spam filter wrote (SpamAssassin, Rspamd), or None."""
    scores = [score for _, _, score in _server_verdicts(message) if score is not None]
    return max(scores) if scores else None


def _dmarc_reject(message: Inbound) -> str | None:
    results = message.header_all("authentication-results")
    if not results:
        return None
    top = results[0]
    if _DMARC_FAIL.search(top) and _REJECT_POLICY.search(top):
        return _short(f"DMARC fails for a domain with p=reject: {top}")
    return None


def spam_verdict(message: Inbound, threshold: float | None = None) -> str | None:
    """Why the message is spam (one short line), or None. `threshold` is
    MAILSUPPORT_SPAM_SCORE: None trusts the server's own verdict alone."""
    verdicts = _server_verdicts(message)
    for what, spam, _ in verdicts:
        if spam:
            return _short(what)
    if threshold is not None:
        for what, _, score in verdicts:
            if score is not None and score >= threshold:
                return _short(
                    f"score {score:g} at or over MAILSUPPORT_SPAM_SCORE {threshold:g} ({what})"
                )
    return _dmarc_reject(message)
