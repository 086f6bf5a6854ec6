"""Which ticket does a message belong to? Pure decisions over lookups done by the caller."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from mailsupport.mail import Inbound

# Reply and forward prefixes in the languages our customers write in, with the counters
# some clients add ("Re[2]:", "RE (3):"), repeated any number of times.
_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|sv|vs|antw|odp|rif|fw|fwd|wg|tr|enc|ответ|отв\.?|пересл\.?|переслать)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*)+",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")

DEFAULT_TICKET_TAG = "[#{number}]"  # MAILSUPPORT_TICKET_TAG's default
NO_SUBJECT = "(no subject)"  # a ticket's title when its subject leaves nothing


def tag_pattern_of(ticket_tag: str) -> re.Pattern[str]:
    """Matches the tag `ticket_tag` ("[#{number}]") writes in a subject; group 1 is the
    number (at most 9 digits: a longer number is an order number or a date, never one of
    our tickets)."""
    before, after = ticket_tag.split("{number}")
    return re.compile(re.escape(before.strip()) + r"\s*(\d{1,9})\s*" + re.escape(after.strip()))


def normalize_subject(subject: str, tag_pattern: re.Pattern[str]) -> str:
    """The subject without reply prefixes and ticket tags, for display as a ticket title."""
    text = tag_pattern.sub(" ", subject)
    previous = None
    while previous != text:  # prefixes can hide behind a tag: "Re: [#5] Re: x"
        previous = text
        text = _PREFIX.sub("", text).strip()
    return _SPACE.sub(" ", text).strip()


def find_tag(subject: str, tag_pattern: re.Pattern[str]) -> int | None:
    """The ticket number in the subject's tag, if it carries one."""
    match = tag_pattern.search(subject)
    return int(match.group(1)) if match else None


def reference_ids(message: Inbound) -> list[str]:
    """IDs this message points at, nearest parent first: In-Reply-To, then References
    from last to first. Without the message's own ID (some clients reference themselves)."""
    seen: set[str] = {message.message_id}
    ordered: list[str] = []
    for candidate in (*message.in_reply_to, *reversed(message.references)):
        if candidate not in seen:
            seen.add(candidate)
            ordered.append(candidate)
    return ordered


# What a reference from someone who may not join the ticket does (MAILSUPPORT_STRANGER_REPLIES):
# "new-ticket" opens a new ticket that links the referenced one; "join" lets every reference
# join, as desks that serve open mailing lists may want.
StrangerPolicy = Literal["new-ticket", "join"]


@dataclass(frozen=True, slots=True)
class ThreadDecision:
    ticket_id: int | None  # None: open a new ticket
    merge_ids: tuple[int, ...]  # other tickets this message shows to be the same conversation
    reason: str
    follows_id: int | None = None  # for a new ticket: the ticket it refers to but may not join


def decide_thread(
    message: Inbound,
    known: Mapping[str, int],
    tag_ticket_id: int | None = None,
    sender_is_participant: bool = False,
    tag_number: int | None = None,
    *,
    verified: Collection[str] = (),
    participant_in: Collection[int] = (),
    policy: StrangerPolicy = "new-ticket",
    numbers: Mapping[int, int] | None = None,
) -> ThreadDecision:
    """Decide where `message` goes.

    `known` maps Message-IDs already in the index to their ticket (look up the message's
    own ID and every `reference_ids`). `tag_ticket_id` is the ticket named by the subject tag,
    if it exists; `sender_is_participant` says whether the sender takes part in it.

    A known reference joins its ticket only when it is one of our own Message-IDs with a
    valid token (`verified`), or the sender takes part in that ticket (`participant_in`), or
    `policy` is "join". Anyone who has seen one Message-ID or a ticket number could
    otherwise write into (or merge) someone else's ticket. A reference that may not join
    makes a new ticket that follows the oldest ticket it names. `numbers` maps ticket ids
    to the numbers agents see, for the reason text (default: the id).
    """

    def number(ticket: int) -> int:
        return numbers.get(ticket, ticket) if numbers else ticket

    open_door = policy == "join"
    linked: list[tuple[int, str, bool]] = []  # (ticket, why, may join)
    for candidate in reference_ids(message):
        if candidate in known:
            ticket = known[candidate]
            header = "in-reply-to" if candidate in message.in_reply_to else "references"
            allowed = open_door or candidate in verified or ticket in participant_in
            linked.append((ticket, f"{header} <{candidate}>", allowed))
    # Our own ID already in the index: a message stored earlier referenced us, so we are
    # the parent arriving after its reply. Only a participant may claim to be that parent
    # (the ID is in the References of every later message, for anyone to copy).
    if message.message_id in known:
        ticket = known[message.message_id]
        allowed = open_door or ticket in participant_in
        linked.append((ticket, "is the parent of a stored reply", allowed))

    joined = sorted({ticket for ticket, _, allowed in linked if allowed})
    # Tickets referenced but not joinable; never merged, since a stranger could otherwise
    # merge two customers' tickets with one message.
    refused = sorted({ticket for ticket, _, allowed in linked if not allowed} - set(joined))
    not_merged = (
        "; not merged with " + ", ".join(f"#{number(t)}" for t in refused)
        + ": the sender is not a participant"
        if refused else ""
    )  # fmt: skip

    if joined:
        target = joined[0]  # the oldest ticket keeps the conversation
        reason = next(why for ticket, why, ok in linked if ticket == target and ok)
        return ThreadDecision(target, tuple(joined[1:]), reason + not_merged)

    if tag_number is not None and tag_ticket_id is not None and sender_is_participant:
        reason = f"subject tag #{tag_number} from a participant"
        return ThreadDecision(tag_ticket_id, (), reason + not_merged)

    if refused:
        oldest = refused[0]
        return ThreadDecision(
            None,
            (),
            f"new ticket (references #{number(oldest)} but the sender is not a participant)",
            follows_id=oldest,
        )
    if tag_number is not None:
        if tag_ticket_id is None:
            return ThreadDecision(
                None, (), f"new ticket (subject tag #{tag_number} ignored: no such ticket)"
            )
        return ThreadDecision(
            None,
            (),
            f"new ticket (subject tag #{tag_number} but the sender is not a participant)",
            follows_id=tag_ticket_id,
        )
    return ThreadDecision(None, (), "new ticket")
