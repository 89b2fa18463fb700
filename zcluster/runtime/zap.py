"""The node's ZAP handler (ZeroMQ RFC 27): libzmq asks it, for every connection made to
our ROUTER or PUB, whether to let the client in; the security policy answers (secured
modes), then the memory budget (every mode: runtime/admission.py).

It runs on the node's loop: a ROUTER bound at ``inproc://zeromq.zap.01`` in the node's
own context, read when readable like the other sockets. libzmq holds a connection's
handshake until its request is answered: most are answered at once; one the policy
defers (a subscriber whose AUTH has not arrived yet) waits until ``release``, one the
budget has no room for until a connection closes, each at most until
``auth_handshake_timeout_s``, when libzmq gives the handshake up and the client tries
again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import NamedTuple, cast

import zmq

from zcluster.config import NodeConfig
from zcluster.runtime.admission import InboundBudget, normal_address
from zcluster.security.policy import Allow, AuthenticationHandler, Defer, Ignore

log = logging.getLogger("zcluster.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_VERSION = b"1.0"
#: requests answered per turn of the loop, before others get their turn
_BATCH_COUNT = 64
#: request frames: [routing id, empty, version, request id, domain, address, identity,
#: mechanism, credentials...]
_FIXED_FRAMES_COUNT = 8
_MAX_CREDENTIALS_COUNT = 2
#: a held request at least this share of the handshake timeout old is taken for the one
#: whose handshake just gave up (the request comes a little after the connection)
_GIVE_UP_SHARE = 0.8


class _Waiting(NamedTuple):
    """A handshake kept waiting: for its principal's AUTH, or for room."""

    user_id: str
    address: str
    since: float
    #: the reply's first frames
    head: list[bytes]


class ZapResponder:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        policy: AuthenticationHandler | None,
        config: NodeConfig,
        loop: asyncio.AbstractEventLoop,
        budget: InboundBudget,
        counters: collections.Counter[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._config = config
        self._budget = budget
        self._counters = counters
        #: when connections waiting for room were last told of (clock's time)
        self._held_logged_at = -math.inf
        #: called before requests are answered (the budget learns what opened first)
        self.before_answer: Callable[[], None] = _nothing
        #: handshakes waiting for their principal's AUTH, oldest first
        self._pending: list[_Waiting] = []
        #: handshakes allowed, waiting for room in the budget, oldest first
        self._held: collections.deque[_Waiting] = collections.deque()
        self._loop = loop
        self._clock = clock
        self._socket: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(ZAP_ENDPOINT)
        self._fd = cast(int, self._socket.getsockopt(zmq.FD))
        loop.add_reader(self._fd, self._read)

    def _read(self) -> None:
        sock = self._socket
        if sock.closed:  # a turn scheduled before close
            return
        self.before_answer()
        for _ in range(_BATCH_COUNT):
            if not cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return
            frames = sock.recv_multipart(zmq.NOBLOCK)
            reply = self._answer(frames)
            if reply is not None:
                sock.send_multipart(reply, zmq.NOBLOCK)
        self._loop.call_soon(self._read)  # more may wait: the edge will not fire again

    def _answer(self, frames: list[bytes]) -> list[bytes] | None:
        if len(frames) < _FIXED_FRAMES_COUNT or frames[1] != b"":
            return None  # not from libzmq: nobody to answer
        credentials = frames[_FIXED_FRAMES_COUNT:]
        routing, _, version, request_id, domain, address, _identity, mechanism = frames[:8]
        head = [routing, b"", _VERSION, request_id]
        if version != _VERSION or len(credentials) > _MAX_CREDENTIALS_COUNT:
            return [*head, b"500", b"unsupported ZAP request", b"", b""]
        now = self._clock()
        peer = address.decode("ascii", "replace")
        policy = self._policy
        if policy is None:  # security mode none: NULL handshakes, the budget alone
            return self._admit(_Waiting("", peer, now, head))
        verdict = policy.check_handshake(
            domain.decode("ascii", "replace"),
            peer,
            mechanism.decode("ascii", "replace"),
            credentials,
            now,
        )
        if isinstance(verdict, Allow):
            return self._admit(_Waiting(verdict.user_id, peer, now, head))
        if isinstance(verdict, Ignore):
            return None
        if isinstance(verdict, Defer):
            self._pending = _fresh(self._pending, self._oldest(now))
            if len(self._pending) >= self._config.auth_pending_max_count:
                # The oldest is left unanswered (its client tries again later), never
                # refused: a refused client never tries again, and a flood must not make
                # an honest subscriber's refusal.
                self._pending.pop(0)
                policy.refused("handshake_busy", "too many handshakes waiting")
            self._pending.append(_Waiting(verdict.user_id, peer, now, head))
            return None
        return [*head, b"400", verdict.reason.encode(), b"", b""]

    def _admit(self, waiting: _Waiting) -> list[bytes] | None:
        """The reply letting ``waiting`` in if the budget has room; otherwise it waits
        for room, unanswered (refused, its client would never try again)."""
        admitted = self._budget.admit(waiting.address)
        if not admitted:
            self.before_answer()  # a close, or this connection's accept, not read yet
            admitted = self._budget.admit(waiting.address)
        if admitted:
            return _allowed(waiting.head, waiting.user_id)
        if not self._budget.is_full(waiting.address):
            # Every connection open from there is in (libzmq reports a connection
            # accepted before asking about it): this one closed before its answer.
            return None
        self._counters["connections_held"] += 1
        if waiting.since - self._held_logged_at >= self._config.connections_held_log_interval_s:
            self._held_logged_at = waiting.since
            log.warning(
                "connections from %s wait for room: %d let in (at most %d, %d per address; "
                "receive_queues_max_bytes, inbound_connections_per_address_max_count; "
                "%d held so far)",
                waiting.address,
                self._budget.admitted_count,
                self._budget.connections_max_count,
                self._budget.per_address_max_count,
                self._counters["connections_held"],
            )
        if len(self._held) >= self._config.auth_pending_max_count:
            self._held.popleft()  # left to time out: its client tries again
        self._held.append(waiting)
        return None

    def gave_up_held(self) -> bool:
        """A handshake ended without detail. If the request held longest is about as old
        as the handshake timeout, it was that one's handshake giving up: forget it, and
        say so (True)."""
        timeout_s = self._config.auth_handshake_timeout_s
        if self._held and self._held[0].since <= self._clock() - timeout_s * _GIVE_UP_SHARE:
            self._held.popleft()
            return True
        return False

    def forget_held(self, address: str) -> None:
        """A connection from ``address`` closed while waiting for room: its request, the
        oldest from there, needs no answer (were it answered, a newer one would wait for
        its own handshake to give up)."""
        for index, waiting in enumerate(self._held):
            if normal_address(waiting.address) == address:
                del self._held[index]
                return

    def admit_held(self) -> None:
        """Connections closed: let in those waiting for room, oldest first, as far as
        there is room for each."""
        if not self._held:
            return
        oldest = self._oldest(self._clock())
        # kept a while after libzmq gave them up, until their handshake's end is read
        # (gave_up_held), then forgotten
        forgotten = oldest - self._config.auth_handshake_timeout_s * _GIVE_UP_SHARE
        still: collections.deque[_Waiting] = collections.deque()
        while self._held:
            waiting = self._held.popleft()
            if waiting.since < oldest:
                if waiting.since >= forgotten:
                    still.append(waiting)
                continue
            if self._budget.admit(waiting.address):
                self._send(_allowed(waiting.head, waiting.user_id))
            else:
                still.append(waiting)
        self._held = still
        self._read_soon()

    def release(self, user_id: str) -> None:
        """``user_id`` was bound: let in the handshakes that waited for it (within the
        budget)."""
        self._pending = _fresh(self._pending, self._oldest(self._clock()))
        waiting = [entry for entry in self._pending if entry.user_id == user_id]
        if not waiting:
            return
        self._pending = [entry for entry in self._pending if entry.user_id != user_id]
        for entry in waiting:
            self._send(self._admit(entry))
        self._read_soon()

    def _send(self, reply: list[bytes] | None) -> None:
        if reply is not None:
            with contextlib.suppress(zmq.ZMQError):  # gone: its client tries again
                self._socket.send_multipart(reply, zmq.NOBLOCK)

    def _read_soon(self) -> None:
        """After answers sent outside ``_read``: a send may take the socket's pending
        input signal with it (edge-triggered), so requests that came meanwhile are read
        next."""
        self._loop.call_soon(self._read)

    def _oldest(self, now: float) -> float:
        """Requests older than this were given up by libzmq."""
        return now - self._config.auth_handshake_timeout_s

    def close(self) -> None:
        self._pending.clear()
        self._held.clear()
        self._loop.remove_reader(self._fd)
        self._socket.close(linger=0)


def _allowed(head: list[bytes], user_id: str) -> list[bytes]:
    return [*head, b"200", b"OK", user_id.encode(), b""]


def _fresh(waiting: list[_Waiting], oldest: float) -> list[_Waiting]:
    """``waiting`` without the requests libzmq has given up on."""
    if waiting and waiting[0].since < oldest:
        return [entry for entry in waiting if entry.since >= oldest]
    return waiting


def _nothing() -> None:
    pass
