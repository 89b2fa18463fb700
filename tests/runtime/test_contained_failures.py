"""A defect met while handling one event is contained (runtime/driver.py): the event is
dropped, counted and told once per kind, with its sender; the node's own protocol goes on
and its peers keep it UP. Real sockets; the defect is planted in one message kind's
handling."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.helpers import all_up, wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import MemberStatus
from zcluster.protocol import messages as msg


def test_an_event_that_raises_is_dropped_counted_and_the_node_stays_up(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_node("a")
    b = make_node("b", a)
    assert wait_until(lambda: all_up([a, b]), 5)
    core = b._node._require().core  # the victim: its GOSSIP handling has a defect

    def defect(*_: Any) -> None:
        raise RuntimeError("planted defect")

    core._receivers[msg.Gossip] = (defect,)
    with caplog.at_level(logging.ERROR, logger="zcluster.driver"):
        c = make_node("c", a)  # news of c reaches b by GOSSIP, among other ways
        assert wait_until(lambda: b.stats().get("events_failed", 0) >= 2, 10), b.stats()
    told = [r.getMessage() for r in caplog.records if "planted defect" in r.getMessage()]
    assert len(told) == 1, told  # once per kind, however often it happens
    assert "handling Gossip from" in told[0]
    # b goes on: still UP for the others, and it learns of c through SYNC and probes
    assert wait_until(lambda: all_up([a, b, c]), 10), [n.members() for n in (a, b, c)]
    assert not wait_until(lambda: a.member("b").status is not MemberStatus.UP, 2.0)
