"""Builds real-world-shaped test messages and whole conversations."""

from __future__ import annotations

import mailbox
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

BASE_TIME = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def make_message(
    message_id: str | None = "m1@customer.example.org",
    *,
    subject: str = "Cannot log in",
    sender: str = "Anna Petrova <anna@customer.example.org>",
    to: str = "Example Support <support@example.com>",
    cc: str | None = None,
    body: str = "Hello, I cannot log in since yesterday.",
    in_reply_to: str | None = None,
    references: str | None = None,
    date: datetime | None = BASE_TIME,
    charset: str = "utf-8",
    extra_headers: dict[str, str] | None = None,
    attachments: list[tuple[str, str, bytes]] | None = None,
) -> bytes:
    """One message as bytes. IDs are given without angle brackets; pass raw header text in
    `in_reply_to`/`references` to test damaged headers as they are."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = format_datetime(date)
    if message_id is not None:
        msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to is not None:
        msg["In-Reply-To"] = in_reply_to
    if references is not None:
        msg["References"] = references
    for name, value in (extra_headers or {}).items():
        msg[name] = value
    msg.set_content(body, charset=charset, cte="8bit" if charset != "utf-8" else None)
    for filename, content_type, data in attachments or []:
        maintype, subtype = content_type.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


@dataclass
class Conversation:
    root: str
    message_ids: list[str] = field(default_factory=list)


def mailing_list_archive(
    threads: int, seed: int, domain: str = "lists.example.org"
) -> tuple[list[bytes], list[Conversation]]:
    """A shuffled archive of `threads` conversations with random reply trees.

    Like real lists: some clients send full References, some only In-Reply-To, some both
    with a trailing comment; subjects drift ("Re:", "AW:", edited); a few replies quote a
    parent that was never archived."""
    rng = random.Random(seed)
    messages: list[bytes] = []
    conversations: list[Conversation] = []
    for t in range(threads):
        subject = rng.choice(["Printer offline", "Ошибка входа", "VPN drops", "Invoice 2026-03"])
        root = f"t{t}.0@{domain}"
        conversation = Conversation(root)
        chains: dict[str, list[str]] = {root: []}
        start = BASE_TIME + timedelta(hours=t)
        if rng.random() < 0.15:  # the root itself never made it into the archive
            missing = f"t{t}.missing@{domain}"
            chains[root] = [missing]
        messages.append(
            make_message(
                root, subject=subject, sender=f"user{t}@example.net", date=start,
                references=" ".join(f"<{r}>" for r in chains[root]) or None,
                in_reply_to=f"<{chains[root][-1]}>" if chains[root] else None,
            )
        )  # fmt: skip
        conversation.message_ids.append(root)
        for r in range(1, rng.randint(1, 8)):
            parent = rng.choice(conversation.message_ids)
            mid = f"t{t}.{r}@{domain}"
            chain = [*chains[parent], parent]
            chains[mid] = chain
            style = rng.random()
            if style < 0.3:
                refs, irt = None, f"<{parent}>"
            elif style < 0.5:
                refs, irt = " ".join(f"<{c}>" for c in chain), None
            elif style < 0.6:
                refs, irt = None, f"<{parent}> (message from user{t} of Monday)"
            else:
                refs, irt = " ".join(f"<{c}>" for c in chain), f"<{parent}>"
            prefix = rng.choice(["Re: ", "RE: ", "AW: ", "Ответ: ", "Re: Re: "])
            reply_subject = prefix + (subject if rng.random() < 0.8 else "changed topic")
            messages.append(
                make_message(
                    mid, subject=reply_subject, sender=f"member{r}@example.net",
                    date=start + timedelta(minutes=10 * r), in_reply_to=irt, references=refs,
                    body=f"Reply {r} in thread {t}",
                )
            )  # fmt: skip
            conversation.message_ids.append(mid)
        conversations.append(conversation)
    rng.shuffle(messages)
    return messages, conversations


def mbox_file(path: Path, *messages: bytes) -> Path:
    """An mbox file at `path` holding `messages`, for `import`."""
    box = mailbox.mbox(str(path))
    for raw in messages:
        box.add(raw)
    box.close()
    return path
