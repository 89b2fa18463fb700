"""How many connections peers may hold to our ROUTER and PUB, and how much each may
queue, so that what they make ZeroMQ hold stays within one budget in bytes.

libzmq bounds what one connection queues (its high-water mark, in messages, each up
to ``max_message_bytes``) but not how many connections a bound socket accepts. The
node lets a connection in at its handshake (the ZAP handler, in every security mode)
only while there is room, and shares the budget among those let in: the high-water
mark shrinks as connections come, from ``receive_queue_max_bytes`` each down to one
message each at ``connections_max_count`` (libzmq applies a new mark to open
connections too). Pure bookkeeping: the driver reports connections opened (with their
peer's address) and closed, and asks before letting one in.

libzmq's ZAP request names the peer's address but not the connection, so which open
connection a ZAP answer let in is not known: an address's admitted count is kept at
most its open count, which a close brings down (docs/architecture.md, "Memory").
"""

from __future__ import annotations

import collections
from collections.abc import Hashable

from zcluster.config import NodeConfig


class InboundBudget:
    def __init__(self, config: NodeConfig) -> None:
        self._message_bytes = config.max_message_bytes
        self._total_bytes = config.receive_queues_max_bytes
        self._largest_queue_count = config.receive_hwm_count
        self.per_address_max_count = config.inbound_connections_per_address_max_count
        #: connections let in at most, each queueing at least one message
        self.connections_max_count = config.inbound_connections_max_count
        #: open connections (let in or still in their handshake): key -> peer address
        self._open: dict[Hashable, str] = {}
        self._open_by_address: collections.Counter[str] = collections.Counter()
        #: connections let in, per address (at most that address's open count)
        self._admitted: collections.Counter[str] = collections.Counter()
        self.admitted_count = 0

    def opened(self, key: Hashable, address: str) -> None:
        """A connection was accepted (its handshake begins)."""
        if key in self._open:  # its close went unreported (the key is reused)
            self.closed(key)
        address = _normal(address)
        self._open[key] = address
        self._open_by_address[address] += 1

    def closed(self, key: Hashable) -> None:
        """A connection ended (let in or not)."""
        address = self._open.pop(key, None)
        if address is None:
            return
        left = self._open_by_address[address] - 1
        if left:
            self._open_by_address[address] = left
        else:
            del self._open_by_address[address]
        if self._admitted[address] > left:
            self._set_admitted(address, left)
        if self.admitted_count > len(self._open):  # let in under an address never seen open
            for other, count in list(self._admitted.items()):
                self._set_admitted(other, min(count, self._open_by_address.get(other, 0)))

    def has_room(self, address: str) -> bool:
        return self.admitted_count < self.connections_max_count and self._admitted[
            _normal(address)
        ] < min(self.per_address_max_count, self._open_by_address.get(_normal(address), 0))

    def admit(self, address: str) -> bool:
        """Let one connection from ``address`` in, if there is room; True if so."""
        if not self.has_room(address):
            return False
        address = _normal(address)
        self._set_admitted(address, self._admitted[address] + 1)
        return True

    def _set_admitted(self, address: str, count: int) -> None:
        self.admitted_count += count - self._admitted[address]
        if count:
            self._admitted[address] = count
        else:
            del self._admitted[address]

    def queue_count(self) -> int:
        """The high-water mark (messages per connection) for the connections let in:
        together they queue at most ``receive_queues_max_bytes``."""
        share = self._total_bytes // max(1, self.admitted_count) // self._message_bytes
        return max(1, min(self._largest_queue_count, share))


def _normal(address: str) -> str:
    """One spelling per address, as ZAP and the socket name it: an IPv4 address mapped
    into IPv6 as itself, without an IPv6 zone."""
    address = address.partition("%")[0].lower()
    return address.removeprefix("::ffff:") if "." in address else address
