"""Handshakes that fail before our ZAP handler hears of them, counted.

libzmq ends some handshakes itself: a plaintext client on a Curve socket, garbage
in place of a greeting, a client that cannot decrypt our server's answer. They never
reach the policy, so a monitor on each bound socket reports them, and the policy
counts them with the others (``auth_refused_handshake_<what>``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import zmq
from zmq.utils.monitor import parse_monitor_message

from zcluster.security.policy import AuthenticationHandler

_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
#: events read per turn of the loop, before others get their turn
_BATCH_COUNT = 64


class HandshakeWatch:
    def __init__(
        self,
        sockets: dict[str, zmq.Socket[bytes]],
        policy: AuthenticationHandler,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._policy = policy
        self._loop = loop
        #: per monitored socket's name ("direct", "pubsub"): its monitor
        self._monitors: dict[str, zmq.Socket[bytes]] = {}
        for name, sock in sockets.items():
            monitor = sock.get_monitor_socket(_FAILURES)
            self._monitors[name] = monitor
            loop.add_reader(self._fd(monitor), self._read, name)
            loop.call_soon(self._read, name)  # edge-triggered: it may not fire for the first

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
            what = "protocol" if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL else "failed"
            self._policy.refused(
                f"handshake_{what}",
                f"a {name} handshake from {event['endpoint']!r} failed in ZeroMQ "
                f"(code {event['value']}: plaintext, garbage or a wrong key)",
            )
        self._loop.call_soon(self._read, name)  # more may wait: the edge will not fire again

    def close(self, sockets: dict[str, zmq.Socket[bytes]]) -> None:
        for name, monitor in self._monitors.items():
            self._loop.remove_reader(self._fd(monitor))
            with contextlib.suppress(zmq.ZMQError):
                sockets[name].disable_monitor()
            monitor.close(linger=0)
        self._monitors.clear()
