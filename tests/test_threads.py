"""Threading decisions on plain data."""

from __future__ import annotations

import re

from mailsupport.mail import Address, Inbound
from mailsupport.threads import decide_thread, find_tag, normalize_subject, reference_ids

TAG = re.compile(r"\[#\s*(\d{1,12})\s*\]")


def message(
    mid: str = "m@x", in_reply_to: tuple[str, ...] = (), references: tuple[str, ...] = (),
    subject: str = "Hello",
) -> Inbound:  # fmt: skip
    return Inbound(
        message_id=mid, message_id_generated=False, in_reply_to=in_reply_to,
        references=references, subject=subject, from_=Address("", "a@example.org"), to=(),
        cc=(), reply_to=(), date=None, text="", html=None,
    )  # fmt: skip


def test_reply_prefixes_in_several_languages_are_removed() -> None:
    for subject in [
        "Re: Printer broken", "RE: Printer broken", "AW: Printer broken", "Fwd: Printer broken",
        "Re[2]: Printer broken", "Re: Re: RE: Printer broken", "Ответ: Printer broken",
        "Отв: Printer broken", "Re: [#42] Printer broken", "[#42] Re: Printer broken",
        "  Printer   broken ", "FW: RE: Printer broken",
    ]:  # fmt: skip
        assert normalize_subject(subject, TAG) == "Printer broken", subject


def test_prefix_words_inside_a_subject_are_kept() -> None:
    assert normalize_subject("Rework: the plan", TAG) == "Rework: the plan"
    assert normalize_subject("Отвертка сломалась", TAG) == "Отвертка сломалась"


def test_find_tag() -> None:
    assert find_tag("Re: Printer [#42]", TAG) == 42
    assert find_tag("Re: Printer [# 7 ]", TAG) == 7
    assert find_tag("Order #42", TAG) is None


def test_reference_ids_nearest_first_without_self_and_duplicates() -> None:
    m = message("me@x", in_reply_to=("p@x",), references=("root@x", "me@x", "p@x", "root@x"))
    assert reference_ids(m) == ["p@x", "root@x"]


def test_in_reply_to_joins_its_ticket() -> None:
    decision = decide_thread(message(in_reply_to=("p@x",)), {"p@x": 7})
    assert decision.ticket_id == 7
    assert decision.merge_ids == ()
    assert decision.reason == "in-reply-to <p@x>"


def test_any_reference_joins() -> None:
    decision = decide_thread(message(references=("root@x", "gone@x")), {"root@x": 3})
    assert (decision.ticket_id, decision.reason) == (3, "references <root@x>")


def test_parent_arriving_after_its_reply_joins_the_replys_ticket() -> None:
    decision = decide_thread(message("parent@x"), {"parent@x": 9})
    assert decision.ticket_id == 9
    assert "parent" in decision.reason


def test_message_linking_two_tickets_merges_them_into_the_oldest() -> None:
    decision = decide_thread(message("p@x", in_reply_to=("root@x",)), {"root@x": 5, "p@x": 2})
    assert decision.ticket_id == 2
    assert decision.merge_ids == (5,)


def test_tag_joins_only_from_a_participant() -> None:
    m = message(subject="Re: thing [#4]")
    joined = decide_thread(m, {}, tag_ticket_id=4, sender_is_participant=True, tag_number=4)
    assert joined.ticket_id == 4
    stranger = decide_thread(m, {}, tag_ticket_id=4, sender_is_participant=False, tag_number=4)
    assert stranger.ticket_id is None
    assert "not a participant" in stranger.reason
    missing = decide_thread(m, {}, tag_ticket_id=None, tag_number=4)
    assert missing.ticket_id is None


def test_headers_win_over_the_tag() -> None:
    m = message(in_reply_to=("p@x",), subject="Re: [#4] thing")
    decision = decide_thread(
        m, {"p@x": 8}, tag_ticket_id=4, sender_is_participant=True, tag_number=4
    )
    assert decision.ticket_id == 8


def test_equal_subject_alone_never_joins() -> None:
    assert decide_thread(message(subject="Re: Printer broken"), {}).ticket_id is None
