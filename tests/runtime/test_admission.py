"""The memory budget of inbound connections, as pure bookkeeping (runtime/admission.py)."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster.config import NodeConfig
from zcluster.errors import ConfigError
from zcluster.runtime.admission import InboundBudget

MIB = 1024 * 1024


def budget(total_mib: int = 64, each_mib: int = 4, per_address: int = 3) -> InboundBudget:
    return InboundBudget(
        NodeConfig(
            receive_queue_max_bytes=each_mib * MIB,
            receive_queues_max_bytes=total_mib * MIB,
            inbound_connections_per_address_max_count=per_address,
        )
    )


def test_connections_are_let_in_while_the_budget_holds_one_more_queue() -> None:
    b = budget(total_mib=8, each_mib=4, per_address=100)
    assert b.connections_max_count == 2
    for fd in range(2):
        b.opened(fd, "10.0.0.1")
        assert b.admit("10.0.0.1")
    b.opened(99, "10.0.0.2")
    assert not b.admit("10.0.0.2")  # the total is reached: it waits
    assert b.closed(0) is None  # one let in
    assert b.admit("10.0.0.2")


def test_a_close_is_told_as_one_waiting_when_the_address_has_more_open_than_let_in() -> None:
    b = budget(total_mib=4, each_mib=4)
    b.opened(1, "10.0.0.1")
    assert b.admit("10.0.0.1")
    b.opened(2, "::ffff:10.0.0.1")
    assert not b.admit("10.0.0.1")
    assert b.closed(2) == "10.0.0.1"  # its request, still waiting, needs no answer
    assert b.admitted_count == 1
    assert b.closed(1) is None
    assert b.admitted_count == 0


def test_one_address_gets_at_most_its_share() -> None:
    b = budget(per_address=3)
    for fd in range(5):
        b.opened(fd, "10.0.0.1")
    assert [b.admit("10.0.0.1") for _ in range(5)] == [True, True, True, False, False]
    b.opened(9, "10.0.0.2")
    assert b.admit("10.0.0.2")


def test_an_address_gets_no_more_in_than_it_has_open() -> None:
    """ZAP names the address, not the connection: room is only for connections open."""
    b = budget()
    b.opened(1, "10.0.0.1")
    assert b.admit("10.0.0.1")
    assert not b.admit("10.0.0.1")  # its one open connection is already in
    b.closed(1)
    assert b.admitted_count == 0


def test_ipv4_mapped_and_zoned_addresses_are_one_address() -> None:
    b = budget()
    b.opened(1, "::ffff:10.0.0.1")
    assert b.admit("10.0.0.1")
    b.opened(2, "fe80::1%eth0")
    assert b.admit("FE80::1")
    b.closed(1)
    b.closed(2)
    assert b.admitted_count == 0


def test_a_reused_key_closes_the_connection_it_named() -> None:
    b = budget()
    b.opened(1, "10.0.0.1")
    assert b.admit("10.0.0.1")
    b.opened(1, "10.0.0.2")  # the close of the first went unreported
    assert b.admitted_count == 0


def test_the_total_must_hold_one_connection() -> None:
    with pytest.raises(ConfigError, match="receive_queues_max_bytes"):
        NodeConfig(receive_queues_max_bytes=MIB, receive_queue_max_bytes=2 * MIB)


_steps = st.lists(
    st.tuples(
        st.sampled_from(["open", "close", "admit"]),
        st.integers(0, 12),
        st.sampled_from(["10.0.0.1", "10.0.0.2", "::ffff:10.0.0.3", "10.0.0.3"]),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(_steps)
def test_whatever_happens_the_budget_holds(steps: list[tuple[str, int, str]]) -> None:
    b = budget(total_mib=16, each_mib=4, per_address=3)
    open_ = {}  # the model: key -> address, as the sockets see it
    for action, key, address in steps:
        if action == "open":
            open_[key] = address.removeprefix("::ffff:")
            b.opened(key, address)
        elif action == "close":
            address_was = open_.pop(key, None)
            admitted_was = b._admitted[address_was] if address_was else 0
            waiting_from = b.closed(key)
            if waiting_from is not None:  # told as one waiting: nobody let in went
                assert waiting_from == address_was
                assert b._admitted[address_was] == admitted_was
        else:
            b.admit(address)
        by_address = collections.Counter(open_.values())
        admitted = b._admitted
        assert b.admitted_count == sum(admitted.values()) <= b.connections_max_count
        for where, count in admitted.items():
            assert count <= min(b.per_address_max_count, by_address[where])
        assert b.connections_max_count == 4


def test_the_peer_memory_ceiling_is_the_sum_of_the_bounds() -> None:
    """docs/architecture.md, "Memory": about 2.6 GiB with the defaults, and 2 GiB for
    each member's PUB read."""
    assert NodeConfig().peer_memory_max_bytes(0) == 2624 * MIB
    assert NodeConfig().peer_memory_max_bytes(3) == (2624 + 3 * 2048) * MIB
    smaller = NodeConfig(receive_queues_max_bytes=512 * MIB, subscribe_queue_max_bytes=64 * MIB)
    assert smaller.peer_memory_max_bytes(2) == (2624 - 1536 + 128) * MIB
