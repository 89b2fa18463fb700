"""Prefix subscriptions on real sockets: every topic that starts with the prefix, no
other, repaired per topic (docs/getting-started.md)."""

from __future__ import annotations

import pytest

from tests.helpers import wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import ConfigError, DeliveryGuarantee

G = DeliveryGuarantee


def test_a_prefix_reads_every_matching_topic_and_no_other(make_node: NodeFactory) -> None:
    sub = make_node("s")
    got: list[tuple[str, object]] = []
    sub.subscribe_prefix("prices.", lambda topic, message, sender: got.append((topic, message)))
    pub = make_node("p", sub)
    assert wait_until(lambda: "s" in pub.subscribers("prices.eur"), 5)
    assert "s" not in pub.subscribers("news")
    for i in range(100):
        pub.publish("prices.eur", i, guarantee=G.AT_LEAST_ONCE)
        pub.publish("prices.usd", i)
        pub.publish("news", i)
    report = pub.stop()
    assert report.complete and report.subscribers_confirmed == ("s",), report
    assert wait_until(lambda: len(got) >= 200, 10), len(got)
    assert [m for t, m in got if t == "prices.eur"] == list(range(100))
    assert [m for t, m in got if t == "prices.usd"] == list(range(100))
    assert not [t for t, _ in got if t == "news"]


def test_an_exact_topic_and_a_prefix_both_get_it_and_unsubscribing_one_keeps_the_other(
    make_node: NodeFactory,
) -> None:
    sub = make_node("s")
    exact: list[object] = []
    prefixed: list[object] = []
    sub.subscribe("prices.eur", lambda topic, message, sender: exact.append(message))
    sub.subscribe_prefix("prices.", lambda topic, message, sender: prefixed.append(message))
    pub = make_node("p", sub)
    assert wait_until(lambda: "s" in pub.subscribers("prices.eur"), 5)
    pub.publish("prices.eur", 1)
    assert wait_until(lambda: exact == [1] and prefixed == [1], 5), (exact, prefixed)
    sub.unsubscribe("prices.eur")
    pub.publish("prices.eur", 2)
    assert wait_until(lambda: prefixed == [1, 2], 5), prefixed
    assert exact == [1]


def test_a_wildcard_is_not_a_prefix(make_node: NodeFactory) -> None:
    sub = make_node("s")
    with pytest.raises(ConfigError, match="wildcards are not supported"):
        sub.subscribe_prefix("prices.*", lambda topic, message, sender: None)
