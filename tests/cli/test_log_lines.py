"""What a node logs about membership at INFO: the changes an operator wants, bounded."""

from __future__ import annotations

import json

import pytest

from zcluster import Member, MemberStatus
from zcluster.application import notable_change
from zcluster.cli import VIEW_SHOWN_MAX_COUNT, _describe_view

S = MemberStatus
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def member(
    status: MemberStatus, incarnation: int = 1, version: int = 1, node_id: str = "n"
) -> Member:
    return Member(node_id, incarnation, version, status, "127.0.0.1:1", "127.0.0.1:2")


@pytest.mark.parametrize(
    "previous, now, notable",
    [
        (None, member(S.UP), True),  # a member we had not seen, up
        (member(S.JOINING), member(S.UP), True),
        (member(S.UP), member(S.SUSPECT), True),
        (member(S.SUSPECT), member(S.DOWN), True),
        (member(S.LEAVING), member(S.LEFT), True),
        (member(S.DOWN), member(S.JOINING, incarnation=2), True),  # a restart
        (None, member(S.JOINING), False),  # steps on the way
        (member(S.UP), member(S.LEAVING), False),
        (member(S.LEFT), member(S.REMOVED), False),  # bookkeeping
        (member(S.UP), member(S.UP, version=2), False),  # a refuted suspicion's new version
        (None, member(S.LEFT), False),  # news of members gone before we met them
        (None, member(S.REMOVED), False),
    ],
)
def test_which_changes_are_worth_a_line(
    previous: Member | None, now: Member, notable: bool
) -> None:
    assert notable_change(now, previous) is notable


def test_the_view_line_leaves_out_the_departed_and_is_bounded() -> None:
    members = [member(S.UP, node_id=f"n{i:02d}") for i in range(VIEW_SHOWN_MAX_COUNT + 5)]
    members += [member(S.LEFT, node_id="client"), member(S.REMOVED, node_id="old")]
    line = _describe_view(members)
    total = VIEW_SHOWN_MAX_COUNT + 5
    assert line.startswith(f"view: {total} up of {total} [n00=up, ")
    assert line.endswith(f"n{VIEW_SHOWN_MAX_COUNT - 1:02d}=up, and 5 more]")
    assert "client" not in line and "old" not in line


def test_json_log_lines_for_log_shippers(spawn) -> None:  # type: ignore[no-untyped-def]
    node = spawn("n1", "--id", "n1", "--log-format", "json")
    assert node.wait_log("listening on", 10), node.log()
    entries = [json.loads(line) for line in node.log().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["message"].startswith("node n1 listening on 127.0.0.1:") for e in entries)
    assert all(e["time"].endswith("+00:00") and e["level"] in LEVELS for e in entries)


def test_debug_lines_show_the_protocol_at_work(spawn) -> None:  # type: ignore[no-untyped-def]
    first = spawn("n1", "--id", "n1", "--log-level", "debug")
    assert first.wait_log("listening on 127.0.0.1:", 10), first.log()
    address = first.log().split("listening on ")[1].split()[0]
    second = spawn("n2", "--id", "n2", "--seed", address)
    assert second.wait_log("listening on", 10), second.log()
    # the join, then probes and their answers, as they come and go
    for shown in ("n1 <- n2 Sync(", "n1 -> ", "Ping(probe_id=", "Ack(probe_id="):
        assert first.wait_log(shown, 10), (shown, first.log()[-3000:])
    assert "DEBUG n1: member n2 new -> joining" in first.log()
