"""Guaranteed direct messages that leave together: one DATA_BATCH per receiver and burst.

The first message of a burst to a receiver leaves at once and opens a batch;
those that follow before the batch closes (the end of the host's turn once a
message waits in it, or the next tick) wait in it and leave together as one
DATA_BATCH: one ZeroMQ message, and one wake-up of the receiver, for many. A
lone send waits for nothing and asks for no turn's end. A batch that reaches
``data_batch_max_count`` messages or its byte bound leaves at once; a message
larger than that leaves alone. Used only towards receivers that announced
``batch``.

What leaves is checked against the outbox at that moment: a message settled
while it waited (expired) is not sent, and the batch carries the outbox's
current ``low``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from zcluster.protocol import messages as msg

#: (ROUTER address, message, payload): what to send
Transmit = tuple[str, msg.Message, bytes]
#: whether the outbox still holds (receiver, epoch, seq)
Holds = Callable[[str, int, int], bool]
#: the outbox's low towards a receiver, now
Low = Callable[[str], int]

#: header bytes a record costs beyond its handler name (msgpack markers, three uints, a code)
RECORD_OVERHEAD_BYTES = 40


@dataclasses.dataclass(slots=True)
class _Batch:
    address: str
    epoch: int
    items: list[msg.Data]
    payloads: list[bytes]
    #: payloads and records together: what the batch's frames will weigh
    size_bytes: int = 0


class Batches:
    """The open batch of each receiver, in the order they were opened."""

    def __init__(self, max_count: int, max_bytes: int, holds: Holds, low: Low) -> None:
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._holds = holds
        self._low = low
        self._open: dict[str, _Batch] = {}
        self._waiting = 0  # messages in open batches

    def __bool__(self) -> bool:
        """Whether a message waits in a batch: the turn's end has work."""
        return self._waiting > 0

    @property
    def has_open(self) -> bool:
        """Whether a batch is open (``end`` closes it, even an empty one)."""
        return bool(self._open)

    def add(self, target: str, address: str, data: msg.Data, payload: bytes) -> list[Transmit]:
        """Take ``data`` for ``target``; returns what must leave now, in order (``data``
        itself when it opens a batch or is too large to wait, else what filled up)."""
        batch = self._open.get(target)
        if batch is None or batch.epoch != data.epoch or batch.address != address:
            out = [] if batch is None else self._flushed(target, batch)
            self._open[target] = _Batch(address, data.epoch, [], [])
            out.append((address, data, payload))
            return out
        size = len(payload) + len(data.name) + RECORD_OVERHEAD_BYTES
        if size > self._max_bytes:
            out = self._flushed(target, batch)
            out.append((address, data, payload))
            return out
        out = self._flushed(target, batch) if batch.size_bytes + size > self._max_bytes else []
        batch.items.append(data)
        batch.payloads.append(payload)
        batch.size_bytes += size
        self._waiting += 1
        if len(batch.items) >= self._max_count:
            out.extend(self._flushed(target, batch))
        return out

    def end(self) -> list[tuple[str, Transmit]]:
        """Close every batch: ``(receiver, what to send)`` for those that hold messages."""
        opened, self._open = self._open, {}
        return [(t, sent) for t, batch in opened.items() for sent in self._flushed(t, batch)]

    def drop(self, target: str) -> None:
        """Forget ``target``'s batch unsent (the receiver is gone, down or restarted: its
        outbox resends what is unsettled when it can)."""
        batch = self._open.pop(target, None)
        if batch is not None:
            self._waiting -= len(batch.items)

    def _flushed(self, target: str, batch: _Batch) -> list[Transmit]:
        """What ``batch`` holds and the outbox still does, as a message to send (none if
        nothing); the batch is empty after."""
        items, payloads = batch.items, batch.payloads
        if not items:
            return []
        self._waiting -= len(items)
        batch.items, batch.payloads, batch.size_bytes = [], [], 0
        holds, epoch = self._holds, batch.epoch
        kept = [(d, p) for d, p in zip(items, payloads, strict=True) if holds(target, epoch, d.seq)]
        if not kept:
            return []
        if len(kept) == 1:
            return [(batch.address, kept[0][0], kept[0][1])]
        records = tuple((d.name, d.number, d.seq, d.guarantee, len(p)) for d, p in kept)
        batch_message = msg.DataBatch(self._low(target), epoch, records)
        return [(batch.address, batch_message, b"".join(p for _, p in kept))]
