"""One live process per node id (core/admission.py): a second process with a live
member's id is refused, naming the holder's address, and the live member is never
disturbed; a real restart after a crash still rejoins."""

from __future__ import annotations

import time

import pytest

from tests.helpers import all_up, wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import JoinRefused, MemberStatus, Node
from zcluster.testing.processes import free_port_pair


def views(nodes: list[Node]) -> list[tuple[str, int, MemberStatus]]:
    return sorted((m.node_id, m.incarnation, m.status) for n in nodes for m in n.members())


@pytest.mark.parametrize("seed_index", [0, 2], ids=["through-another-member", "through-itself"])
def test_a_second_process_with_a_live_members_id_is_refused(
    trio: list[Node], seed_index: int
) -> None:
    c = trio[2]
    before = views(trio)
    impostor = Node("c", seeds=[trio[seed_index].address])
    began = time.monotonic()
    with pytest.raises(JoinRefused, match=f"node id c is in use by a live member at {c.address}"):
        impostor.start(timeout=10)
    assert time.monotonic() - began < 5
    assert not impostor.running
    # Nobody took it for a restart: the live c stays up, in its incarnation, everywhere.
    # (a mistaken restart shows within a second: the joiner retries every 0.5 s)
    assert not wait_until(lambda: views(trio) != before, 1.0), views(trio)
    assert all_up(trio)
    refusals = sum(n.stats().get("joins_refused_id_in_use", 0) for n in trio)
    assert refusals >= 1


def test_a_restart_after_a_crash_rejoins_on_another_port(make_node: NodeFactory) -> None:
    a = make_node("a")
    b = make_node("b", a)
    c = make_node("c", a)
    assert wait_until(lambda: all_up([a, b, c]), 5)
    old = c.incarnation
    c.abort()  # a crash: nobody has noticed yet when it comes back
    began = time.monotonic()
    again = make_node("c", a)  # a new process, on a new random port
    assert again.incarnation != old
    assert wait_until(lambda: all_up([a, b, again]), 10)
    assert time.monotonic() - began < 5
    member = a.member("c")
    assert member is not None and member.incarnation == again.incarnation


def test_a_restarted_seedless_first_node_is_back_in_the_one_cluster(
    make_node: NodeFactory,
) -> None:
    address = f"127.0.0.1:{free_port_pair()}"
    first = make_node("a", bind=address)
    b = make_node("b", first)
    c = make_node("c", first)
    assert wait_until(lambda: all_up([first, b, c]), 5)
    first.abort()  # crashed; restarted at once, at its address, without seeds as before
    again = make_node("a", bind=address)
    assert wait_until(lambda: all_up([again, b, c]), 3), [n.members() for n in (again, b, c)]
    member = b.member("a")
    assert member is not None and member.incarnation == again.incarnation
