"""The connections peers make to the node's ROUTER and PUB, watched from accept to
close and let in at their handshake within the memory budget (runtime/admission.py),
in every security mode.

A monitor on each bound socket reports connections accepted and closed (and, secured,
the handshakes libzmq ends itself: a plaintext client on a Curve socket, garbage in
place of a greeting, a client that cannot decrypt our server's answer, counted by the
policy as ``auth_refused_handshake_<what>``). The ZAP handler (runtime/zap.py) asks
the budget before it lets one in.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
from typing import cast

import zmq
from zmq.utils.monitor import parse_monitor_message

from zcluster.config import NodeConfig
from zcluster.runtime.admission import InboundBudget
from zcluster.runtime.zap import ZapResponder
from zcluster.security.policy import AuthenticationHandler

_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | _FAILURES
#: events read per turn of the loop, before others get their turn
_BATCH_COUNT = 256


class InboundConnections:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        sockets: dict[str, zmq.Socket[bytes]],
        config: NodeConfig,
        loop: asyncio.AbstractEventLoop,
        policy: AuthenticationHandler | None = None,
    ) -> None:
        self.budget = InboundBudget(config)
        self.counters: collections.Counter[str] = collections.Counter()
        self._sockets = sockets
        self._policy = policy
        self._loop = loop
        #: open connections: (socket's name, descriptor) -> the peer's (address, port)
        self._peers: dict[tuple[str, int], tuple[str, int]] = {}
        #: a connection opened or closed since those waiting for room were last offered it
        self._room_changed = False
        #: the handshake that just ended was one held for room, its request forgotten
        #: already (libzmq reports the connection's close right after)
        self._held_gave_up = False
        #: per bound socket's name ("direct", "pubsub"): its monitor
        self._monitors: dict[str, zmq.Socket[bytes]] = {}
        self._check_timer: asyncio.TimerHandle | None = None
        try:
            for name, sock in sockets.items():
                self._monitors[name] = monitor = _monitor(context, sock, name)
                loop.add_reader(_fd(monitor), self._read, name)
            self.zap = ZapResponder(context, policy, config, loop, self.budget, self.counters)
        except BaseException:
            self._close_monitors()
            raise
        # Before the sockets bind: libzmq refuses every handshake while no handler is
        # bound. Its requests are answered once what the monitors reported is counted.
        self.zap.before_answer = self._catch_up
        self._check_interval_s = config.inbound_connections_check_s
        self._check_timer = loop.call_later(self._check_interval_s, self._check)

    def _read(self, name: str) -> None:
        more = self._read_batch(name)
        self._offer_room()
        if more:
            self._loop.call_soon(self._read, name)  # no edge will fire for what waits

    def _catch_up(self) -> None:
        """Count what the monitors reported (the ZAP handler, before it answers)."""
        for name in self._monitors:
            while self._read_batch(name):
                pass
        if self._room_changed:  # not from inside the ZAP handler's own work
            self._loop.call_soon(self._offer_room)

    def _offer_room(self) -> None:
        if self._room_changed and self._monitors:
            self._room_changed = False
            self.zap.admit_held()

    def _read_batch(self, name: str) -> bool:
        """Read up to a batch of events; True if more may wait."""
        monitor = self._monitors.get(name)
        if monitor is None:
            return False
        for _ in range(_BATCH_COUNT):
            if not cast(int, monitor.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return False
            event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            kind, value = event["event"], int(event["value"])
            if kind == zmq.EVENT_ACCEPTED:
                # its handshake's request may have come first: it waits for this
                peer = self._peers[name, value] = _peer(value)
                self.budget.opened((name, value), peer[0])
                self._room_changed = True
            elif kind == zmq.EVENT_DISCONNECTED:
                self._closed((name, value))
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self.zap.gave_up_held():
                self.counters["connections_held_gave_up"] += 1  # no key was wrong
                self._held_gave_up = True
            elif self._policy is not None:
                what = "protocol" if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL else "failed"
                self._policy.refused(
                    f"handshake_{what}",
                    f"a {name} handshake from {event['endpoint']!r} failed in ZeroMQ "
                    f"(code {value}: plaintext, garbage or a wrong key)",
                )
        return True

    def forget_socket(self, name: str) -> None:
        """Every connection to socket ``name`` is being closed by binding it again
        (libzmq reports no close for them); called between unbinding and binding, so
        that none made to the new binding is forgotten."""
        self._catch_up()
        for key in [key for key in self._peers if key[0] == name]:
            self._closed(key)
        self._loop.call_soon(self._offer_room)

    def _closed(self, key: tuple[str, int]) -> None:
        self._peers.pop(key, None)
        waiting_from = self.budget.closed(key)
        if waiting_from is not None and not self._held_gave_up:
            self.zap.forget_held(waiting_from)
        self._held_gave_up = False
        self._room_changed = True

    def _check(self) -> None:
        """Forget connections whose close went unreported: their descriptor is closed,
        or now another connection's (a bounded scan, every few seconds)."""
        self._catch_up()
        gone = [key for key, peer in self._peers.items() if peer[0] == "" or _peer(key[1]) != peer]
        if gone:
            self.counters["connections_close_unreported"] += len(gone)
            for key in gone:
                self._closed(key)
            self._offer_room()
        self._check_timer = self._loop.call_later(self._check_interval_s, self._check)

    def gauges(self) -> dict[str, int]:
        return {"connections_inbound": self.budget.admitted_count}

    def close(self) -> None:
        if self._check_timer is not None:
            self._check_timer.cancel()
        self.zap.close()
        self._close_monitors()

    def _close_monitors(self) -> None:
        for name, monitor in self._monitors.items():
            self._loop.remove_reader(_fd(monitor))
            with contextlib.suppress(zmq.ZMQError):
                self._sockets[name].disable_monitor()
            monitor.close(linger=0)
        self._monitors.clear()


def _monitor(
    context: zmq.Context[zmq.Socket[bytes]], sock: zmq.Socket[bytes], name: str
) -> zmq.Socket[bytes]:
    """A monitor of ``sock`` whose queue has no limit: libzmq's I/O thread waits on a
    full one (stalling every connection) rather than drop an event. Events are a few
    per connection, read every turn of the loop."""
    endpoint = f"inproc://zcluster.monitor.{name}.{id(sock):x}"
    sock.monitor(endpoint, _EVENTS)
    monitor: zmq.Socket[bytes] = context.socket(zmq.PAIR)
    monitor.setsockopt(zmq.RCVHWM, 0)
    monitor.setsockopt(zmq.LINGER, 0)
    monitor.connect(endpoint)
    return monitor


def _fd(monitor: zmq.Socket[bytes]) -> int:
    return cast(int, monitor.getsockopt(zmq.FD))


def _peer(fd: int) -> tuple[str, int]:
    """The peer's IP address and port of the TCP connection on descriptor ``fd`` (asked
    of a duplicate, so that libzmq's stays its own); ("", 0) once it is closed."""
    try:
        duplicate = os.dup(fd)
    except OSError:
        return "", 0
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:  # not a socket (any more)
        os.close(duplicate)
        return "", 0
    with sock:
        try:
            address = sock.getpeername()
        except OSError:
            return "", 0
    return (str(address[0]), int(address[1])) if isinstance(address, tuple) else ("", 0)
