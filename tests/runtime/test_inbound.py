"""Connections to a node's ROUTER and PUB share one memory budget (docs/architecture.md,
"Memory"): past it, a newcomer waits in its handshake; members keep the connections
they hold; room comes back as connections go.

Real sockets: plain DEALERs that never speak, each with a monitor telling whether its
handshake was let through.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from tests.helpers import all_up, wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import NodeConfig
from zcluster.security.keys import load_curve_key_pair
from zcluster.testing.credentials import ThrowawayCredentials

KIB = 1024
#: ten connections of four 64 KiB messages each; a handshake kept waiting gives up
#: after a second (its client tries again)
CONFIG = NodeConfig(
    max_message_bytes=64 * KIB,
    max_header_bytes=64 * KIB,
    receive_queue_max_bytes=4 * 64 * KIB,
    receive_queues_max_bytes=10 * 4 * 64 * KIB,
    auth_handshake_timeout_s=1.0,
)


class Strangers:
    """Plain DEALERs connected to one address, counting handshakes let through."""

    def __init__(self, address: str, server_key: bytes | None = None) -> None:
        self._address = address
        #: Curve clients of the server with this public key (any key of their own)
        self._server_key = server_key
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sockets: list[zmq.Socket[bytes]] = []
        self._monitors: list[zmq.Socket[bytes]] = []
        self._in: list[bool] = []

    def connect(self, count: int) -> None:
        for _ in range(count):
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self._server_key is not None:
                public, secret = zmq.curve_keypair()
                sock.setsockopt(zmq.CURVE_SERVERKEY, self._server_key)
                sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
                sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
            self._monitors.append(sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED))
            sock.connect(f"tcp://{self._address}")
            self.sockets.append(sock)
            self._in.append(False)

    def let_in(self) -> list[int]:
        """Indexes of the open sockets whose handshake succeeded."""
        for index, monitor in enumerate(self._monitors):
            while not monitor.closed and monitor.poll(0):
                parse_monitor_message(monitor.recv_multipart())
                self._in[index] = True
        return [i for i, s in enumerate(self.sockets) if self._in[i] and not s.closed]

    def close(self, indexes: list[int]) -> None:
        for index in indexes:
            self._monitors[index].close(linger=0)
            self.sockets[index].close(linger=0)

    def close_all(self) -> None:
        self.close([i for i, s in enumerate(self.sockets) if not s.closed])
        self._context.term()


@contextmanager
def strangers(address: str, server_key: bytes | None = None) -> Iterator[Strangers]:
    crowd = Strangers(address, server_key)
    try:
        yield crowd
    finally:
        crowd.close_all()


@pytest.mark.timeout(60)
def test_connections_past_the_budget_wait_and_members_keep_theirs(make_node: NodeFactory) -> None:
    a = make_node("a", bind="127.0.0.1:0", config=CONFIG)
    b = make_node("b", a, bind="127.0.0.1:0", config=CONFIG)
    assert wait_until(lambda: all_up([a, b]), 10)
    # b's DEALER and SUB (its seed connection, if any, goes once a is a member)
    assert wait_until(lambda: a.stats()["connections_inbound"] == 2, 10), a.stats()
    with strangers(a.address) as crowd:
        crowd.connect(12)
        # Room for 8 more: they come in, the other 4 wait in their handshake.
        assert wait_until(lambda: len(crowd.let_in()) == 8, 10), crowd.let_in()
        assert wait_until(lambda: a.stats().get("connections_held", 0) >= 4, 10), a.stats()
        assert a.stats()["connections_inbound"] == 10  # 10 x 4 x 64 KiB: the budget
        # The members keep theirs and are served.
        assert a.request("b", "zcluster.view", None, timeout=5)["members"]
        assert b.request("a", "zcluster.view", None, timeout=5)["members"]
        assert not wait_until(lambda: len(crowd.let_in()) > 8, 0.5)  # nobody else gets in
        # Room comes back as connections go: the ones waiting take it (at the latest
        # when their handshake gives up and is tried again: which connection a ZAP
        # answer let in is not known, so a close is taken as one of those waiting)
        first = crowd.let_in()[:5]
        crowd.close(first)
        assert wait_until(lambda: len(crowd.let_in()) == 7, 5), crowd.let_in()
        assert wait_until(lambda: a.stats()["connections_inbound"] == 9, 10), a.stats()
    assert wait_until(lambda: a.stats()["connections_inbound"] == 2, 10), a.stats()
    assert all_up([a, b])


@pytest.mark.timeout(60)
def test_one_address_gets_its_share_only(make_node: NodeFactory) -> None:
    config = NodeConfig(inbound_connections_per_address_max_count=5)
    a = make_node("a", bind="127.0.0.1:0", config=config)
    with strangers(a.address) as crowd:
        crowd.connect(8)
        assert wait_until(lambda: len(crowd.let_in()) == 5, 10), crowd.let_in()
        assert not wait_until(lambda: len(crowd.let_in()) > 5, 0.5)
        assert a.stats()["connections_inbound"] == 5
        assert a.stats()["connections_held"] >= 3


@pytest.mark.timeout(90)
def test_strangers_coming_and_going_in_crowds_leave_the_node_serving(
    make_node: NodeFactory,
) -> None:
    """Hundreds of connections opened and closed, past the budget, while others wait
    and are let in: the count comes back, the members keep talking throughout."""
    config = NodeConfig(
        receive_queues_max_bytes=100 * 8 * 1024 * 1024, auth_handshake_timeout_s=1.0
    )
    a = make_node("a", bind="127.0.0.1:0", config=config)
    b = make_node("b", a, bind="127.0.0.1:0", config=config)
    assert wait_until(lambda: all_up([a, b]), 10)
    assert wait_until(lambda: a.stats()["connections_inbound"] == 2, 10), a.stats()
    for round_ in range(3):
        with strangers(a.address) as crowd:
            crowd.connect(250)
            assert wait_until(lambda: len(crowd.let_in()) == 98, 10), len(crowd.let_in())
            assert a.stats()["connections_inbound"] == 100
            crowd.close(crowd.let_in()[: 30 + round_ * 30])
            # those waiting take the room (when their handshake is tried again: all
            # come from one address, so a close is taken as one of those waiting)
            assert wait_until(lambda: len(crowd.let_in()) == 98, 15), len(crowd.let_in())
            assert b.request("a", "zcluster.view", None, timeout=5)["members"]
            assert a.request("b", "zcluster.view", None, timeout=5)["members"]
    assert wait_until(lambda: a.stats()["connections_inbound"] == 2, 20), a.stats()
    assert a.request("b", "zcluster.view", None, timeout=5)["members"]
    assert all_up([a, b])


@pytest.mark.timeout(60)
def test_a_curve_handshake_that_waited_for_room_and_gave_up_is_no_refusal(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """In `curve` any key is let in, within the budget: one kept waiting that gives up
    is counted as such, not as a wrong key."""
    credentials = ThrowawayCredentials("curve", tmp_path)
    config = NodeConfig(
        receive_queues_max_bytes=2 * NodeConfig().receive_queue_max_bytes,
        auth_handshake_timeout_s=1.0,
    )
    a = make_node("a", bind="127.0.0.1:0", config=config, security=credentials.config("a"))
    server_key = load_curve_key_pair(tmp_path / "a.key").public
    with strangers(a.address, server_key) as crowd:
        crowd.connect(4)
        assert wait_until(lambda: len(crowd.let_in()) == 2, 10), crowd.let_in()
        assert wait_until(lambda: a.stats().get("connections_held_gave_up", 0) >= 2, 10)
        stats = a.stats()
        assert stats["connections_inbound"] == 2
        assert not {name for name in stats if name.startswith("auth_refused")}, stats
