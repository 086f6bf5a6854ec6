"""Which ticket does a message belong to? Pure decisions over lookups done by the caller."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mailsupport.mail import Inbound

# Reply and forward prefixes in the languages our customers write in, with the counters
# some clients add ("Re[2]:", "RE (3):"), repeated any number of times.
_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|sv|vs|antw|odp|rif|fw|fwd|wg|tr|enc|ответ|отв\.?|пересл\.?|переслать)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*)+",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")


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


@dataclass(frozen=True, slots=True)
class ThreadDecision:
    ticket_id: int | None  # None: open a new ticket
    merge_ids: tuple[int, ...]  # other tickets this message shows to be the same conversation
    reason: str


def decide_thread(
    message: Inbound,
    known: Mapping[str, int],
    tag_ticket_id: int | None = None,
    sender_is_participant: bool = False,
    tag_number: int | None = None,
) -> ThreadDecision:
    """Decide where `message` goes.

    `known` maps Message-IDs already in the index to their ticket (look up the message's
    own ID and every `reference_ids`). `tag_ticket_id` is the ticket named by the subject tag,
    if it exists; `sender_is_participant` says whether the sender takes part in it.
    """
    linked: list[tuple[int, str]] = []
    for candidate in reference_ids(message):
        if candidate in known:
            header = "in-reply-to" if candidate in message.in_reply_to else "references"
            linked.append((known[candidate], f"{header} <{candidate}>"))
    # Our own ID already in the index: a message stored earlier referenced us, so we are
    # the parent arriving after its reply.
    if message.message_id in known:
        linked.append((known[message.message_id], "is the parent of a stored reply"))

    if linked:
        tickets = sorted({ticket for ticket, _ in linked})
        target = tickets[0]  # the oldest ticket keeps the conversation
        reason = next(why for ticket, why in linked if ticket == target)
        return ThreadDecision(target, tuple(tickets[1:]), reason)

    if tag_number is not None:
        if tag_ticket_id is not None and sender_is_participant:
            return ThreadDecision(
                tag_ticket_id, (), f"subject tag #{tag_number} from a participant"
            )
        why = "no such ticket" if tag_ticket_id is None else "sender is not a participant"
        return ThreadDecision(None, (), f"new ticket (subject tag #{tag_number} ignored: {why})")
    return ThreadDecision(None, (), "new ticket")
