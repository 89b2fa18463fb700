from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers import all_up, wait_until
from zcluster import Node

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


@pytest.fixture
def trio(make_node: NodeFactory) -> list[Node]:
    a = make_node("a")
    b = make_node("b", a)
    c = make_node("c", a)
    nodes = [a, b, c]
    assert wait_until(lambda: all_up(nodes), 5), [n.members() for n in nodes]
    return nodes
