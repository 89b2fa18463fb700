"""The durable store judged with real processes killed by SIGKILL (docs/delivery.md,
"Durability"): a sender killed in the middle of 10,000 AT_LEAST_ONCE messages and
restarted on the same state_dir delivers all of them; a receiver killed and restarted
under EXACTLY_ONCE runs no handler twice and loses nothing (a message whose handler
the kill cut short is reported, not run again); a state_dir in use, corrupt, foreign
or newer stops a node at start with one clear line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import wait_until
from zcluster import AckStatus, ConfigError, DeliveryGuarantee, Node
from zcluster.core.inbound import INTERRUPTED
from zcluster.testing.processes import free_port_pair

COUNT = 10_000

SENDER = textwrap.dedent(
    """
    import sys
    from zcluster import DeliveryGuarantee, Node
    seed, state_dir, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with Node("sender", seeds=[seed], state_dir=state_dir) as node:
        node.wait_for(lambda: node.member("receiver") is not None, 10)
        if mode == "send":
            acks = [
                node.send("receiver", "h", i, guarantee=DeliveryGuarantee.AT_LEAST_ONCE, ttl=120)
                for i in range(count)
            ]
            print("accepted", flush=True)
        else:
            acks = node.restored_sends
            print(f"restored {len(acks)}", flush=True)
        statuses = {ack.wait(120).value for ack in acks}
        print(f"done {sorted(statuses)}", flush=True)
    """
)

RECEIVER = textwrap.dedent(
    """
    import os, sys, threading
    from zcluster import Node
    state_dir, log_path, port = sys.argv[1], sys.argv[2], sys.argv[3]
    log = open(log_path, "a", buffering=1)
    def handle(i, sender):
        log.write(f"{i}\\n")  # line-buffered: in the kernel before the handler returns
    with Node("receiver", bind=f"127.0.0.1:{port}", state_dir=state_dir) as node:
        node.register("h", handle)
        print("ready", flush=True)
        threading.Event().wait()
    """
)


def spawn(script: Path, *args: str, out: Path) -> subprocess.Popen[bytes]:
    with out.open("a") as sink:
        return subprocess.Popen([sys.executable, str(script), *args], stdout=sink, stderr=sink)


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.mark.timeout(240)
def test_a_killed_sender_delivers_everything_after_its_restart(tmp_path: Path) -> None:
    got: Counter[int] = Counter()
    lock = threading.Lock()
    gate = threading.Event()

    def handle(i: int, sender: str) -> None:
        gate.wait(0.0002)  # slower than the sender: most are still unsettled at the kill
        with lock:
            got[i] += 1

    script, out = tmp_path / "sender.py", tmp_path / "sender.log"
    script.write_text(SENDER)
    state = str(tmp_path / "sender-state")
    with Node("receiver") as receiver:
        receiver.register("h", handle)
        first = spawn(script, receiver.address, state, "send", str(COUNT), out=out)
        try:
            assert wait_until(lambda: "accepted" in out.read_text(), 60), out.read_text()
            assert wait_until(lambda: len(got) >= COUNT // 5, 60), out.read_text()
            kill(first)
            assert len(got) < COUNT, "the kill came too late to prove anything"
            second = spawn(script, receiver.address, state, "resume", "0", out=out)
            try:
                assert wait_until(lambda: "done" in out.read_text().split("restored")[-1], 120), (
                    out.read_text()
                )
            finally:
                kill(second)
        finally:
            kill(first)
        text = out.read_text()
        assert "done ['delivered']" in text, text
        with lock:
            assert set(got) == set(range(COUNT)), sorted(set(range(COUNT)) - set(got))[:10]


@pytest.mark.timeout(240)
def test_a_killed_receiver_runs_no_handler_twice_and_loses_nothing(tmp_path: Path) -> None:
    script, out, log = tmp_path / "receiver.py", tmp_path / "receiver.out", tmp_path / "handled"
    script.write_text(RECEIVER)
    state = str(tmp_path / "receiver-state")
    port = free_port_pair()
    first = spawn(script, state, str(log), str(port), out=out)
    second: subprocess.Popen[bytes] | None = None
    try:
        assert wait_until(lambda: "ready" in out.read_text(), 30), out.read_text()
        with Node("sender", seeds=[f"127.0.0.1:{port}"]) as sender:
            sender.wait_for(lambda: sender.member("receiver") is not None, 10)
            acks = [
                sender.send("receiver", "h", i, guarantee=DeliveryGuarantee.EXACTLY_ONCE, ttl=120)
                for i in range(COUNT)
            ]
            assert wait_until(lambda: handled(log) >= COUNT // 5, 60)
            kill(first)
            assert handled(log) < COUNT, "the kill came too late to prove anything"
            second = spawn(script, state, str(log), str(port), out=out)
            assert wait_until(lambda: all(ack.done for ack in acks), 120), out.read_text()
            lines = Counter(int(x) for x in log.read_text().split())
    finally:
        kill(first)
        if second is not None:
            kill(second)
    assert max(lines.values()) == 1, f"a handler ran twice: {lines.most_common(3)}"
    interrupted = [a for a in acks if a.status is not AckStatus.DELIVERED]
    for ack in interrupted:
        assert (ack.status, ack.reason) == (AckStatus.FAILED, INTERRUPTED), ack
    delivered = {a.message_id.number for a in acks if a.status is AckStatus.DELIVERED}
    assert len(delivered) + len(interrupted) == COUNT
    assert len(interrupted) <= 64, "only what was in hand at the kill is cut short"
    assert len(lines) >= COUNT - len(interrupted)


def handled(log: Path) -> int:
    return log.read_text().count("\n") if log.exists() else 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("garbage", "is corrupt or not a database"),
        ("foreign", "is not a zcluster state file"),
        ("newer", "written by a newer zcluster"),
        ("other node", "belongs to node 'other'"),
    ],
)
def test_a_state_dir_that_cannot_be_used_stops_the_node_at_start(
    tmp_path: Path, damage: str, message: str
) -> None:
    state = tmp_path / "state"
    with Node("n", state_dir=state):
        pass
    database = state / "state.sqlite3"
    if damage == "garbage":
        database.write_bytes(b"\x00garbage" * 512)
        for extra in state.glob("state.sqlite3-*"):
            extra.unlink()
    elif damage == "foreign":
        database.unlink()
        with sqlite3.connect(database) as db:
            db.execute("CREATE TABLE notes (x)")
    elif damage == "newer":
        with sqlite3.connect(database) as db:
            db.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    else:
        with sqlite3.connect(database) as db:
            db.execute("UPDATE meta SET value = 'other' WHERE key = 'node_id'")
    with pytest.raises(ConfigError, match=message):
        Node("n", state_dir=state).start()


def test_two_nodes_cannot_share_a_state_dir(tmp_path: Path) -> None:
    with Node("n", state_dir=tmp_path), pytest.raises(ConfigError, match="in use by another"):
        Node("n", state_dir=tmp_path).start()
