"""Mistakes a new user makes get an error that says what to do (never silence, never a
misleading message)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.helpers import all_up, wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import (
    AckStatus,
    AsyncNode,
    ConfigError,
    JoinTimeout,
    Node,
    NodeConfig,
    NotRunning,
    RemoteError,
)
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.runtime.errorlog import ErrorLog
from zcluster.serialization import JsonSerializer
from zcluster.settings import resolve

GUARANTEED = (
    DeliveryGuarantee.AT_LEAST_ONCE,
    DeliveryGuarantee.EXACTLY_ONCE,
    DeliveryGuarantee.ORDERED,
)
AT_MOST_ONCE = DeliveryGuarantee.AT_MOST_ONCE


def test_a_typo_in_a_setting_suggests_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"'probe_intervl_s' \(did you mean 'probe_interval_s'"):
        Node("a", probe_intervl_s=1.0)
    with pytest.raises(ConfigError, match=r"did you mean 'heartbeat_interval_s'"):
        NodeConfig().replace(heartbeat_interval=1.0)
    with pytest.raises(ConfigError, match=r"unknown setting 'zzz'$"):  # nothing close: no hint
        NodeConfig().replace(zzz=1)


def _resolve_file(path: Path) -> None:
    resolve(
        node_id=None,
        bind=None,
        advertise=None,
        seeds=(),
        config_file=str(path),
        tuning=(),
        environ={},
    )


def test_a_typo_in_a_config_file_suggests_the_key(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('id = "a"\nseed = ["127.0.0.1:7000"]\n[tuning]\nprobe_interval = 0.5\n')
    with pytest.raises(ConfigError, match=r"unknown key 'seed' \(did you mean 'seeds'"):
        _resolve_file(config)
    config.write_text('id = "a"\n[tuning]\nprobe_interval = 0.5\n')
    with pytest.raises(ConfigError, match=r"did you mean 'probe_interval_s'"):
        _resolve_file(config)


def test_seeds_given_as_one_string_say_to_pass_a_list() -> None:
    with pytest.raises(ConfigError, match=r"seeds=\['127.0.0.1:7000'\]"):
        Node("a", seeds="127.0.0.1:7000")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="list of HOST:PORT"):
        AsyncNode("a", seeds="127.0.0.1:7000")  # type: ignore[arg-type]


def test_wildcard_topics_are_refused_not_taken_literally() -> None:
    node = Node("a")
    for topic in ("prices.*", "prices.>"):
        with pytest.raises(ConfigError, match="topics match exactly, wildcards are not supported"):
            node.subscribe(topic, lambda *_: None)
    with node:
        with pytest.raises(ConfigError, match="wildcards are not supported"):
            node.publish("prices.*", 1)
        node.publish("prices.eur", 1)  # a plain dotted topic is fine


def test_a_second_handler_for_a_name_is_refused_until_the_first_is_unregistered() -> None:
    node = Node("a")
    node.register("greet", lambda message, sender: "first")
    with pytest.raises(ConfigError, match=r"registered already; unregister\('greet'\) first"):
        node.register("greet", lambda message, sender: "second")
    node.unregister("greet")
    node.register("greet", lambda message, sender: "second")
    with node:
        assert node.request("a", "greet", None, timeout=5) == "second"
    with pytest.raises(ConfigError, match="no handler named 'nothing'"):
        node.unregister("nothing")


def test_not_running_says_to_start_the_node() -> None:
    node = Node("a")
    with pytest.raises(NotRunning, match=r"call start\(\) first, or use it in a 'with'"):
        node.publish("t", 1)


def test_a_failing_handler_is_logged_on_its_own_node_with_its_traceback(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_node("a", callback_error_log_interval_s=0.001)
    b = make_node("b", a)
    assert wait_until(lambda: all_up([a, b]), 5)

    def divide(message: int, sender: str) -> float:
        return 1 / message

    a.register("divide", divide)
    with caplog.at_level(logging.ERROR, logger="zcluster.callbacks"):
        with pytest.raises(RemoteError, match="ZeroDivisionError"):
            b.request("a", "divide", 0, timeout=5)
        time.sleep(0.01)  # past the log interval: this failure gets a report of its own
        ack = b.send("a", "divide", 0)
        assert ack is not None and ack.wait(5) is AckStatus.FAILED
        assert wait_until(lambda: len(caplog.records) >= 2, 5), caplog.text
    request, message = caplog.records[:2]
    assert request.getMessage().startswith(
        "node a: handler 'divide' (a request from b) raised ZeroDivisionError: division by zero"
    )
    assert message.getMessage().startswith(
        "node a: handler 'divide' (a guaranteed message from b) raised ZeroDivisionError"
    )
    assert all(record.exc_info is not None for record in (request, message))
    assert a.stats()["callback_errors"] == 2


def test_failures_are_logged_a_bounded_number_of_times(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    errors = ErrorLog(interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="zcluster.callbacks"):
        for _ in range(5):
            errors.report("handler 'x'", ValueError("bad"))
        now[0] += 10.0
        errors.report("handler 'x'", ValueError("worse"))
    first, second = (record.getMessage() for record in caplog.records)
    assert first == "handler 'x' raised ValueError: bad"
    assert second == (
        "handler 'x' raised ValueError: worse (4 more failure(s) since the last report, not shown)"
    )


def test_a_node_sends_to_itself_as_it_requests_from_itself(make_node: NodeFactory) -> None:
    got: list[tuple[int, str]] = []
    a = make_node("a")
    a.register("note", lambda message, sender: got.append((message, sender)))
    acks = [a.send("a", "note", i, guarantee=g) for i, g in enumerate(GUARANTEED)]
    assert acks[0] is not None and a.send("a", "note", 3, guarantee=AT_MOST_ONCE) is None
    assert [ack.wait(5) if ack else None for ack in acks] == [AckStatus.DELIVERED] * 3
    assert wait_until(lambda: len(got) == 4, 5), got
    assert sorted(got) == [(0, "a"), (1, "a"), (2, "a"), (3, "a")]


def test_a_node_no_seed_admits_says_so_and_what_to_check(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    other = make_node("other")
    pub_port = other.pub_address  # a PUB port, given by mistake: it never answers a join
    with caplog.at_level(logging.WARNING, logger="zcluster"):
        lonely = Node(
            "lonely", seeds=[pub_port], join_warning_interval_s=0.1, seed_check_timeout_s=10.0
        )
        with pytest.raises(JoinTimeout, match="probably a node's PUB port"):
            lonely.start(timeout=1.0)
    warnings = [r.getMessage() for r in caplog.records if "not admitted after" in r.getMessage()]
    assert warnings, caplog.text
    assert warnings[0].startswith(
        f"node lonely: not admitted after 0.1s; {pub_port}: a ZeroMQ socket there drops our "
        "connection: probably a node's PUB port"
    )
    assert len(warnings) <= 1.0 / 0.1 + 1  # one an interval, not a flood


def test_a_message_in_another_serializer_is_one_line_not_a_traceback(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """``sub`` reading a JSON publisher: what is wrong, once, without a traceback."""
    reader = make_node("reader")
    writer = make_node("writer", reader, serializer=JsonSerializer())
    got: list[object] = []
    reader.subscribe("t", lambda topic, message, sender: got.append(message))
    assert wait_until(lambda: "reader" in writer.subscribers("t"), 5)
    with caplog.at_level(logging.ERROR, logger="zcluster.callbacks"):
        for i in range(20):
            writer.publish("t", {"i": i})
        assert wait_until(lambda: reader.stats().get("callback_errors") == 20, 5), reader.stats()
    lines = [r for r in caplog.records if "another serializer" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None, caplog.text
    assert "raised DeserializeError: invalid msgpack data" in lines[0].getMessage()
    assert got == []
