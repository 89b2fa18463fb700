"""A node that cannot join says why (runtime/seedcheck.py): connecting to each seed tells
nothing listening from another program, a node's PUB port, or a ROUTER that does not
admit us. Real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import zmq

from tests.runtime.conftest import NodeFactory
from zcluster import JoinTimeout, Node, NodeConfig
from zcluster.runtime.seedcheck import diagnose_seed, diagnose_seeds
from zcluster.testing.processes import free_port_pair

TIMEOUT_S = 1.0
#: for a node that answers at once: long enough that a loaded machine does not pass for silence
ANSWER_TIMEOUT_S = 10.0


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_a_port_nobody_listens_on(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    port = free_port_pair()
    assert "nothing listens there" in diagnose_seed(context, f"127.0.0.1:{port}", TIMEOUT_S)


def test_a_listener_that_does_not_speak_zeromq(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        seed = f"127.0.0.1:{listener.getsockname()[1]}"
        assert "does not speak ZeroMQ" in diagnose_seed(context, seed, TIMEOUT_S)


def test_a_nodes_pub_port(make_node: NodeFactory, context: zmq.Context[zmq.Socket[bytes]]) -> None:
    node = make_node("a")
    text = diagnose_seed(context, node.pub_address, ANSWER_TIMEOUT_S)
    assert "probably a node's PUB port" in text


def test_a_router_that_does_not_admit_us(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    router = context.socket(zmq.ROUTER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        text = diagnose_seed(context, f"127.0.0.1:{port}", ANSWER_TIMEOUT_S)
    finally:
        router.close(linger=0)
    assert "a ZeroMQ ROUTER answers there but has not admitted this node" in text


def test_each_seed_is_named() -> None:
    first, second = free_port_pair(), free_port_pair()
    text = diagnose_seeds((f"127.0.0.1:{first}", f"127.0.0.1:{second}"), TIMEOUT_S)
    assert text.startswith(f"127.0.0.1:{first}: nothing listens there")
    assert f"; 127.0.0.1:{second}: nothing listens there" in text


def test_join_timeout_says_what_the_seed_is(make_node: NodeFactory) -> None:
    node = make_node("a")
    joiner = Node(
        "b", seeds=[node.pub_address], config=NodeConfig(seed_check_timeout_s=ANSWER_TIMEOUT_S)
    )
    with pytest.raises(JoinTimeout, match="probably a node's PUB port"):
        joiner.start(timeout=1)
