"""A node bounds the connections to its ROUTER and PUB: libzmq bounds what each
connection queues, not how many there are, so past ``connections_max_count`` a new one
is shut down as soon as it is accepted; members go on being served."""

from __future__ import annotations

import zmq

from tests.helpers import all_up, wait_until
from zcluster import Node

LIMIT = {"connections_max_count": 4}


def test_connections_past_the_limit_are_refused_and_members_still_served() -> None:
    with (
        Node("a", bind="127.0.0.1:0", **LIMIT) as a,
        Node("b", bind="127.0.0.1:0", seeds=[a.address], **LIMIT) as b,
    ):
        assert wait_until(lambda: all_up([a, b]), 10)
        a.register("echo", lambda message, sender: message)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        crowd = []
        try:
            for _ in range(12):
                for address in (a.address, a.pub_address):
                    sock = context.socket(zmq.DEALER if address == a.address else zmq.SUB)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.connect(f"tcp://{address}")
                    crowd.append(sock)
            assert wait_until(lambda: a.stats().get("connections_refused_limit", 0) >= 16, 10), (
                a.stats()
            )
            assert a.stats()["connections_accepted"] <= 2 * LIMIT["connections_max_count"]
            # b's connections came first: b is still heard and still answered.
            assert b.request("a", "echo", "still here", timeout=5) == "still here"
            assert all_up([a, b])
        finally:
            for sock in crowd:
                sock.close(linger=0)
            context.term()
        # The crowd gone, its places are free again.
        assert wait_until(lambda: a.stats()["connections_accepted"] <= 2, 10), a.stats()
        with Node("c", bind="127.0.0.1:0", seeds=[a.address], **LIMIT) as c:
            assert wait_until(lambda: all_up([a, b, c]), 10)
