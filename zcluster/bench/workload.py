"""What a benchmark run sends: the message, its sizes, and how many of them.

Every scenario carries the message of the cross-system comparison
(docs/performance.md): ``{"id": n, "ts": t, "body": b"x" * 64}``, about
92 bytes once packed with msgpack, built afresh for every send.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import msgpack

#: the body of the standard message; with its id and timestamp it packs to about 92 bytes
BODY_BYTES = 64
#: body sizes of the payload scenarios
PAYLOAD_BODIES_BYTES = (100, 10_000, 1_000_000)

DEFAULT_MESSAGES_COUNT = 10_000
QUICK_MESSAGES_COUNT = 1_000
#: measured bursts of zcluster per scenario and repetition; the fastest burst counts
ZCLUSTER_BURSTS_COUNT = 3
#: the same for raw pyzmq, whose bursts last only milliseconds and scatter more
RAW_BURSTS_COUNT = 5
DEFAULT_REPEAT_COUNT = 3
QUICK_REPEAT_COUNT = 1
DEFAULT_CLUSTER_SIZES = (3, 10, 32)
QUICK_CLUSTER_SIZES = (3,)
#: subscriber processes of the fan-out scenario; its bursts carry a half of the pub/sub count
#: (so twice as many deliveries as a 1 -> 1 burst)
FANOUT_SUBSCRIBERS_COUNT = 4
#: pub/sub bursts carry this many times the message count: fan-out runs several times as
#: fast as direct sends, and a burst of a few milliseconds measures the scheduler more than
#: the code (raw pyzmq's 10,000-message bursts scattered by +-25 %)
PUBSUB_MESSAGES_SCALE = 3

_MIN_ROUND_TRIPS_COUNT = 100
_MIN_WARMUP_COUNT = 50
_MIN_PAYLOAD_MESSAGES_COUNT = 10
#: a payload burst moves at most this many bytes per message of the standard count
_PAYLOAD_BUDGET_BYTES_PER_MESSAGE = 15_000
#: unacknowledged messages held for the memory scenario; below the default outbox_max_count
_MAX_PENDING_COUNT = 5_000
_PEERS_COUNT = 8
_QUICK_PEERS_COUNT = 2


def body(size_bytes: int = BODY_BYTES) -> bytes:
    return b"x" * size_bytes


def make_message(seq: int, body: bytes) -> dict[str, Any]:
    """The message number ``seq``, stamped now (time.perf_counter, one clock for all processes)."""
    return {"id": seq, "ts": time.perf_counter(), "body": body}


def packed_bytes(body: bytes) -> int:
    """Size of one message with this body once msgpack packs it."""
    return len(msgpack.packb(make_message(0, body)))


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much one repetition of each scenario sends; all derived from ``messages_count``."""

    messages_count: int
    bursts_count: int
    round_trips_count: int
    warmup_count: int
    pending_count: int
    peers_count: int

    @classmethod
    def for_run(cls, messages_count: int, *, quick: bool) -> Sizes:
        """``messages_count`` per burst; a quick run measures zcluster in one burst."""
        return cls(
            messages_count=messages_count,
            bursts_count=1 if quick else ZCLUSTER_BURSTS_COUNT,
            round_trips_count=max(_MIN_ROUND_TRIPS_COUNT, messages_count // 2),
            warmup_count=max(_MIN_WARMUP_COUNT, messages_count // 20),
            pending_count=min(_MAX_PENDING_COUNT, max(_MIN_WARMUP_COUNT, messages_count // 2)),
            peers_count=_QUICK_PEERS_COUNT if quick else _PEERS_COUNT,
        )

    @property
    def pubsub_messages_count(self) -> int:
        """Messages per pub/sub 1 -> 1 burst."""
        return self.messages_count * PUBSUB_MESSAGES_SCALE

    @property
    def fanout_messages_count(self) -> int:
        """Messages per fan-out burst."""
        return max(1, self.pubsub_messages_count // 2)

    def payload_messages_count(self, body_bytes: int) -> int:
        """Messages per payload burst: the pub/sub count, or fewer for large bodies."""
        budget_bytes = self.messages_count * _PAYLOAD_BUDGET_BYTES_PER_MESSAGE
        return max(
            _MIN_PAYLOAD_MESSAGES_COUNT,
            min(self.pubsub_messages_count, budget_bytes // body_bytes),
        )

    def warmup_for(self, messages_count: int) -> int:
        """Warm-up messages before bursts of ``messages_count``: a tenth of one at most."""
        return max(1, min(self.warmup_count, messages_count // 10))
