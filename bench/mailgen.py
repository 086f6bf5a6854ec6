"""Realistic support mail for the intake benchmark, deterministic and streamed.

    for raw in generate(10_000, seed=1): ...   # CRLF bytes, in delivery order

Conversations: a customer writes; support's reply (our Message-ID) is in the mailbox for
some (a Bcc copy, as desks often keep), always named in the customer's next References;
the customer answers again, sometimes under a changed subject ("New topic (was: Old)").
Some replies are delivered before the message they answer. Mixed in: out-of-office answers
(Auto-Submitted), bounces (multipart/report naming our earlier Message-ID) and a few
newsletters. Text is English or Russian in UTF-8, KOI8-R, windows-1251 or ISO-8859-1, sent
8bit, quoted-printable or base64; plain, multipart/alternative or HTML-only; with PDF or
image attachments (random bytes, mostly small, a few about 100 KB and more).

Streaming: conversations are drawn one after another, each from its own seeded RNG, and
their messages are spread over the next delivery slots through a small heap; nothing but
that window is held in memory.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

from bench.generate import SUBJECTS_RU

# Bump when the bytes generated change: cached maildirs carry it in their name.
MAILGEN_VERSION = 1
SUPPORT = "Example Support <support@example.com>"
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SLOT = timedelta(seconds=37)  # mean time between deliveries
WINDOW = 40  # a conversation's later messages land up to this many slots after it starts
SMTP = policy.SMTP.clone(max_line_length=78)  # CRLF line ends, as IMAP serves them

FIRST_EN = ("John", "Mary", "Peter", "Linda", "Tom", "Emma", "Lucas", "Chloé", "René", "Zoë")
LAST_EN = ("Smith", "Miller", "Brown", "Wilson", "Moore", "Dubois", "Müller", "García")
FIRST_RU = ("Анна", "Иван", "Мария", "Ольга", "Пётр", "Светлана", "Дмитрий", "Елена")
LAST_RU = ("Петрова", "Смирнов", "Иванова", "Кузнецова", "Соколов", "Попова", "Волков")
TOPICS_EN = (
    "Cannot log in to my account",
    "Invoice {n} is wrong",
    "Password reset link does not work",
    "App crashes on start after the update",
    "How do I export my data?",
    "Refund for order #{n}",
    "Two-factor codes arrive late",
    "Sync stopped working on Android",
    "Question about the annual plan",
    "Café order {n}: wrong delivery address",
)
TOPICS_RU = SUBJECTS_RU  # the same subjects as the stores `python -m bench` reads
PROBLEMS_EN = (
    "the login page says my password is wrong, although I reset it twice",
    "the invoice still shows the old amount and the old company name",
    "the app closes right after the splash screen on my phone",
    "I do not get any e-mail from you, not even in the spam folder",
    "the export button does nothing, in Firefox and in Chrome",
)
PROBLEMS_RU = (
    "личный кабинет пишет, что пароль неверный, хотя я его дважды сбрасывал(а)",
    "в счёте старая сумма и старые реквизиты",
    "приложение закрывается сразу после заставки",
    "от вас не приходят письма, даже в папку 'Спам'",
    "кнопка выгрузки ничего не делает ни в одном браузере",
)
FILLER_EN = (
    "I am using the latest version on Windows 11 and on my iPhone.",
    "Our team of twelve depends on this every day, so it is rather urgent for us.",
    "I have attached what I see on the screen.",
    "The same happened last month and it went away by itself, but not this time.",
    "My customer number is on the invoice, in the top right corner.",
)
FILLER_RU = (
    "Пользуюсь последней версией на Windows 11 и на телефоне.",
    "У нас работает двенадцать человек, для нас это срочно.",
    "Прикладываю снимок экрана.",
    "В прошлом месяце было то же самое, но тогда само прошло.",
    "Номер договора указан в счёте, в правом верхнем углу.",
)
REPLY_EN = (
    "Hello {name},\n\nthank you for writing. We have looked into it and fixed the account "
    "settings; please try again and tell us how it goes.\n\nBest regards,\n{agent}"
)
REPLY_RU = (
    "Здравствуйте, {name}!\n\nСпасибо за письмо. Мы исправили настройки, попробуйте ещё раз "
    "и напишите, получилось ли.\n\nС уважением,\n{agent}"
)
FOLLOWUP_EN = ("It works again, thank you!", "Still the same, see the screenshot.", "Any news?")
FOLLOWUP_RU = ("Всё заработало, спасибо!", "Всё так же, снимок во вложении.", "Есть новости?")
NEW_TOPIC_EN = ("Another question: VAT number", "Also: second user licence")
NEW_TOPIC_RU = ("Ещё вопрос: закрывающие документы", "И ещё: второй пользователь")
AGENTS = ("Anna", "Boris", "Chen", "Dmitry", "Elena")


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    address: str
    russian: bool
    charset: str  # what their mail client writes in


def generate(count: int, seed: int = 1, processes: int = 1) -> Iterator[bytes]:
    """`count` messages as bytes (CRLF line ends), in the order they are delivered. With
    several `processes`, conversations are drawn in parallel: the same bytes, sooner (each
    conversation depends on its number and the seed alone)."""
    heap: list[tuple[int, int, bytes]] = []  # (slot, tie-break, message)
    emitted = 0
    tie = 0
    for conversation, messages in enumerate(_conversations(seed, processes)):
        if emitted >= count:
            break
        start = conversation * 4 // 3  # about 3 messages per 4 slots on average
        while heap and heap[0][0] < start and emitted < count:
            yield heapq.heappop(heap)[2]
            emitted += 1
        for slot, raw in messages:
            tie += 1
            heapq.heappush(heap, (slot, tie, raw))
    # (what is still in the heap belongs to conversations past the end: dropped)


def _conversations(seed: int, processes: int) -> Iterator[list[tuple[int, bytes]]]:
    """Conversation 0, 1, 2, ... with their delivery slots, drawn by `processes` at once."""
    numbers = itertools.count()
    if processes <= 1:
        for number in numbers:
            yield _conversation(seed, number, number * 4 // 3)
        return
    import multiprocessing

    block = 2_000  # conversations drawn per round: bounded memory, little waiting
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        while True:
            wanted = [(seed, n, n * 4 // 3) for n in itertools.islice(numbers, block)]
            yield from pool.starmap(_conversation, wanted, chunksize=50)


def large_message(size: int, seed: int = 1) -> bytes:
    """One customer message with one attachment, `size` bytes in all (within a few bytes,
    never over)."""
    rng = random.Random(seed)
    person = Person("Maria Ivanova", "maria.ivanova@customer.example.org", False, "utf-8")
    msg = _base(
        person.name,
        person.address,
        SUPPORT,
        "Full database dump, as you asked",
        "<large.1@customer.example.org>",
        START,
    )
    msg.set_content("Hello,\n\nthe dump is attached.\n\nMaria\n", charset="utf-8")
    overhead = len(msg.as_bytes(policy=SMTP)) + 400  # the attachment part's own headers
    # base64 in 76-character lines: 4 bytes for 3, plus CRLF per 76.
    payload = (size - overhead) * 3 // 4 * 76 // 78
    msg.add_attachment(
        rng.randbytes(payload), maintype="application", subtype="octet-stream", filename="dump.bin"
    )
    raw = msg.as_bytes(policy=SMTP)
    assert len(raw) <= size, (len(raw), size)
    return raw


# ------------------------------------------------------------------------------------------


def _conversation(seed: int, number: int, start: int) -> list[tuple[int, bytes]]:
    """The messages of conversation `number`, each with the slot it is delivered in."""
    rng = random.Random(seed * 1_000_003 + number)
    kind = rng.random()
    if kind < 0.02:  # a newsletter that landed in the support mailbox
        return [(start, _newsletter(rng, number, start))]
    person = _person(rng, number)
    topic_list = TOPICS_RU if person.russian else TOPICS_EN
    subject = rng.choice(topic_list).format(n=rng.randint(1000, 99999))
    when = START + SLOT * start
    first_id = f"<{number}.{rng.getrandbits(40):x}@{person.address.split('@')[1]}>"
    problem = rng.choice(PROBLEMS_RU if person.russian else PROBLEMS_EN)
    hello = "Здравствуйте!" if person.russian else "Hello,"
    filler = FILLER_RU if person.russian else FILLER_EN
    paragraphs = [
        f"since yesterday {problem}." if not person.russian else f"со вчерашнего дня {problem}."
    ]
    paragraphs += rng.sample(filler, rng.randint(1, len(filler)))
    text = f"{hello}\n\n" + "\n\n".join(paragraphs) + f"\n\n{person.name.split()[0]}\n"
    out: list[tuple[int, bytes]] = []
    slot = start
    out.append((slot, _customer(rng, person, subject, first_id, when, text, (), attach=0.15)))

    if rng.random() < 0.35:  # a one-message conversation
        return out
    agent = rng.choice(AGENTS)
    our_id = f"<reply.{number}.{rng.getrandbits(32):x}@example.com>"
    when += timedelta(minutes=rng.randint(5, 600))
    reply_text = (REPLY_RU if person.russian else REPLY_EN).format(
        name=person.name.split()[0], agent=agent
    )
    reply_text += "\n\n" + _quote(text, person.name, when, person.russian)
    slot += rng.randint(1, WINDOW // 3)
    if rng.random() < 0.5:  # a Bcc copy of our answer lands in the mailbox
        out.append((slot, _ours(person, f"Re: {subject}", our_id, first_id, when, reply_text)))
    roll = rng.random()
    if roll < 0.05:  # the customer's address bounces our answer
        slot += 1
        out.append((slot, _bounce(rng, person, our_id, subject, when)))
        return out
    if roll < 0.10:  # they are away
        slot += 1
        out.append((slot, _out_of_office(rng, person, subject, our_id, when)))
        return out
    # The customer answers; now and then under a new subject.
    when += timedelta(minutes=rng.randint(10, 2000))
    follow = rng.choice(FOLLOWUP_RU if person.russian else FOLLOWUP_EN)
    follow_subject = f"Re: {subject}"
    if rng.random() < 0.08:
        new = rng.choice(NEW_TOPIC_RU if person.russian else NEW_TOPIC_EN)
        follow_subject = f"{new} (was: {subject})"
    follow_text = (
        follow + "\n\n" + _quote(reply_text, f"{agent} (Example Support)", when, person.russian)
    )
    follow_id = f"<{number}.f{rng.getrandbits(40):x}@{person.address.split('@')[1]}>"
    slot += rng.randint(1, WINDOW // 3)
    answer = _customer(
        rng, person, follow_subject, follow_id, when, follow_text, (first_id, our_id), attach=0.08
    )
    if rng.random() < 0.06:  # delivered before the message it answers
        out.insert(0, (start - 1, answer))
    else:
        out.append((slot, answer))
    if rng.random() < 0.25:  # and once more, the last word
        when += timedelta(minutes=rng.randint(10, 2000))
        last_id = f"<{number}.l{rng.getrandbits(40):x}@{person.address.split('@')[1]}>"
        thanks = "Спасибо!" if person.russian else "Thanks!"
        slot += rng.randint(1, WINDOW // 3)
        out.append(
            (
                slot,
                _customer(
                    rng,
                    person,
                    follow_subject,
                    last_id,
                    when,
                    thanks + "\n\n" + _quote(follow_text, person.name, when, person.russian),
                    (first_id, our_id, follow_id),
                    attach=0.0,
                ),
            )
        )
    return out


def _person(rng: random.Random, number: int) -> Person:
    if rng.random() < 0.45:
        first, last = rng.choice(FIRST_RU), rng.choice(LAST_RU)
        charset = rng.choices(("utf-8", "koi8-r", "windows-1251"), (50, 20, 30))[0]
        return Person(
            f"{first} {last}", f"client{number}@mail{number % 89}.example.ru", True, charset
        )
    first, last = rng.choice(FIRST_EN), rng.choice(LAST_EN)
    charset = rng.choices(("utf-8", "iso-8859-1", "us-ascii"), (60, 25, 15))[0]
    if charset == "us-ascii" and not (first + last).isascii():
        charset = "utf-8"
    local = f"{first}.{last}".lower().encode("ascii", "ignore").decode() or "user"
    return Person(
        f"{first} {last}", f"{local}.{number}@customer{number % 97}.example.org", False, charset
    )


def _base(name: str, address: str, to: str, subject: str, mid: str, when: datetime) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"{name} <{address}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = mid
    msg["MIME-Version"] = "1.0"
    return msg


def _customer(
    rng: random.Random,
    person: Person,
    subject: str,
    mid: str,
    when: datetime,
    text: str,
    refs: tuple[str, ...],
    attach: float,
) -> bytes:
    msg = _base(person.name, person.address, SUPPORT, subject, mid, when)
    _transport_headers(rng, msg, person.address.split("@")[1], when)
    if refs:
        msg["In-Reply-To"] = refs[-1]
        msg["References"] = " ".join(refs)
    msg["User-Agent"] = rng.choice(("Thunderbird/115.8", "Outlook 16.0", "Mail.ru", "K-9 Mail"))
    charset = person.charset
    try:  # a character the charset lacks: the client would switch to UTF-8
        (text + _html(text)).encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
    # What Thunderbird, Outlook and webmail do: 8bit, quoted-printable or base64.
    cte = rng.choices(("8bit", "quoted-printable", "base64"), (40, 35, 25))[0]
    if charset == "us-ascii":
        cte = "7bit"
    style = rng.random()
    html = _html(text)
    if style < 0.12:  # HTML only
        msg.set_content(html, subtype="html", charset=charset, cte=cte)
    elif style < 0.45:  # multipart/alternative
        msg.set_content(text, charset=charset, cte=cte)
        msg.add_alternative(html, subtype="html", charset=charset, cte=cte)
    else:
        msg.set_content(text, charset=charset, cte=cte)
    if rng.random() < attach:
        for _ in range(rng.choice((1, 1, 1, 2))):
            name, maintype, subtype, data = _attachment(rng)
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return _bytes(rng, msg)


def _attachment(rng: random.Random) -> tuple[str, str, str, bytes]:
    # Log-normal sizes: median ~20 KB, a long tail past 100 KB; capped at 2 MB.
    size = min(int(rng.lognormvariate(10.0, 1.1)), 2_000_000)
    if rng.random() < 0.5:
        return ("scan.pdf", "application", "pdf", b"%PDF-1.4\n" + rng.randbytes(size))
    return ("screenshot.png", "image", "png", b"\x89PNG\r\n\x1a\n" + rng.randbytes(size))


def _ours(person: Person, subject: str, mid: str, parent: str, when: datetime, text: str) -> bytes:
    msg = _base(
        "Example Support",
        "support@example.com",
        f"{person.name} <{person.address}>",
        subject,
        mid,
        when,
    )
    msg["In-Reply-To"] = parent
    msg["References"] = parent
    msg.set_content(text, charset="utf-8")
    return msg.as_bytes(policy=SMTP)


def _out_of_office(
    rng: random.Random, person: Person, subject: str, parent: str, when: datetime
) -> bytes:
    prefix = (
        "Автоответ: " if person.russian else rng.choice(("Out of Office: ", "Automatic reply: "))
    )
    domain = person.address.split("@")[1]
    msg = _base(
        person.name,
        person.address,
        SUPPORT,
        f"{prefix}Re: {subject}",
        f"<auto.{rng.getrandbits(48):x}@{domain}>",
        when + timedelta(seconds=3),
    )
    msg["In-Reply-To"] = parent
    msg["References"] = parent
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    text = (
        "Я в отпуске до понедельника и читаю почту с перерывами."
        if person.russian
        else "I am out of the office until Monday with limited access to e-mail."
    )
    msg.set_content(text, charset=person.charset if person.charset != "us-ascii" else "utf-8")
    return msg.as_bytes(policy=SMTP)


def _bounce(rng: random.Random, person: Person, our_id: str, subject: str, when: datetime) -> bytes:
    """A Postfix-shaped delivery status notification about our message `our_id`."""
    queue = f"{rng.getrandbits(40):X}"
    boundary = f"{queue}.{int(when.timestamp())}/mx.example.com"
    date = format_datetime(when + timedelta(seconds=5))
    lines = [
        "Return-Path: <>",
        f"Date: {date}",
        "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)",
        "Subject: Undelivered Mail Returned to Sender",
        "To: support@example.com",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        f"Message-Id: <{queue}@mx.example.com>",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This is the mail system at host mx.example.com.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
        f"<{person.address}>: host mx.{person.address.split('@')[1]} said: 550 5.1.1",
        "    User unknown (in reply to RCPT TO command)",
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.example.com",
        f"X-Postfix-Queue-ID: {queue}",
        "",
        f"Final-Recipient: rfc822; {person.address}",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown",
        "",
        f"--{boundary}",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        "",
        "From: Example Support <support@example.com>",
        f"To: {person.address}",
        f"Subject: Re: {_ascii_subject(subject)}",
        f"Message-ID: {our_id}",
        f"Date: {format_datetime(when)}",
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


def _ascii_subject(subject: str) -> str:
    if subject.isascii():
        return subject
    from email.header import Header

    return Header(subject, "utf-8").encode(linesep="\r\n")


def _newsletter(rng: random.Random, number: int, slot: int) -> bytes:
    msg = _base(
        "Cloud Weekly",
        "news@mailer.example.net",
        "support@example.com",
        f"Issue {number}: what is new this week",
        f"<news.{number}@mailer.example.net>",
        START + SLOT * slot,
    )
    msg["List-Unsubscribe"] = "<https://mailer.example.net/u>"
    msg["Precedence"] = "bulk"
    items = "".join(
        f"<tr><td><h2>Story {i}</h2><p>{rng.choice(FILLER_EN)} {rng.choice(FILLER_EN)}</p>"
        f'<a href="https://example.net/{i}">Read more</a></td></tr>'
        for i in range(rng.randint(4, 12))
    )
    msg.set_content("View this mail in your browser.", charset="us-ascii")
    msg.add_alternative(
        f"<html><body><table>{items}</table></body></html>",
        subtype="html",
        charset="utf-8",
        cte="quoted-printable",
    )
    return _bytes(rng, msg)


def _bytes(rng: random.Random, msg: EmailMessage) -> bytes:
    """The message's bytes; boundaries drawn from `rng`, since the email package would draw
    them from the global random state and the output would differ from run to run."""
    for part in msg.walk():
        if part.is_multipart():
            part.set_boundary(f"----=_Part_{rng.getrandbits(64):016x}")
    return msg.as_bytes(policy=SMTP)


def _transport_headers(rng: random.Random, msg: EmailMessage, domain: str, when: datetime) -> None:
    """What real mail carries before it reaches a mailbox: Received hops, DKIM, spam checks
    (mail from outside is mostly header: 2 to 4 KB of it)."""
    stamp = format_datetime(when)
    for hop in range(rng.randint(2, 4)):
        ip = f"192.0.2.{rng.randint(1, 254)}"
        msg["Received"] = (
            f"from mx{hop}.{domain} (mx{hop}.{domain} [{ip}]) by mx.example.com (Postfix) "
            f"with ESMTPS id {rng.getrandbits(40):X} for <support@example.com>; {stamp}"
        )
    b64 = "".join(
        rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", k=344)
    )
    msg["DKIM-Signature"] = (
        f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=mail2025; "
        f"h=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type; "
        f"bh={b64[:43]}=; b={b64}"
    )
    msg["Authentication-Results"] = (
        f"mx.example.com; dkim=pass header.d={domain}; spf=pass smtp.mailfrom={domain}; "
        f"dmarc=pass header.from={domain}"
    )
    msg["X-Spam-Status"] = (
        f"No, score={rng.uniform(-3, 2):.1f} required=5.0 "
        "tests=BAYES_00,DKIM_SIGNED,DKIM_VALID autolearn=ham"
    )
    msg["Return-Path"] = f"<{msg['From'].addresses[0].addr_spec}>"


def _quote(text: str, who: str, when: datetime, russian: bool) -> str:
    if russian:
        head = f"{when:%d.%m.%Y %H:%M}, {who} пишет:"
    else:
        head = f"On {when:%a, %d %b %Y at %H:%M}, {who} wrote:"
    return head + "\n" + "\n".join("> " + line if line else ">" for line in text.splitlines())


def _html(text: str) -> str:
    from html import escape

    body = "".join(
        f"<p>{escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n") if p.strip()
    )
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html">'
        "<style>p{margin:0 0 1em;font-family:Calibri,Arial,sans-serif}</style></head>"
        f"<body>{body}</body></html>"
    )
