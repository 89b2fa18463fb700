from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers import wait_until
from zcluster import MemberStatus, Node

NodeFactory = Callable[..., Node]


@pytest.fixture
def make_node() -> Iterator[NodeFactory]:
    """Start blocking nodes on random loopback ports; every one is stopped at teardown."""
    started: list[Node] = []

    def make(node_id: str, *seed_nodes: Node, start: bool = True, **options: Any) -> Node:
        seeds = [n.address for n in seed_nodes]
        node = Node(node_id, seeds=seeds, **options)
        started.append(node)
        if start:
            node.start()
        return node

    yield make
    for node in reversed(started):
        node.stop()


def all_up(nodes: list[Node]) -> bool:
    ids = {n.node_id for n in nodes}
    for node in nodes:
        view = {m.node_id: m.status for m in node.members()}
        if set(view) != ids or any(s is not MemberStatus.UP for s in view.values()):
            return False
    return len({n.view_digest() for n in nodes}) == 1


@pytest.fixture
def trio(make_node: NodeFactory) -> list[Node]:
    a = make_node("a")
    b = make_node("b", a)
    c = make_node("c", a)
    nodes = [a, b, c]
    assert wait_until(lambda: all_up(nodes), 5), [n.members() for n in nodes]
    return nodes
