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


def budget(total_mib: int = 8, each_mib: int = 4, per_address: int = 3) -> InboundBudget:
    return InboundBudget(
        NodeConfig(
            receive_queue_max_bytes=each_mib * MIB,
            receive_queues_max_bytes=total_mib * MIB,
            inbound_connections_per_address_max_count=per_address,
        )
    )


def test_connections_share_the_budget_down_to_one_message_each() -> None:
    b = budget(total_mib=8, each_mib=4, per_address=100)
    assert b.connections_max_count == 8
    assert b.queue_count() == 4  # nobody in yet: the per-connection bound
    for fd in range(8):
        b.opened(fd, "10.0.0.1")
        assert b.admit("10.0.0.1")
        assert b.queue_count() * b.admitted_count * MIB <= 8 * MIB
    assert b.queue_count() == 1
    b.opened(99, "10.0.0.2")
    assert not b.admit("10.0.0.2")  # the total is reached: it waits
    b.closed(0)
    assert b.admit("10.0.0.2")


def test_one_address_gets_at_most_its_share() -> None:
    b = budget(per_address=3)
    for fd in range(5):
        b.opened(fd, "10.0.0.1")
    assert [b.admit("10.0.0.1") for _ in range(5)] == [True, True, True, False, False]
    b.opened(9, "10.0.0.2")
    assert b.admit("10.0.0.2")


def test_a_request_whose_connection_is_gone_is_not_let_in() -> None:
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
    b = budget(total_mib=6, each_mib=4, per_address=3)
    open_ = {}  # the model: key -> address, as the sockets see it
    for action, key, address in steps:
        if action == "open":
            open_[key] = address.removeprefix("::ffff:")
            b.opened(key, address)
        elif action == "close":
            open_.pop(key, None)
            b.closed(key)
        else:
            b.admit(address)
        by_address = collections.Counter(open_.values())
        admitted = b._admitted
        assert b.admitted_count == sum(admitted.values()) <= b.connections_max_count
        for where, count in admitted.items():
            assert count <= min(b.per_address_max_count, by_address[where])
        assert b.admitted_count * b.queue_count() * MIB <= max(6 * MIB, 4 * MIB)


def test_publishers_share_the_subscribe_budget() -> None:
    config = NodeConfig(subscribe_queue_max_bytes=64 * MIB, subscribe_queues_max_bytes=128 * MIB)
    assert [config.subscribe_hwm_count_for(n) for n in (0, 1, 2, 4, 128, 1000)] == [
        64,
        64,
        64,
        32,
        1,
        1,
    ]


def test_the_peer_memory_ceiling_is_the_sum_of_the_bounds() -> None:
    """docs/architecture.md, "Memory": about 2.6 GiB with the defaults."""
    assert NodeConfig().peer_memory_max_bytes == 2624 * MIB
    smaller = NodeConfig(receive_queues_max_bytes=512 * MIB)
    assert smaller.peer_memory_max_bytes == 2112 * MIB
