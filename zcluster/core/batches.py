"""Guaranteed direct messages that leave together: one DATA_BATCH per receiver and burst.

The first message of a burst to a receiver leaves at once and opens a batch;
those that follow before the host's turn ends (``TurnEnded``, or a tick) wait
in it and leave together as one DATA_BATCH: one ZeroMQ message, and one
wake-up of the receiver, for many. A batch that reaches
``data_batch_max_count`` messages or ``data_batch_max_bytes`` of payload
leaves at once; a message larger than that leaves alone. Used only towards
receivers that announced ``batch``.
"""

from __future__ import annotations

import dataclasses

from zcluster.protocol import messages as msg

#: (ROUTER address, message, payload): what to send
Transmit = tuple[str, msg.Message, bytes]


@dataclasses.dataclass(slots=True)
class _Batch:
    address: str
    epoch: int
    items: list[msg.Data]
    payloads: list[bytes]
    size_bytes: int = 0


class Batches:
    """The open batch of each receiver, in the order they were opened."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._open: dict[str, _Batch] = {}

    def __bool__(self) -> bool:
        """Whether a batch is open: the turn's end has work."""
        return bool(self._open)

    def add(self, target: str, address: str, data: msg.Data, payload: bytes) -> list[Transmit]:
        """Take ``data`` for ``target``; returns what must leave now, in order (``data``
        itself when it opens a batch or is too large to wait, else what filled up)."""
        batch = self._open.get(target)
        if batch is None or batch.epoch != data.epoch or batch.address != address:
            out = [] if batch is None else _flushed(batch)
            self._open[target] = _Batch(address, data.epoch, [], [])
            out.append((address, data, payload))
            return out
        size = len(payload)
        if size > self._max_bytes:
            out = _flushed(batch)
            out.append((address, data, payload))
            return out
        out = _flushed(batch) if batch.size_bytes + size > self._max_bytes else []
        batch.items.append(data)
        batch.payloads.append(payload)
        batch.size_bytes += size
        if len(batch.items) >= self._max_count:
            out.extend(_flushed(batch))
        return out

    def end(self) -> list[tuple[str, Transmit]]:
        """Close every batch: ``(receiver, what to send)`` for those that hold messages."""
        opened, self._open = self._open, {}
        return [(target, t) for target, batch in opened.items() for t in _flushed(batch)]

    def drop(self, target: str) -> None:
        """Forget ``target``'s batch unsent (the receiver is gone for good)."""
        self._open.pop(target, None)


def _flushed(batch: _Batch) -> list[Transmit]:
    """What ``batch`` holds, as a message to send (none if empty); it is empty after."""
    items, payloads = batch.items, batch.payloads
    if not items:
        return []
    batch.items, batch.payloads, batch.size_bytes = [], [], 0
    if len(items) == 1:
        return [(batch.address, items[0], payloads[0])]
    records = tuple(
        (d.name, d.number, d.seq, d.guarantee, len(p)) for d, p in zip(items, payloads, strict=True)
    )
    # Every number below the latest low is settled: it holds for the whole batch.
    batch_message = msg.DataBatch(items[-1].low, batch.epoch, records)
    return [(batch.address, batch_message, b"".join(payloads))]
