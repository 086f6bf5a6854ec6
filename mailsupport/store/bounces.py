"""Bounces of our own mail: which outgoing message failed, and recording it.

A delivery report rarely threads by its own headers (the returned message, not the report,
carries our Message-ID), so the pipeline asks here first: a bounce that names one of our
outbox messages joins that message's ticket, the ticket gets a `delivery-failed` event,
and the outbox item is marked failed for the recipients the bounce names.
What the bounce says is read by mailsupport/bounces.py, which needs no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from mailsupport.bounces import BounceInfo, bounce_info
from mailsupport.mail import Inbound
from mailsupport.store.models import OutboxItem
from mailsupport.store.tickets import record_event


@dataclass(frozen=True, slots=True)
class Bounced:
    item: OutboxItem
    info: BounceInfo

    @property
    def reason(self) -> str:
        return f"delivery report on our <{self.item.message_id}>"


def find_bounced(session: Session, message: Inbound) -> Bounced | None:
    """The outgoing message of ours this bounce reports on, if it is one."""
    info = bounce_info(message)
    if info is None or not info.original_message_ids:
        return None
    item = session.exec(
        select(OutboxItem)
        .where(col(OutboxItem.message_id).in_(info.original_message_ids))
        .order_by(col(OutboxItem.id))
    ).first()
    return None if item is None else Bounced(item, info)


def record_bounce(session: Session, bounced: Bounced, now: datetime) -> None:
    """Note the failure on the ticket and on the outbox item. A delay report ("will retry")
    only notes; the message may still arrive."""
    item, info = bounced.item, bounced.info
    why = ": ".join(part for part in (info.status, info.diagnostic) if part) or "no reason given"
    addressed = {r.lower(): r for r in item.recipients}
    failed = [addressed[r] for r in info.recipients if r in addressed] or list(item.recipients)
    what = f"{item.kind} <{item.message_id}> to {', '.join(failed)}"
    assert item.ticket_id is not None
    if info.permanent is False:
        record_event(session, item.ticket_id, "delivery-delayed", f"{what} delayed: {why}", now)
        return
    status = dict(item.recipient_status)
    for rcpt in failed:
        status[rcpt] = f"bounced: {why}"
    item.recipient_status = status
    item.last_error = f"bounced: {why}"[:2000]
    if all(status.get(r, "sent") != "sent" for r in item.recipients):
        # Nobody got it: failed, even though our server had accepted it.
        item.status = "failed"
        item.claimed_until = item.claim_token = None
    session.add(item)
    record_event(session, item.ticket_id, "delivery-failed", f"{what} bounced: {why}", now)
