"""Which ticket an incoming message goes to: threads.py decides, from what the store knows of
its Message-IDs, its subject tag and its sender (looked up here)."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import Session

from mailsupport.config import Settings
from mailsupport.mail import Inbound
from mailsupport.store import tickets as db
from mailsupport.threads import ThreadDecision, decide_thread, find_tag


def thread(
    session: Session,
    message: Inbound,
    references: list[str],
    settings: Settings,
    signed_by_us: Callable[[str], bool],
    *,
    outgoing: bool,
    trusted: bool = True,
    facts: db.ThreadFacts | None = None,
) -> ThreadDecision:
    """Where the message goes. An untrusted sender (not clear who it is, or our own address
    without our signature) is a stranger everywhere: no ticket counts it as a participant,
    and even our signed references do not let it in. `facts`: db.thread_facts() of the
    message's own ID and `references` with its sender's address, when the caller has them."""
    tag_number = find_tag(message.subject, settings.tag_pattern)
    # Locked (PostgreSQL): who takes part in it is read below (store/claims.py).
    tag_ticket = (
        db.ticket_by_number(session, tag_number, locked=True) if tag_number is not None else None
    )
    tag_id = tag_ticket.id if tag_ticket else None
    sender = message.from_
    address = sender.address if sender is not None else ""
    if facts is None:
        facts = db.thread_facts(session, [message.message_id, *references], address)
    known = facts.known
    linked = set(known.values()) | ({tag_id} if tag_id is not None else set())
    numbers = dict(facts.numbers)
    if tag_ticket is not None and tag_ticket.number:
        numbers[tag_ticket.id] = tag_ticket.number  # type: ignore[index]
    if outgoing:  # our own copy (a Sent folder): we take part in every ticket
        participant_in = linked
    elif sender is not None and trusted:
        participant_in = set(facts.taking_part)
        if tag_id is not None and tag_id not in known.values():  # its ticket not looked up
            participant_in |= db.participating(session, [tag_id], address)
    else:
        participant_in = set()
    # The HMAC check only matters for references the sender could not join otherwise (and
    # lets no untrusted sender in).
    doubtful = [r for r in references if r in known and known[r] not in participant_in]
    doubtful = doubtful if trusted else []
    return decide_thread(
        message,
        known,
        tag_id,
        tag_id in participant_in,
        tag_number,
        verified={r for r in doubtful if signed_by_us(r)},
        participant_in=participant_in,
        policy=settings.stranger_replies,
        numbers=numbers,
    )
