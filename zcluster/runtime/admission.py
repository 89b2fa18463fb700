"""How many connections peers may hold to our ROUTER and PUB, so that what they make
ZeroMQ hold stays within one budget in bytes.

libzmq bounds what one connection queues (its high-water mark, in messages, each up
to ``max_message_bytes``) but not how many connections a bound socket accepts. The
node lets a connection in at its handshake (the ZAP handler, in every security mode)
only while fewer than ``receive_queues_max_bytes // receive_queue_max_bytes`` are in,
and at most ``inbound_connections_per_address_max_count`` from one address. The
high-water mark itself is set once, before binding: libzmq 4.3.5 may touch a freed
connection when it is changed on a socket whose connections close meanwhile. Pure
bookkeeping: the driver reports connections opened (with their peer's address) and
closed, and asks before letting one in.

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
        self.per_address_max_count = config.inbound_connections_per_address_max_count
        #: connections let in at most
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
        address = normal_address(address)
        self._open[key] = address
        self._open_by_address[address] += 1

    def closed(self, key: Hashable) -> str | None:
        """A connection ended (let in or not). The address it was from, if it was one
        still waiting (its address had more open than let in); otherwise None."""
        address = self._open.pop(key, None)
        if address is None:
            return None
        left = self._open_by_address[address] - 1
        if left:
            self._open_by_address[address] = left
        else:
            del self._open_by_address[address]
        waiting = self._admitted[address] <= left
        if not waiting:
            self._set_admitted(address, left)
        if self.admitted_count > len(self._open):  # let in under an address never seen open
            for other, count in list(self._admitted.items()):
                self._set_admitted(other, min(count, self._open_by_address.get(other, 0)))
        return address if waiting else None

    def is_full(self, address: str) -> bool:
        """No room for another connection, from ``address`` or at all."""
        return (
            self.admitted_count >= self.connections_max_count
            or self._admitted[normal_address(address)] >= self.per_address_max_count
        )

    def admit(self, address: str) -> bool:
        """Let one connection from ``address`` in, if there is room and one open from
        there is not in yet; True if so."""
        address = normal_address(address)
        if self.is_full(address) or self._admitted[address] >= self._open_by_address.get(
            address, 0
        ):
            return False
        self._set_admitted(address, self._admitted[address] + 1)
        return True

    def _set_admitted(self, address: str, count: int) -> None:
        self.admitted_count += count - self._admitted[address]
        if count:
            self._admitted[address] = count
        else:
            del self._admitted[address]


def normal_address(address: str) -> str:
    """One spelling per address, as ZAP and the socket name it: an IPv4 address mapped
    into IPv6 as itself, without an IPv6 zone."""
    address = address.partition("%")[0].lower()
    return address.removeprefix("::ffff:") if "." in address else address
