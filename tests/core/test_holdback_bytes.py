"""What a node holds back behind gaps is bounded in bytes: past holdback_max_bytes an
ORDERED message is not taken (counted) and its sender's next copy is, once there is room."""

from __future__ import annotations

from tests.core.test_contract import CONFIG, core_in, peer
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee

ORDERED = DeliveryGuarantee.ORDERED


def data(sender, seq: int, payload: bytes, header_seq: int) -> ev.EnvelopeReceived:  # type: ignore[no-untyped-def]
    message = msg.Data("h", seq, seq, 1, ORDERED, 1)
    return ev.EnvelopeReceived(
        msg.Envelope(sender.node_id, sender.incarnation, header_seq, message), payload
    )


def delivered(effects: list[fx.Effect]) -> list[bytes]:
    return [e.payload for e in effects if isinstance(e, fx.Deliver)]


def test_ordered_messages_past_the_byte_budget_are_not_held_and_come_again() -> None:
    a = peer("a")
    core = core_in(a, config=CONFIG.replace(holdback_max_bytes=2_000))
    kilobyte = b"k" * 1000
    for seq in (2, 3):  # behind the gap at 1: held, 2,000 bytes
        assert delivered(core.handle(data(a, seq, kilobyte, seq), 0.1)) == []
    assert delivered(core.handle(data(a, 4, kilobyte, 4), 0.1)) == []  # no room
    assert core.counters["reliable_holdback_full"] == 1
    assert delivered(core.handle(data(a, 1, b"1", 5), 0.2)) == [b"1", kilobyte, kilobyte]
    assert delivered(core.handle(data(a, 4, kilobyte, 6), 0.3)) == [kilobyte]  # the copy


def test_a_strangers_data_is_not_taken_at_all() -> None:
    core = core_in(peer("a"))
    stranger = peer("z")
    assert delivered(core.handle(data(stranger, 2, b"x", 1), 0.1)) == []
    assert delivered(core.handle(data(stranger, 1, b"x", 2), 0.1)) == []
    assert core.counters["reliable_sender_unknown"] == 2
