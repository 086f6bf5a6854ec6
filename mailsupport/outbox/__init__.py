"""The outbox: outgoing mail is queued in the database, then delivered over SMTP with retries.

The modules, from the bottom: `queue` (what callers use inside their own transaction),
`admin` (listing and retrying, for operators), `smtp` (the connection and its verdicts),
`sentcopies` (copies in the IMAP Sent folder) and `delivery` (`deliver_due`). This package
imports none of them, so that queueing mail never loads delivery.

`queue` writes the exact bytes to send in the caller's transaction, the one that makes the
ticket change causing the mail (a transactional outbox): the mail exists if and only if the
change does. `deliver_due` sends what is due, separately, and may run in several processes:

1. Claim: one short write transaction marks due rows as ours (`claim_token`, and a lease in
   `claimed_until`). The UPDATE repeats the "free or expired" condition and its rowcount is
   checked, so of two senders racing for a row exactly one wins. A sender that dies keeps
   its rows only until the lease runs out; the next run sends them, with the same bytes and
   so the same Message-ID.
2. Send: one SMTP connection for the batch (aiosmtplib; the event loop lives only inside
   `smtp.SmtpConnection`, so the rest of this module and its callers stay synchronous).
3. Record: one short write transaction per message, and only while the claim is still ours.

Mail to one ticket leaves in the order it was queued, so a customer never gets the closing
notice before the reply it follows, nor a reply before the acknowledgement. An item is
claimed only together with every earlier queued item of its ticket, and sent after them; when
an earlier one is not sent in a run (it waits for a retry), the later ones of that ticket are
given back unattempted ("held") and wait behind it. Only queued mail holds mail back: an item
that failed for good, or was sent, does not. Other tickets' mail is not held up.

Temporary failures (4xx, no connection, timeouts, a dropped connection) are retried with
exponential backoff until SMTP_MAX_AGE after the message was queued; permanent ones (5xx)
fail at once. Both are recorded on the ticket as a `delivery-failed` event. A configuration
problem (no host, login refused, untrusted certificate, MAILSUPPORT_SMTP_SECURITY not what the
port speaks) leaves the mail queued and raises ConfigError: it is ours to fix, not the
recipient's.

Delivery is at least once: a sender that dies after the server accepted a message but before
recording it sends it again after the lease (with the same Message-ID, so mail clients show
one message). SMTP itself offers nothing better.

A copy of every sent message goes to MAILSUPPORT_IMAP_SENT_FOLDER when that is set (and
MAILSUPPORT_IMAP_HOST too), so mail clients on the support mailbox show the desk's answers:
the stored bytes, flagged \\Seen, dated when they were sent, over one IMAP connection per run
(opened at the first message sent, not at all when the setting is empty). The copy is made
right after the message is recorded as sent, and only when it is sent for the first time
(`sent_at` was empty): an `outbox retry` that reaches a recipient refused before adds no
second copy. A copy is a convenience and is never retried: when the IMAP server is down or
refuses, one warning is logged, delivery goes on and its counts are unchanged. So a crash
between recording "sent" and the APPEND, or an IMAP outage during a run, loses those copies
(never mail, and never a copy twice); keeping them for later would need a "copied" column.
"""
