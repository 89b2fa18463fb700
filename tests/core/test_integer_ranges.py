"""No received value may push a node's own values past what the wire carries: a record
of this node at the largest version cannot be refuted (it is forged: no node counts that
far), and is counted, not answered with a version the wire cannot carry."""

from __future__ import annotations

import dataclasses

from tests.core.test_contract import core_in, envelope, peer
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.protocol import messages as msg
from zcluster.protocol.members import MAX_VERSION, MemberStatus
from zcluster.wire import Encoder, decode_header


def test_a_suspicion_at_the_largest_version_is_counted_and_every_message_still_encodes() -> None:
    a = peer("a")
    core = core_in(a)
    forged = dataclasses.replace(core.me, version=MAX_VERSION, status=MemberStatus.SUSPECT)
    core.handle(envelope(a, msg.Sync((forged,), False, a.address)), 0.1)
    assert core.counters["suspicions_unrefutable"] == 1
    assert core.me.version < MAX_VERSION and core.me.status is MemberStatus.UP
    encoder = Encoder(core.node_id, core.incarnation)
    for now in (0.2, 0.4, 0.6, 1.2):  # heartbeats, probes, gossip: all still encode
        for effect in core.handle(ev.TimerFired(), now):
            if isinstance(effect, fx.Send | fx.Publish):
                decode_header(encoder.header(effect.message), 1 << 20)


def test_a_node_at_the_largest_version_changes_state_without_passing_it() -> None:
    a = peer("a")
    core = core_in(a)
    core.table.set_me(dataclasses.replace(core.me, version=MAX_VERSION), 0.1)
    core.handle(ev.LeaveRequested(), 0.2)
    assert core.me.status is MemberStatus.LEAVING
    assert core.me.version == MAX_VERSION
