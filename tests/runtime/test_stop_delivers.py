"""A normal exit loses nothing that was accepted (docs/delivery.md, "Stopping"): a
publisher that leaves a ``with`` block waits until its subscribers hold every
publication; a full subscriber queue slows the publisher instead of losing what it
sends; what cannot be delivered in the drain time is reported, never silent."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import AsyncNode, DeliveryGuarantee, Node

COUNT = 100_000
#: small queues, so that the publisher outruns them and must wait for room
TIGHT = {"pubsub_hwm_count": 1_000, "callback_queue_max_count": 1_000}


@pytest.mark.parametrize("guarantee", [DeliveryGuarantee.AT_MOST_ONCE, DeliveryGuarantee.ORDERED])
def test_a_with_block_that_publishes_and_leaves_delivers_everything(
    make_node: NodeFactory, guarantee: DeliveryGuarantee
) -> None:
    sub = make_node("s", **TIGHT)
    got: list[int] = []
    sub.subscribe("t", lambda topic, message, sender: got.append(message))
    with Node("p", seeds=[sub.address], **TIGHT) as pub:
        assert wait_until(lambda: "s" in pub.subscribers("t"), 5)
        for i in range(COUNT):
            pub.publish("t", i, guarantee=guarantee)
    # The subscriber confirmed holding all of them before the publisher left.
    assert wait_until(lambda: len(got) >= COUNT, 30), len(got)
    assert got == list(range(COUNT))


def test_stop_reports_the_subscribers_that_confirmed(make_node: NodeFactory) -> None:
    sub = make_node("s")
    sub.subscribe("t", lambda topic, message, sender: None)
    pub = make_node("p", sub)
    assert wait_until(lambda: "s" in pub.subscribers("t"), 5)
    pub.publish("t", "last words", guarantee=DeliveryGuarantee.AT_LEAST_ONCE)
    report = pub.stop()
    assert report.complete, report
    assert report.subscribers_confirmed == ("s",)
    assert str(report) == "everything delivered (1 subscriber(s) confirmed)"


def test_a_subscriber_that_stops_reading_is_reported_after_the_drain_time(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Its SUB queue holds two messages.
    sub = make_node("s", subscribe_queue_max_bytes=4 * 1024 * 1024, **TIGHT)
    release = threading.Event()
    sub.subscribe("t", lambda topic, message, sender: release.wait(10))
    pub = make_node("p", sub, drain_timeout_s=0.5, publish_block_max_s=0.2, **TIGHT)
    assert wait_until(lambda: "s" in pub.subscribers("t"), 5)
    try:
        began = time.monotonic()
        for _ in range(10_000):  # 100 MB: several times what every queue on the way holds
            pub.publish("t", "x" * 10_000)
        publishing_s = time.monotonic() - began
        with caplog.at_level(logging.WARNING, logger="zcluster.node"):
            report = pub.stop()
    finally:
        release.set()
    # One wait for room in vain, then no more waiting: a stuck reader slows us once.
    assert publishing_s < 5, publishing_s
    assert report.subscribers_unconfirmed == ("s",) and not report.complete
    assert report.publications_dropped > 0
    assert "node p stopped: 1 subscriber(s) did not confirm (s)" in caplog.text
    assert "publication(s) dropped for a full subscriber queue" in caplog.text


def test_asyncio_publish_waits_for_room_and_delivers_everything() -> None:
    async def main() -> list[Any]:
        got: list[Any] = []
        async with AsyncNode("s", **TIGHT) as sub:
            await sub.subscribe("t", lambda topic, message, sender: got.append(message))
            async with AsyncNode("p", seeds=[sub.address], **TIGHT) as pub:
                assert await pub.wait_for(lambda: "s" in pub.subscribers("t"), 5)
                for i in range(20_000):
                    await pub.publish("t", i)
            deadline = time.monotonic() + 30
            while len(got) < 20_000 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        return got

    assert asyncio.run(main()) == list(range(20_000))
