"""Spam verdicts read from the headers mail servers write (spam.py), over real-world-shaped
SpamAssassin, Rspamd and DMARC fixtures and single headers."""

from __future__ import annotations

import pytest

from mailsupport.mail import Inbound
from mailsupport.parsing import parse
from mailsupport.spam import spam_score, spam_verdict
from tests.support.paths import MAIL
from tests.unit.test_automated_mail import message

AR = "Authentication-Results: mx.example.com; "


def load(name: str) -> Inbound:
    return parse((MAIL / "spam" / name).read_bytes())


@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("spamassassin_flagged.eml", "X-Spam-Flag: YES"),
        ("rspamd_flagged.eml", "X-Spamd-Result: default: True [15.20 / 15.00]; ABUSE_SURBL"),
        ("rspamd_below_threshold.eml", None),
        ("dmarc_reject_forged.eml", "DMARC fails for a domain with p=reject"),
        ("customer_spam_status_no.eml", None),
    ],
)
def test_server_verdicts(name: str, verdict: str | None) -> None:
    found = spam_verdict(load(name))
    if verdict is None:
        assert found is None
    else:
        assert found is not None and found.startswith(verdict), found
        assert len(found) <= 80 and "\n" not in found


def test_scores_and_the_threshold() -> None:
    assert spam_score(load("spamassassin_flagged.eml")) == 9.4
    assert spam_score(load("rspamd_below_threshold.eml")) == 6.8
    assert spam_score(load("customer_spam_status_no.eml")) == 1.2
    assert spam_score(load("dmarc_reject_forged.eml")) is None
    below = load("rspamd_below_threshold.eml")
    assert spam_verdict(below, 7.0) is None
    assert spam_verdict(below, 6.8) == (
        "score 6.8 at or over MAILSUPPORT_SPAM_SCORE 6.8 (X-Spamd-Result: default: False…"
    )
    assert spam_verdict(load("customer_spam_status_no.eml"), 5.0) is None


@pytest.mark.parametrize(
    ("header", "spam"),
    [
        ("X-Spam-Flag: YES", True),
        ("X-Spam-Flag: yes", True),
        ("X-Spam-Flag: NO", False),
        ("X-Spam-Status: Yes, score=5.1 required=5.0 tests=BAYES_80", True),
        ("X-Spam-Status: No, score=4.9 required=5.0 tests=BAYES_80", False),
        ("X-Spamd-Result: default: True [16.00 / 15.00]", True),
        ("X-Spamd-Result: default: False [3.00 / 15.00]", False),
        ("X-Spam: Yes", True),
        ("X-Spam: No", False),
        (
            AR + "dmarc=fail (p=REJECT sp=NONE) header.from=x.example",
            True,
        ),
        (
            AR + "dmarc=fail (policy=reject) header.from=x.example",
            True,
        ),
        (
            AR + "dmarc=fail policy.published-domain-policy=reject header.from=x.example",
            True,
        ),
        (
            AR + "dmarc=fail (p=none sp=reject) header.from=x.example",
            False,
        ),
        (
            AR + "dmarc=fail (p=quarantine) header.from=x.example",
            False,
        ),
        (
            AR + "dmarc=pass (p=reject) header.from=x.example",
            False,
        ),
    ],
)
def test_single_headers(header: str, spam: bool) -> None:
    assert (spam_verdict(message(header)) is not None) is spam


def test_a_forged_no_never_outweighs_a_yes() -> None:
    m = message("X-Spam-Flag: NO", "X-Spam-Flag: YES")
    assert spam_verdict(m) == "X-Spam-Flag: YES"


def test_only_the_topmost_authentication_results_counts() -> None:
    # Lower ones were written before our server, maybe by the sender itself.
    m = message(
        AR + "dmarc=pass header.from=customer.example.org",
        "Authentication-Results: evil.example; dmarc=fail (p=reject) header.from=x.example",
    )
    assert spam_verdict(m) is None


def test_no_headers_no_verdict() -> None:
    assert spam_verdict(message()) is None
    assert spam_verdict(message(), 0.0) is None
