"""What an agent writing a reply starts from: the language the reply will be in, the
greeting and signature the `reply` template puts around the agent's text (so the editor can
show them and nobody types them twice), and canned replies (macros.py) filled in for the
ticket. Nothing is written: the reply is composed with a stand-in text and taken apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailsupport.compose import Sender, clean_header, compose
from mailsupport.macros import Macros, macro_values
from mailsupport.mail import Address
from mailsupport.templating import choose_language
from mailsupport.ticketmail import Outgoing, parent_of

if TYPE_CHECKING:
    from mailsupport.agent import Recipients
    from mailsupport.store.models import Message, Ticket

# Stands for the agent's text in the composed reply; what comes before and after is the
# template's. Letters and digits only, so that no cleaning of the text changes it.
_STAND_IN = "MAILSUPPORTYOURTEXT7F3A9C"
# A throwaway key for the stand-in reply's Message-ID, which nobody sees.
_NO_SECRET = b"preview"
# The lines of the template after the text worth showing: the signature and the start of
# the quote, not all of it (the conversation is shown anyway).
AFTER_LINES = 8


@dataclass(frozen=True, slots=True)
class Frame:
    """How a reply to a ticket will read around the agent's text."""

    language: str
    greeting: tuple[str, ...]  # the template's lines above the text
    signature: tuple[str, ...]  # below it: the signature, the quote's start; cut, see more
    more: bool  # the template writes more below (the rest of the quote)
    canned: str  # the macros asked for, filled in, one after another


def reply_frame(
    outgoing: Outgoing,
    ticket: Ticket,
    people: Recipients,
    parent: Message | None,
    *,
    agent: str,
    now: datetime,
    macros: Sequence[str] = (),
    from_address: str = "",
) -> Frame:
    """The frame of a reply to `people` on `ticket` answering `parent`, from the mailbox it
    will come from (`from_address`'s, else the ticket's), with `macros` filled in. A broken
    template or macro raises TemplateError, an unknown macro UsageError: before anyone
    writes anything."""
    box, address = outgoing.mailbox_of(ticket, from_address)
    s = box.settings
    language = choose_language(s.language, parent.text if parent else "")
    customer = people.to[0] if people.to else None
    if customer is not None:
        name = clean_header(customer.name).strip("\"' ")
        customer = Address("" if "@" in name else name, customer.address)
    values = macro_values(
        ticket, tag=s.format_tag(ticket.number or 0), customer=customer, agent=agent,
        support=Address(s.support_name, address), language=language,
    )  # fmt: skip
    canned = ""
    if macros:
        found = Macros(s.templates_path)
        canned = "\n\n".join(found.render(found.find(name, language), values) for name in macros)
    if not address or not people.to:  # the reply itself will say what is missing
        return Frame(language, (), (), False, canned)
    composed = compose(
        "reply", sender=Sender(s.support_name, address), to=people.to, cc=people.cc,
        ticket_number=ticket.number or 0, ticket_subject=ticket.subject,
        parent=parent_of(parent) if parent else None, language=language,
        templates=outgoing.templates_of(s), secret=_NO_SECRET, now=now, text=_STAND_IN,
        agent_name=agent, tag_format=s.ticket_tag, tag_pattern=s.tag_pattern,
    )  # fmt: skip
    lines = composed.text.splitlines()
    at = next((i for i, line in enumerate(lines) if _STAND_IN in line), None)
    if at is None:  # a template that leaves the text out: nothing to frame
        return Frame(language, (), (), False, canned)
    greeting, after = _trimmed(lines[:at]), _trimmed(lines[at + 1 :])
    return Frame(language, greeting, after[:AFTER_LINES], len(after) > AFTER_LINES, canned)


def _trimmed(lines: list[str]) -> tuple[str, ...]:
    """Without blank lines at either end."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return tuple(lines)
