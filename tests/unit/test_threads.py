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
    decision = decide_thread(message(in_reply_to=("p@x",)), {"p@x": 7}, participant_in={7})
    assert decision.ticket_id == 7
    assert decision.merge_ids == ()
    assert decision.follows_id is None
    assert decision.reason == "in-reply-to <p@x>"


def test_any_reference_joins() -> None:
    m = message(references=("root@x", "gone@x"))
    decision = decide_thread(m, {"root@x": 3}, participant_in={3})
    assert (decision.ticket_id, decision.reason) == (3, "references <root@x>")


def test_parent_arriving_after_its_reply_joins_the_replys_ticket() -> None:
    decision = decide_thread(message("parent@x"), {"parent@x": 9}, participant_in={9})
    assert decision.ticket_id == 9
    assert "parent" in decision.reason


def test_message_linking_two_tickets_merges_them_into_the_oldest() -> None:
    m = message("p@x", in_reply_to=("root@x",))
    decision = decide_thread(m, {"root@x": 5, "p@x": 2}, participant_in={2, 5})
    assert decision.ticket_id == 2
    assert decision.merge_ids == (5,)


def test_tag_joins_only_from_a_participant() -> None:
    m = message(subject="Re: thing [#4]")
    joined = decide_thread(m, {}, tag_ticket_id=4, sender_is_participant=True, tag_number=4)
    assert joined.ticket_id == 4
    stranger = decide_thread(m, {}, tag_ticket_id=4, sender_is_participant=False, tag_number=4)
    assert stranger.ticket_id is None
    assert stranger.follows_id == 4  # a new ticket that links the tagged one
    assert stranger.reason == "new ticket (subject tag #4 but the sender is not a participant)"
    missing = decide_thread(m, {}, tag_ticket_id=None, tag_number=4)
    assert (missing.ticket_id, missing.follows_id) == (None, None)


def test_headers_win_over_the_tag() -> None:
    m = message(in_reply_to=("p@x",), subject="Re: [#4] thing")
    decision = decide_thread(
        m, {"p@x": 8}, tag_ticket_id=4, sender_is_participant=True, tag_number=4,
        participant_in={4, 8},
    )  # fmt: skip
    assert decision.ticket_id == 8


# -- who may join: participants, and replies to our own signed Message-IDs ------------------


def test_a_reference_from_a_stranger_opens_a_new_ticket_that_follows_it() -> None:
    m = message(in_reply_to=("customer@x",))
    decision = decide_thread(m, {"customer@x": 12}, numbers={12: 112})
    assert (decision.ticket_id, decision.merge_ids, decision.follows_id) == (None, (), 12)
    assert decision.reason == "new ticket (references #112 but the sender is not a participant)"


def test_a_reply_to_our_signed_message_id_joins_from_anyone() -> None:
    m = message(in_reply_to=("ours@desk",), references=("customer@x", "ours@desk"))
    decision = decide_thread(m, {"ours@desk": 12, "customer@x": 12}, verified={"ours@desk"})
    assert (decision.ticket_id, decision.follows_id) == (12, None)
    assert decision.reason == "in-reply-to <ours@desk>"


def test_the_join_policy_lets_every_reference_join() -> None:
    m = message(in_reply_to=("customer@x",))
    decision = decide_thread(m, {"customer@x": 12}, policy="join")
    assert (decision.ticket_id, decision.follows_id) == (12, None)
    assert decide_thread(message("parent@x"), {"parent@x": 9}, policy="join").ticket_id == 9


def test_a_stranger_cannot_claim_to_be_the_parent_of_a_stored_reply() -> None:
    decision = decide_thread(message("parent@x"), {"parent@x": 9})
    assert (decision.ticket_id, decision.follows_id) == (None, 9)


def test_the_oldest_refused_ticket_is_the_one_followed() -> None:
    m = message(in_reply_to=("b@x",), references=("a@x", "b@x"))
    decision = decide_thread(m, {"a@x": 7, "b@x": 3})
    assert (decision.ticket_id, decision.merge_ids, decision.follows_id) == (None, (), 3)


def test_only_joinable_references_merge_tickets() -> None:
    """One message naming two customers' tickets must not merge them unless the sender may
    join both: else a stranger could pour one customer's conversation into another's."""
    m = message(in_reply_to=("a@x",), references=("b@x", "a@x"))
    known = {"a@x": 5, "b@x": 2}
    one_side = decide_thread(m, known, participant_in={5}, numbers={2: 2, 5: 5})
    assert (one_side.ticket_id, one_side.merge_ids) == (5, ())
    assert one_side.reason == (
        "in-reply-to <a@x>; not merged with #2: the sender is not a participant"
    )
    signed = decide_thread(m, known, verified={"a@x"}, participant_in={2})
    assert (signed.ticket_id, signed.merge_ids) == (2, (5,))
    assert decide_thread(m, known, policy="join").merge_ids == (5,)


def test_a_participants_tag_wins_over_references_it_may_not_follow() -> None:
    m = message(in_reply_to=("other@x",), subject="Re: [#4] thing")
    decision = decide_thread(
        m, {"other@x": 8}, tag_ticket_id=4, sender_is_participant=True, tag_number=4,
        participant_in={4},
    )  # fmt: skip
    assert (decision.ticket_id, decision.merge_ids, decision.follows_id) == (4, (), None)
    assert "not merged with #8" in decision.reason


def test_equal_subject_alone_never_joins() -> None:
    assert decide_thread(message(subject="Re: Printer broken"), {}).ticket_id is None
