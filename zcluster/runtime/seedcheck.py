"""Why a seed does not admit us, as far as connecting to it tells.

A join that gets no answer is silent by nature: the seed may be down, a
typo, another program's port, or the PUB port of a node (the ROUTER port is
the one before it). When a node has waited a while, it connects to each seed
once more with a monitored DEALER and reads what ZeroMQ saw: a refused
connection, no answer at all, a listener that does not speak ZeroMQ, a
ZeroMQ socket that drops a DEALER (a PUB), a node that refused our key or
token, or a ROUTER that accepted the connection and still did not admit us.
A secured node connects with its own credentials (``secure``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from zcluster.errors import ConfigError
from zcluster.runtime.transport import endpoint

_ENDS = frozenset(
    {
        zmq.EVENT_HANDSHAKE_SUCCEEDED,
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
        zmq.EVENT_HANDSHAKE_FAILED_AUTH,
        zmq.EVENT_DISCONNECTED,
    }
)
#: what a DEALER sees of a socket that ends its handshake: a PUB, whose peers cannot be
#: DEALERs, says so or just closes (NO_DETAIL), depending on timing
_DROPPED = frozenset(
    {
        zmq.EVENT_DISCONNECTED,
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    }
)
#: sets a DEALER's credentials to connect to the address given; False if it has none
Secure = Callable[[zmq.Socket[bytes], str], bool]


def diagnose_seeds(seeds: tuple[str, ...], timeout_s: float, secure: Secure | None = None) -> str:
    """``seed: what connecting to it shows`` for each seed (blocking: at most about
    ``timeout_s`` per seed)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        return "; ".join(
            f"{seed}: {diagnose_seed(context, seed, timeout_s, secure)}" for seed in seeds
        )
    finally:
        context.term()


def diagnose_seed(
    context: zmq.Context[zmq.Socket[bytes]],
    seed: str,
    timeout_s: float,
    secure: Secure | None = None,
) -> str:
    """What connecting to ``seed`` (``host:port``) shows, in a few words."""
    try:
        target = endpoint(seed)
    except ConfigError as exc:
        return str(exc)
    seen = _events(context, seed, target, timeout_s, secure)
    if seen is None:
        return "its public key is not known (give it with --seed-key or --known-hosts)"
    if zmq.EVENT_HANDSHAKE_FAILED_AUTH in seen:
        return (
            "the node there refused this node's credentials (its key is not authorized "
            "there; authorize it, then start this node again)"
        )
    if secure is not None and zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL in seen:
        return (
            "our secured handshake failed there: the seed's public key is not the one "
            "given, it runs another security mode, or it is a node's PUB port (its "
            "ROUTER, the seed to give, is the port before)"
        )
    if zmq.EVENT_HANDSHAKE_SUCCEEDED in seen:
        return (
            "a ZeroMQ ROUTER answers there but has not admitted this node (a node of another "
            "protocol version, or one that refused us)"
        )
    if seen & _DROPPED:
        return (
            "a ZeroMQ socket there drops our connection: probably a node's PUB port (its ROUTER, "
            "the seed to give, is the port before)"
        )
    if zmq.EVENT_CONNECTED in seen:
        return (
            f"something listens there but does not speak ZeroMQ (no handshake within "
            f"{timeout_s:g}s): not a zcluster node, or one too loaded to answer"
        )
    if zmq.EVENT_CLOSED in seen or zmq.EVENT_CONNECT_RETRIED in seen:
        return "nothing listens there (connection refused)"
    return f"no answer within {timeout_s:g}s (host down, unreachable or filtered?)"


def _events(
    context: zmq.Context[zmq.Socket[bytes]],
    seed: str,
    target: str,
    timeout_s: float,
    secure: Secure | None,
) -> set[int] | None:
    """What a DEALER connecting to ``target`` saw; None if it could not try (no
    credentials for it)."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if secure is not None and not secure(sock, seed):
        sock.close(linger=0)
        return None
    monitor = sock.get_monitor_socket()
    seen: set[int] = set()
    try:
        sock.connect(target)
        deadline = time.monotonic() + timeout_s
        while not seen & _ENDS:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not monitor.poll(left_ms):
                break
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_CONNECTED and event not in seen:
                deadline = time.monotonic() + timeout_s  # the greeting gets its own time
            seen.add(event)
    except zmq.ZMQError:
        pass  # what was seen so far is the answer
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
    return seen
