"""What happens to the connections of a node's bound sockets (ROUTER and PUB), seen
through a libzmq monitor on each.

- **A bound on connections.** libzmq bounds what each connection queues, not how many
  connections a bound socket accepts, so a peer opening connection after connection
  would multiply the node's memory (docs/architecture.md, "Memory"). Past
  ``connections_max_count`` open connections to one socket, a new one is shut down as
  soon as it is accepted (counted ``connections_refused_limit``): libzmq offers no call
  to close one connection of a bound socket, so the watch shuts the accepted file
  descriptor down and libzmq, reading its end, closes it as a peer's departure.
- **Handshakes libzmq ends itself** (secured modes): a plaintext client on a Curve
  socket, garbage in place of a greeting, a client that cannot decrypt our server's
  answer never reach the ZAP handler; the watch reports them to the policy, which
  counts them with the others (``auth_refused_handshake_<what>``).

A socket has one monitor, so both jobs share it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import cast

import zmq
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger("zcluster.transport")

_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
#: events read per turn of the loop, before others get their turn
_BATCH_COUNT = 64
#: a refused connection is logged at most this often
_LOG_INTERVAL_S = 10.0

#: called with (reason, detail) for a handshake libzmq failed
HandshakeFailed = Callable[[str, str], object]


class ConnectionWatch:
    """Counts the connections of each bound socket, shuts down those past the limit and
    reports failed handshakes."""

    def __init__(
        self,
        sockets: dict[str, zmq.Socket[bytes]],
        loop: asyncio.AbstractEventLoop,
        max_count: int,
        handshake_failed: HandshakeFailed | None = None,
    ) -> None:
        self._sockets = sockets
        self._loop = loop
        self._max_count = max_count
        self._handshake_failed = handshake_failed
        self.counters: collections.Counter[str] = collections.Counter()
        #: per socket name: the descriptors of its open connections
        self._open: dict[str, set[int]] = {name: set() for name in sockets}
        self._logged_at = -_LOG_INTERVAL_S
        events = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
        if handshake_failed is not None:
            events |= _FAILURES
        #: per watched socket's name ("direct", "pubsub"): its monitor
        self._monitors: dict[str, zmq.Socket[bytes]] = {}
        for name, sock in sockets.items():
            monitor = sock.get_monitor_socket(events)
            self._monitors[name] = monitor
            loop.add_reader(self._fd(monitor), self._read, name)
            loop.call_soon(self._read, name)  # edge-triggered: it may not fire for the first

    def open_count(self) -> int:
        """Connections open to the watched sockets, all together."""
        return sum(len(fds) for fds in self._open.values())

    @staticmethod
    def _fd(monitor: zmq.Socket[bytes]) -> int:
        return cast(int, monitor.getsockopt(zmq.FD))

    def _read(self, name: str) -> None:
        monitor = self._monitors.get(name)
        if monitor is None:
            return
        for _ in range(_BATCH_COUNT):
            if not cast(int, monitor.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return
            event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_ACCEPTED:
                self._accepted(name, value)
            elif kind == zmq.EVENT_DISCONNECTED:
                self._open[name].discard(value)
            elif self._handshake_failed is not None:
                what = "protocol" if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL else "failed"
                self._handshake_failed(
                    f"handshake_{what}",
                    f"a {name} handshake from {event['endpoint']!r} failed in ZeroMQ "
                    f"(code {value}: plaintext, garbage or a wrong key)",
                )
        self._loop.call_soon(self._read, name)  # more may wait: the edge will not fire again

    def _accepted(self, name: str, fd: int) -> None:
        open_fds, bound = self._open[name], self._sockets[name]
        if len(open_fds) >= self._max_count:
            # A departure whose event was lost (a monitor's queue is bounded) must not
            # keep its place: check the ones held before refusing.
            open_fds.difference_update([held for held in open_fds if not _ours(held, bound)])
        if len(open_fds) < self._max_count:
            open_fds.add(fd)
            return
        if not _ours(fd, bound, shut_down=True):
            return  # already closed by libzmq (its DISCONNECTED follows, or has passed)
        self.counters["connections_refused_limit"] += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_INTERVAL_S:
            self._logged_at = now
            log.warning(
                "a connection to the %s socket refused: %d are open, the limit "
                "(connections_max_count); %d refused so far",
                name,
                len(open_fds),
                self.counters["connections_refused_limit"],
            )

    def close(self) -> None:
        for name, monitor in self._monitors.items():
            self._loop.remove_reader(self._fd(monitor))
            with contextlib.suppress(zmq.ZMQError):
                self._sockets[name].disable_monitor()
            monitor.close(linger=0)
        self._monitors.clear()


def _ours(fd: int, bound: zmq.Socket[bytes], *, shut_down: bool = False) -> bool:
    """Whether ``fd`` is still a connection accepted on ``bound``'s port (events are read
    after the fact: libzmq may have closed it, and the number been reused); with
    ``shut_down``, shut it down: libzmq keeps the descriptor and closes it when it
    reads the end."""
    try:
        duplicate = os.dup(fd)
    except OSError:
        return False
    try:
        conn = socket.socket(fileno=duplicate)
    except OSError:  # not a socket (any more)
        os.close(duplicate)
        return False
    with conn:
        try:
            local_port = conn.getsockname()[1]
            conn.getpeername()  # connected, not a listener
        except (OSError, IndexError):
            return False
        endpoint = cast(bytes, bound.getsockopt(zmq.LAST_ENDPOINT)).decode()
        if not endpoint.endswith(f":{local_port}"):
            return False
        if shut_down:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
    return True
