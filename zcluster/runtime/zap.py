"""The node's ZAP handler (ZeroMQ RFC 27): libzmq asks it, for every connection made to
our ROUTER or PUB, whether to let the client in; the policy answers.

It runs on the node's loop: a ROUTER bound at ``inproc://zeromq.zap.01`` in the node's
own context, read when readable like the other sockets. libzmq holds a connection's
handshake until its request is answered: most are answered at once; one the policy
defers (a subscriber whose AUTH has not arrived yet) waits until ``release`` or until
``auth_handshake_timeout_s``, when libzmq gives the handshake up and the client tries
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import cast

import zmq

from zcluster.config import NodeConfig
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


class ZapResponder:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        policy: AuthenticationHandler,
        config: NodeConfig,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._config = config
        #: deferred requests: (principal, when asked, the reply's head), oldest first
        self._pending: list[tuple[str, float, list[bytes]]] = []
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
        verdict = self._policy.check_handshake(
            domain.decode("ascii", "replace"),
            address.decode("ascii", "replace"),
            mechanism.decode("ascii", "replace"),
            credentials,
            now,
        )
        if isinstance(verdict, Allow):
            return _allowed(head, verdict.user_id)
        if isinstance(verdict, Ignore):
            return None
        if isinstance(verdict, Defer):
            self._forget_stale(now)
            if len(self._pending) >= self._config.auth_pending_max_count:
                # The oldest is left unanswered (its client tries again later), never
                # refused: a refused client never tries again, and a flood must not make
                # an honest subscriber's refusal.
                self._pending.pop(0)
                self._policy.refused("handshake_busy", "too many handshakes waiting")
            self._pending.append((verdict.user_id, now, head))
            return None
        return [*head, b"400", verdict.reason.encode(), b"", b""]

    def release(self, user_id: str) -> None:
        """``user_id`` was bound: let in the handshakes that waited for it."""
        self._forget_stale(self._clock())
        waiting = [entry for entry in self._pending if entry[0] == user_id]
        if not waiting:
            return
        self._pending = [entry for entry in self._pending if entry[0] != user_id]
        for _, _, head in waiting:
            with contextlib.suppress(zmq.ZMQError):  # gone: its client tries again
                self._socket.send_multipart(_allowed(head, user_id), zmq.NOBLOCK)

    def _forget_stale(self, now: float) -> None:
        """Drop requests whose handshake libzmq has given up on."""
        oldest = now - self._config.auth_handshake_timeout_s
        if self._pending and self._pending[0][1] < oldest:
            self._pending = [entry for entry in self._pending if entry[1] >= oldest]

    def close(self) -> None:
        self._pending.clear()
        self._loop.remove_reader(self._fd)
        self._socket.close(linger=0)


def _allowed(head: list[bytes], user_id: str) -> list[bytes]:
    return [*head, b"200", b"OK", user_id.encode(), b""]
