"""Guaranteed direct messages leave in batches: the first of a burst at once, the others
together at the turn's end, within the count and byte bounds, never reordered."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster.core.batches import RECORD_OVERHEAD_BYTES, Batches, Transmit
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee

ALO = DeliveryGuarantee.AT_LEAST_ONCE
ADDRESS = "127.0.0.1:7000"


#: a record of handler "h" with an empty payload weighs this much in a batch
EMPTY = len("h") + RECORD_OVERHEAD_BYTES


def data(seq: int, epoch: int = 1, low: int = 1) -> msg.Data:
    return msg.Data("h", 100 + seq, seq, low, ALO, epoch)


class Outbox:
    """What the outbox says of the messages: all unsettled, but those marked settled."""

    def __init__(self) -> None:
        self.settled: set[int] = set()
        self.low = 1

    def holds(self, target: str, epoch: int, seq: int) -> bool:
        return seq not in self.settled

    def low_of(self, target: str) -> int:
        return self.low


def batches(max_count: int = 64, max_bytes: int = 1000, outbox: Outbox | None = None) -> Batches:
    outbox = outbox or Outbox()
    return Batches(max_count, max_bytes, outbox.holds, outbox.low_of)


def unpacked(transmits: list[Transmit]) -> list[tuple[str, int, bytes]]:
    """Every DATA the transmits carry, in order: (address, seq, payload)."""
    out = []
    for address, message, payload in transmits:
        if isinstance(message, msg.Data):
            out.append((address, message.seq, payload))
            continue
        assert isinstance(message, msg.DataBatch)
        assert len(message.records) > 1
        start = 0
        for _, _, seq, _, size in message.records:
            out.append((address, seq, payload[start : start + size]))
            start += size
        assert start == len(payload)
    return out


def test_the_first_leaves_at_once_the_rest_at_the_turns_end() -> None:
    outbox = Outbox()
    open_ = batches(outbox=outbox)
    first = open_.add("b", ADDRESS, data(1), b"one")
    assert first == [(ADDRESS, data(1), b"one")]
    assert not open_  # a lone send asks for no turn's end
    assert open_.add("b", ADDRESS, data(2, low=1), b"two") == []
    assert open_  # one waits: the turn's end has work
    assert open_.add("b", ADDRESS, data(3, low=1), b"three") == []
    outbox.low = 2  # message 1 was settled meanwhile
    ended = open_.end()
    assert not open_
    records = (("h", 102, 2, ALO, 3), ("h", 103, 3, ALO, 5))
    # the outbox's low as the batch leaves: everything below it is settled
    assert ended == [("b", (ADDRESS, msg.DataBatch(2, 1, records), b"twothree"))]


def test_what_was_settled_while_it_waited_does_not_leave() -> None:
    outbox = Outbox()
    open_ = batches(outbox=outbox)
    for seq in range(1, 5):
        open_.add("b", ADDRESS, data(seq), bytes([seq]))
    outbox.settled |= {2, 4}  # expired while waiting: no copy may leave after that
    assert unpacked([t for _, t in open_.end()]) == [(ADDRESS, 3, b"\x03")]
    for seq in range(5, 8):
        open_.add("b", ADDRESS, data(seq), b"")
    outbox.settled |= {6, 7}
    assert open_.end() == []


def test_a_lone_message_in_a_batch_leaves_as_plain_data() -> None:
    open_ = batches()
    open_.add("b", ADDRESS, data(1), b"x")
    open_.add("b", ADDRESS, data(2), b"y")
    assert open_.end() == [("b", (ADDRESS, data(2), b"y"))]
    assert open_.end() == []


def test_a_full_batch_leaves_at_once() -> None:
    open_ = batches(max_count=3)
    open_.add("b", ADDRESS, data(1), b"")
    assert open_.add("b", ADDRESS, data(2), b"a") == []
    assert open_.add("b", ADDRESS, data(3), b"b") == []
    (out,) = open_.add("b", ADDRESS, data(4), b"c")
    assert [seq for _, seq, _ in unpacked([out])] == [2, 3, 4]
    assert not open_
    assert open_.end() == []


def test_bytes_bound_a_batch_and_a_large_message_goes_alone_in_order() -> None:
    """Payloads and records both count: each frame of a batch stays within the bound."""
    open_ = batches(max_bytes=2 * EMPTY + 10)
    open_.add("b", ADDRESS, data(1), b"")
    assert open_.add("b", ADDRESS, data(2), b"123456") == []
    # would pass the bound: what waits leaves first, this one waits
    assert unpacked(open_.add("b", ADDRESS, data(3), b"7890a")) == [(ADDRESS, 2, b"123456")]
    # larger than a batch may be: what waits leaves, then this one, alone
    big = open_.add("b", ADDRESS, data(4), b"x" * (EMPTY + 11))
    assert unpacked(big) == [(ADDRESS, 3, b"7890a"), (ADDRESS, 4, b"x" * (EMPTY + 11))]


def test_a_new_numbering_or_address_closes_the_batch() -> None:
    open_ = batches()
    open_.add("b", ADDRESS, data(1), b"")
    open_.add("b", ADDRESS, data(2), b"a")
    out = open_.add("b", ADDRESS, data(1, epoch=2), b"new")
    assert unpacked(out) == [(ADDRESS, 2, b"a"), (ADDRESS, 1, b"new")]
    moved = open_.add("b", "127.0.0.1:9000", data(2, epoch=2), b"there")
    assert unpacked(moved) == [("127.0.0.1:9000", 2, b"there")]


def test_receivers_batch_apart_and_a_dropped_one_sends_nothing() -> None:
    open_ = batches()
    for target in ("b", "c"):
        open_.add(target, target, data(1), b"")
        open_.add(target, target, data(2), target.encode())
        open_.add(target, target, data(3), target.encode())
    open_.drop("b")
    assert open_  # c's wait
    ended = open_.end()
    assert [target for target, _ in ended] == ["c"]
    assert unpacked([t for _, t in ended]) == [("c", 2, b"c"), ("c", 3, b"c")]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 200),
    st.lists(st.tuples(st.sampled_from("bc"), st.integers(0, 150), st.booleans()), max_size=60),
)
def test_property_every_message_leaves_once_in_order_within_bounds(
    max_count: int, max_bytes: int, sends: list[tuple[str, int, bool]]
) -> None:
    """Whatever the sizes and turn ends: each receiver gets each message once, in the
    order sent, in batches of at most ``max_count`` messages and ``max_bytes`` of
    payloads and records (a message larger than that alone)."""
    open_ = batches(max_count, max_bytes)
    sent: dict[str, list[int]] = {"b": [], "c": []}
    out: list[Transmit] = []
    for seq, (target, size, turn_ends) in enumerate(sends, start=1):
        sent[target].append(seq)
        out += open_.add(target, target, data(seq), bytes(size))
        if turn_ends:
            out += [t for _, t in open_.end()]
    out += [t for _, t in open_.end()]
    assert not open_
    for _, message, payload in out:
        if isinstance(message, msg.DataBatch):
            assert 1 < len(message.records) <= max_count
            assert len(payload) + EMPTY * len(message.records) <= max_bytes
    got: dict[str, list[int]] = {"b": [], "c": []}
    for address, seq, payload in unpacked(out):
        got[address].append(seq)
        assert len(payload) == sends[seq - 1][1]
    assert got == sent
