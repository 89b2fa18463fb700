"""Keys rotate without a restart: a node reads its security files again when they change
(or on ``reload_security()``, SIGHUP for ``zcluster node``); a key no longer authorized
is refused and cut from the node's PUB; a new one is let in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import all_up, wait_until
from zcluster import MemberStatus, Node
from zcluster.security.config import SecurityConfig
from zcluster.security.keys import load_curve_key_pair, write_curve_key_pair

FAST_RELOAD = {"auth_reload_interval_s": 0.1}


def _authorize(keys: Path, directory: Path, node_id: str) -> None:
    (directory / f"{node_id}.key").write_bytes((keys / f"{node_id}.key").read_bytes())


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    for node_id in ("a", "b", "c", "d"):
        write_curve_key_pair(keys, node_id)
    return keys


def _security(keys: Path, node_id: str, seeds: dict[str, str]) -> SecurityConfig:
    return SecurityConfig(
        "curve-mutual",
        key=keys / f"{node_id}.key_secret",
        seed_keys=seeds,
        authorized_keys=keys / f"authorized-by-{node_id}",
    )


@pytest.fixture
def trio(keys: Path) -> Iterator[list[Node]]:
    for holder in ("a", "b", "c", "d"):
        directory = keys / f"authorized-by-{holder}"
        directory.mkdir()
        for node_id in ("a", "b", "c"):
            _authorize(keys, directory, node_id)
    nodes: list[Node] = []
    try:
        a = Node("a", security=_security(keys, "a", {}), **FAST_RELOAD)
        nodes.append(a)
        a.start()
        seeds = {a.address: load_curve_key_pair(keys / "a.key").public.decode()}
        for node_id in ("b", "c"):
            node = Node(node_id, seeds=[a.address], security=_security(keys, node_id, seeds))
            nodes.append(node)
            node.start()
        assert wait_until(lambda: all_up(nodes), 10)
        yield nodes
    finally:
        for node in reversed(nodes):
            node.stop()


def test_a_revoked_key_is_refused_and_cut_from_publications(trio: list[Node], keys: Path) -> None:
    a, b, c = trio
    got: dict[str, list[object]] = {"b": [], "c": []}
    for node in (b, c):
        node.subscribe("news", lambda t, m, s, at=node.node_id: got[at].append(m))
    assert wait_until(lambda: a.subscribers("news") == {"b", "c"}, 5)
    a.publish("news", "before")
    assert wait_until(lambda: got["b"] == got["c"] == ["before"], 5), got
    for holder in ("a", "b"):  # a and b no longer let c in
        (keys / f"authorized-by-{holder}" / "c.key").unlink()
    assert wait_until(lambda: a.stats().get("subscribers_cut", 0) >= 1, 5), a.stats()
    # c's messages to a are refused from now on, and c's connection to a's PUB is gone.
    assert wait_until(lambda: a.stats().get("auth_refused_key_unknown", 0) >= 1, 5)
    # b's SUB reconnects at its own pace: publish until b hears again, then c must
    # have heard nothing of it (a publication with no subscriber connected is lost).
    sent = iter(range(1000))

    def b_hears_again() -> bool:
        a.publish("news", f"after {next(sent)}")
        return len(got["b"]) > 1

    assert wait_until(b_hears_again, 10, interval=0.05), got
    time.sleep(0.2)  # what c would have heard of it arrives by now
    assert got["c"] == ["before"]
    # Refused by a and b, c is soon declared down by both; they still see each other.
    assert wait_until(lambda: not any(_live(node, "c") for node in (a, b)), 10)
    assert _live(a, "b") and _live(b, "a")


def test_a_new_key_joins_without_a_restart(trio: list[Node], keys: Path) -> None:
    a, b, c = trio
    seeds = {a.address: load_curve_key_pair(keys / "a.key").public.decode()}
    for holder in ("a", "b", "c"):
        _authorize(keys, keys / f"authorized-by-{holder}", "d")
    assert wait_until(lambda: all(n.stats().get("auth_reloads", 0) for n in trio), 5)
    with Node("d", seeds=[a.address], security=_security(keys, "d", seeds)) as d:
        assert wait_until(lambda: all_up([a, b, c, d]), 10), [n.members() for n in trio]
    assert all(n.stats().get("auth_reload_failed", 0) == 0 for n in trio)


def test_a_bad_file_keeps_the_old_keys(trio: list[Node], keys: Path) -> None:
    a, b, _ = trio
    (keys / "authorized-by-a" / "garbage.key").write_text("not a certificate\n")
    assert not a.reload_security()
    assert a.stats()["auth_reload_failed"] == 1
    got: list[object] = []
    a.register("inbox", lambda message, sender: got.append(message))
    b.send("a", "inbox", "still in")
    assert wait_until(lambda: got == ["still in"], 5)


def _live(node: Node, node_id: str) -> bool:
    member = node.member(node_id)
    return member is not None and member.status is MemberStatus.UP
