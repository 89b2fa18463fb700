"""The CAUSAL stamp: a CAUSAL message's dependencies, ahead of its body in its payload
frame (docs/protocol.md 6.12).

The stamp belongs to the payload, as the body does, not to the frame codec: the core
writes and reads it (core/causal.py), and the publisher's retransmit buffer keeps it
with the body, so that a repaired publication carries it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from zcluster.errors import WireError
from zcluster.names import MAX_TOPIC_BYTES, check_name, check_topic, show
from zcluster.protocol.messages import DIRECT_STREAM, TOPIC_STREAM, Dependency

_DEPENDENCY_FIELDS_COUNT = 6
_UINT64_MAX = 2**64 - 1


def stamp(dependencies: Sequence[Dependency], body: bytes) -> bytes:
    """A CAUSAL message's payload frame: its dependencies (a msgpack array), then the body."""
    packed: bytes = msgpack.packb(dependencies)
    return packed + body


def read_stamp(payload: bytes, max_count: int) -> tuple[tuple[Dependency, ...], bytes]:
    """Split a CAUSAL payload frame into its dependencies (at most ``max_count``, each
    checked) and the body; WireError if it is not one."""
    unpacker = msgpack.Unpacker(
        max_buffer_size=len(payload) or 1,
        max_array_len=max(max_count, _DEPENDENCY_FIELDS_COUNT),
        max_map_len=0,
        max_bin_len=0,
        max_ext_len=0,
        max_str_len=MAX_TOPIC_BYTES,
    )
    try:
        unpacker.feed(payload)
        raw = unpacker.unpack()
        offset = unpacker.tell()
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise WireError(
            f"CAUSAL payload has no valid dependency list: {type(exc).__name__}"
        ) from None
    if type(raw) is not list or len(raw) > max_count:
        raise WireError(f"CAUSAL dependencies must be a list of at most {max_count}")
    try:
        dependencies = tuple(map(_dependency, raw))
    except (UnicodeError, ValueError) as exc:
        raise WireError(f"CAUSAL dependency is invalid: {exc}") from None
    return dependencies, payload[offset:]


def _dependency(value: Any) -> Dependency:
    if type(value) is not list or len(value) != _DEPENDENCY_FIELDS_COUNT:
        raise WireError(f"a dependency is a list of {_DEPENDENCY_FIELDS_COUNT} fields")
    origin, kind, channel, incarnation, epoch, seq = value
    if kind == DIRECT_STREAM and type(kind) is int:
        channel = check_name(channel, "node id")
    elif kind == TOPIC_STREAM and type(kind) is int:
        channel = check_topic(channel)
    else:
        raise WireError(f"unknown dependency stream kind {show(kind)}")
    for number in (incarnation, epoch, seq):
        if type(number) is not int or not 0 <= number <= _UINT64_MAX:
            raise WireError("a dependency's numbers are unsigned 64-bit integers")
    if seq == 0:
        raise WireError("sequence numbers start at 1")
    return (check_name(origin, "node id"), kind, channel, incarnation, epoch, seq)
