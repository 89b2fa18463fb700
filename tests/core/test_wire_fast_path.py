"""``wire.read_publish``: the fast reader of fan-out accepts nothing the full decoder would not.

Whatever header it accepts, ``decode_header`` decodes as a PUBLISH with the same
sender, incarnation, number and guarantee; whatever it refuses still gets the
full decoder (and its precise error), so being strict costs speed, never a message.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster import wire
from zcluster.errors import WireError
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee

G = DeliveryGuarantee
UINT64_MAX = 2**64 - 1


def full_decode(header: bytes) -> msg.Envelope | None:
    try:
        return wire.decode_header(header, 1 << 20)
    except WireError:
        return None


def test_the_encoders_unnumbered_header_takes_the_fast_path() -> None:
    encoder = wire.Encoder("publisher-1", UINT64_MAX)
    wire.check_name("publisher-1")  # a sender the node has validated once before
    first = encoder.publication_header(0, G.AT_MOST_ONCE)
    second = encoder.publication_header(0, G.AT_MOST_ONCE)
    assert wire.read_publish(first) == ("publisher-1", UINT64_MAX, 0, G.AT_MOST_ONCE)
    envelope = full_decode(second)
    assert envelope is not None and envelope.message == msg.Publish(0, G.AT_MOST_ONCE)
    assert (envelope.sender, envelope.incarnation, envelope.seq) == ("publisher-1", UINT64_MAX, 2)


def test_numbered_publications_are_read_and_other_kinds_take_the_full_decoder() -> None:
    encoder = wire.Encoder("n1", 7)
    wire.check_name("n1")
    assert wire.read_publish(encoder.header(msg.Publish(3, G.AT_LEAST_ONCE))) == (
        "n1",
        7,
        3,
        G.AT_LEAST_ONCE,
    )
    assert wire.read_publish(encoder.header(msg.Listen(("t",)))) is None
    assert wire.read_publish(b"") is None
    assert wire.read_publish(b"\xc1") is None  # never valid msgpack


@pytest.mark.parametrize(
    "seq", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, UINT64_MAX]
)
def test_every_width_of_seq_is_recognised_by_the_remembered_prefix(seq: int) -> None:
    wire.check_name("n2")
    wire.read_publish(msgpack.packb([1, 13, "n2", 2**40, 1, [0, 0]]))  # remembered
    header = msgpack.packb([1, 13, "n2", 2**40, seq, [0, 0]])
    assert wire.read_publish(header) == ("n2", 2**40, 0, G.AT_MOST_ONCE)
    bad = msgpack.packb([1, 13, "n2", 2**40, None, [0, 0]])  # nil is not a seq
    assert wire.read_publish(bad) is None
    assert full_decode(bad) is None


WIDTHS = [1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, UINT64_MAX]


@pytest.mark.parametrize("topic_seq", WIDTHS)
@pytest.mark.parametrize("seq", [0, *WIDTHS])
def test_numbered_headers_of_every_width_are_read_by_the_remembered_prefix(
    seq: int, topic_seq: int
) -> None:
    wire.check_name("n3")
    wire.read_publish(msgpack.packb([1, 13, "n3", 9, 1, [1, 3]]))  # read in full: remembered
    header = msgpack.packb([1, 13, "n3", 9, seq, [topic_seq, 3]])
    assert wire.read_publish(header) == ("n3", 9, topic_seq, G.ORDERED)
    for bad_body in ([0, 3], [topic_seq, 5], [topic_seq, 0], [None, 1], [topic_seq, 1, 0]):
        assert wire.read_publish(msgpack.packb([1, 13, "n3", 9, seq, bad_body])) is None


def test_a_sender_never_validated_takes_the_full_decoder_once() -> None:
    header = msgpack.packb([1, 13, "fresh-sender-0", 1, 1, [0, 0]])
    assert wire.read_publish(header) is None
    assert full_decode(header) is not None  # validates, and remembers, the name
    assert wire.read_publish(header) == ("fresh-sender-0", 1, 0, G.AT_MOST_ONCE)


def test_an_oversized_header_takes_the_full_decoder() -> None:
    wire.check_name("n1")
    header = msgpack.packb([1, 13, "n1", 1, 1, [0, 0, "x" * 2000]])
    assert wire.read_publish(header) is None
    assert full_decode(header) is not None


_value = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=0, max_value=20),
    st.booleans(),
    st.floats(allow_nan=False),
    st.none(),
    st.sampled_from(["n1", "n 1", "", "publisher-1", "never-seen"]),
    st.binary(max_size=4),
    st.lists(st.integers(0, 3), max_size=3),
)


def check_mutant(
    base: list[Any], changes: list[tuple[int, Any]], extras: list[Any], unchanged: Any
) -> None:
    """``base`` with fields replaced (positions 0..5 of the header, 6..7 of the body) and
    elements appended: the unchanged header reads as ``unchanged``, and whatever the fast
    reader accepts, the full decoder decodes to the same publication."""
    wire.check_name("n1")
    raw = [*base[:5], list(base[5])]
    for position, value in changes:
        if position < 6:
            raw[position] = value
        elif type(raw[5]) is list and len(raw[5]) == 2:
            raw[5][position - 6] = value
    raw += extras
    header = msgpack.packb(raw, use_bin_type=True)
    fast = wire.read_publish(header)
    if not changes and not extras:
        assert fast == unchanged, "the unchanged header must be read"
    if fast is None:
        return
    envelope = full_decode(header)
    assert envelope is not None, raw
    assert envelope.message == msg.Publish(fast[2], fast[3]), raw
    assert (envelope.sender, envelope.incarnation) == fast[:2]


_changes = st.lists(st.tuples(st.integers(0, 7), _value), max_size=2)


@settings(max_examples=1000, deadline=None)
@given(_changes, st.lists(_value, max_size=3))
def test_what_the_fast_reader_accepts_the_full_decoder_accepts_alike(
    changes: list[tuple[int, Any]], extras: list[Any]
) -> None:
    check_mutant([1, 13, "n1", 5, 9, [0, 0]], changes, extras, ("n1", 5, 0, G.AT_MOST_ONCE))


@settings(max_examples=1000, deadline=None)
@given(_changes, st.lists(_value, max_size=2))
def test_what_the_numbered_reader_accepts_the_full_decoder_accepts_alike(
    changes: list[tuple[int, Any]], extras: list[Any]
) -> None:
    check_mutant([1, 13, "n1", 5, 9, [4, 1]], changes, extras, ("n1", 5, 4, G.AT_LEAST_ONCE))


# ---------------------------------------------------------------- one-frame publications


@settings(max_examples=300, deadline=None)
@given(
    st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t and t.isprintable()),
    st.binary(max_size=300),
    st.integers(0, 5),
)
def test_a_one_frame_publication_decodes_as_its_three_frames(
    topic: str, payload: bytes, topic_seq: int
) -> None:
    try:
        wire.check_topic(topic)
    except WireError:
        return
    guarantee = G.AT_LEAST_ONCE if topic_seq else G.AT_MOST_ONCE
    publication = msg.Publish(topic_seq, guarantee)
    # Two encoders in step: the same header seq for both forms.
    three = wire.Encoder("n1", 3).published(topic, publication, payload)
    prefix = wire.one_frame_prefix(topic)
    one = wire.Encoder("n1", 3).publication_frame(prefix, topic_seq, guarantee, payload)
    assert one.startswith(wire.one_frame_prefix(topic))
    assert wire.split_one_frame(one) == three
    assert wire.decode_published([one], 1 << 20) == wire.decode_published(three, 1 << 20)
    built_in_place = wire.Encoder("n1", 3).publication_header(topic_seq, guarantee)
    assert built_in_place == wire.Encoder("n1", 3).header(publication)


@pytest.mark.parametrize(
    "frame",
    [
        b"u",
        b"ut",  # no end of topic
        b"ut\x00",  # no header length
        b"ut\x00\x00",  # half a header length
        b"ut\x00\x00\x09\x96\x01",  # header length past the end
        b"u\x00\x00\x00",  # empty topic
    ],
)
def test_a_malformed_one_frame_publication_is_refused(frame: bytes) -> None:
    assert wire.cut_one_frame(frame) is None
    with pytest.raises(WireError):
        wire.decode_published([frame], 1 << 20)


def test_only_a_publish_travels_in_one_frame() -> None:
    """A BEACON shares its topic's frame (revision 1.2, ``swim``) but never the one-frame
    form; the fast reader leaves it to the full decoder, which takes it as a BEACON."""
    encoder = wire.Encoder("n1", 3)
    wire.check_name("n1")
    three = encoder.published("t", msg.Beacon(5), b"")
    assert three[0] == wire.topic_frame("t")
    assert wire.read_publish(three[1]) is None
    topic, envelope, _ = wire.decode_published(three, 1 << 20)
    assert (topic, envelope.message) == ("t", msg.Beacon(5))
    one = wire.one_frame_prefix("t") + len(three[1]).to_bytes(2, "big") + three[1]
    with pytest.raises(WireError, match="one frame"):
        wire.decode_published([one], 1 << 20)
