"""Every integer a peer sends may be at the edge of its range (0, 1, 2^32, 2^63,
2^64-1, ...): whatever a live member sends, with any of its integers so, the core
neither raises nor emits a message the wire cannot carry (docs/protocol.md 7.4).

Each example takes a valid message of one kind, puts edge values in its integer fields,
keeps it if it still decodes, and feeds it (twice, and again after time passes) to a
core that subscribes, publishes, sends with a guarantee and receives guaranteed messages
from the sender, so that every component meets it with state of its own.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.core.test_contract import core_in, peer
from tests.core.test_wire import CASES, FULL, payload_for
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.errors import WireError
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.wire import PROTOCOL_VERSION, Encoder, decode_header

EDGES = (0, 1, 2, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1)
SENDER = peer("a")
LIMIT = 1 << 20


def _ints_replaced(value: Any, draw: Any) -> Any:
    """``value`` with each integer (not a boolean) replaced by a drawn edge value."""
    if type(value) is int:
        return draw(st.one_of(st.sampled_from(EDGES), st.just(value)))
    if isinstance(value, list):
        return [_ints_replaced(v, draw) for v in value]
    return value


@st.composite
def edge_messages(draw: Any) -> msg.Envelope:
    kind = draw(st.sampled_from(sorted(CASES)))
    body = _ints_replaced(list((FULL.get(kind) or CASES[kind])[0]), draw)
    header = msgpack.packb(
        [
            PROTOCOL_VERSION,
            int(kind),
            SENDER.node_id,
            SENDER.incarnation,
            draw(st.sampled_from(EDGES)),
            body,
        ]
    )
    try:
        return decode_header(header, LIMIT, payload_for(kind))
    except WireError:
        return draw(st.nothing())  # the edge values made it invalid: the decoder's case


def busy_core() -> NodeCore:
    core = core_in(SENDER)
    core.handle(ev.TopicSubscribed("news"), 0.0)
    core.handle(ev.PublishRequested("news", b"x", DeliveryGuarantee.AT_LEAST_ONCE), 0.0)
    for number in (1, 2):
        send = ev.SendRequested("a", "h", b"p", DeliveryGuarantee.ORDERED, number, 10.0)
        core.handle(send, 0.0)
    data = msg.Data("h", 1, 1, 1, DeliveryGuarantee.ORDERED, 1)
    core.handle(ev.EnvelopeReceived(msg.Envelope("a", SENDER.incarnation, 9, data), b"p"), 0.0)
    return core


def encodable(effects: list[fx.Effect], encoder: Encoder) -> None:
    for effect in effects:
        if isinstance(effect, fx.Send | fx.Publish):
            decode_header(encoder.header(effect.message), LIMIT * 16)


@settings(max_examples=400, deadline=None, database=None)
@given(edge_messages())
def test_no_integer_at_the_edge_makes_the_core_raise_or_send_what_the_wire_cannot_carry(
    envelope: msg.Envelope,
) -> None:
    core = busy_core()
    encoder = Encoder(core.node_id, core.incarnation)
    payload = b"p"
    if isinstance(envelope.message, msg.DataBatch):  # its sizes must add up to its payload
        size = sum(record[4] for record in envelope.message.records)
        assume(size <= 1 << 16)
        payload = b"p" * size
    for now in (0.1, 0.1, 0.5):
        encodable(core.handle(ev.EnvelopeReceived(envelope, payload), now), encoder)
        encodable(core.handle(ev.TurnEnded(), now), encoder)
    for step in range(1, 40):
        encodable(core.handle(ev.TimerFired(), 0.5 + step * 0.1), encoder)
        encodable(core.handle(ev.TurnEnded(), 0.5 + step * 0.1), encoder)
