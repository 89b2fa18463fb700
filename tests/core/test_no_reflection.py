"""A FETCH is answered to the member that sent it, at the address the membership table
holds for it, never to whatever address the FETCH names (reflection, amplification)."""

from __future__ import annotations

from tests.core.test_contract import core_in, envelope, peer, sends
from zcluster.core import events as ev
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee

VICTIM = "10.9.9.9:9999"


def publishing_core():  # type: ignore[no-untyped-def]
    a = peer("a")
    core = core_in(a)
    for i in range(5):
        core.handle(ev.PublishRequested("t", str(i).encode(), DeliveryGuarantee.AT_LEAST_ONCE), 0.1)
    return core, a


def test_a_members_fetch_is_answered_to_its_own_address_not_the_one_it_names() -> None:
    core, a = publishing_core()
    effects = core.handle(envelope(a, msg.Fetch("t", ((1, 5),), VICTIM)), 0.2)
    answers = sends(effects, msg.Republish)
    assert len(answers) == 5
    assert {s.address for s in answers} == {a.address}


def test_a_stranger_s_fetch_is_not_answered() -> None:
    core, _ = publishing_core()
    stranger = peer("z")  # not in the table
    effects = core.handle(envelope(stranger, msg.Fetch("t", ((1, 5),), VICTIM)), 0.2)
    assert not sends(effects, msg.Republish) and not sends(effects, msg.Lost)
    assert core.counters["fetches_refused_not_a_member"] == 1
