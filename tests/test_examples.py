"""Every example runs as a real process and does what its docstring says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_until
from zcluster.testing.processes import free_port_pair

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_TIMEOUT_S = 120


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_fanout_ten_thousand_messages_to_three_subscriber_processes() -> None:
    out = run_example("fanout.py", "--subscribers", "3", "--messages", "10000")
    for i in (1, 2, 3):
        assert f"subscriber-{i}: received 10000/10000, in order: True" in out
    assert "all subscribers received every message in order" in out


def test_request_reply() -> None:
    out = run_example("request_reply.py")
    assert "{'item': 'apple', 'count': 3, 'asked_by': 'shop'}" in out
    assert "error from inventory: KeyError: 'plum'" in out


def test_hostile_peer() -> None:
    out = run_example("hostile_peer.py", "--seconds", "3")
    answered = int(out.split("requests answered during the flood: ")[1].split(",")[0])
    assert answered >= 20, out
    assert int(out.split("frames rejected as malformed: ")[1].split()[0]) > 0, out
    assert "service still sees the client: up" in out


def test_secure_cluster() -> None:
    out = run_example("secure_cluster.py")
    assert "billed order 1 for store" in out
    assert "audit received store: order 1 (encrypted on the wire)" in out
    assert "intruder refused: node billing could not join" in out
    assert "refused this node's credentials" in out
    assert int(out.split("handshakes refused by store (key unknown): ")[1].split()[0]) >= 1
    assert "members after the attempt: audit, billing, store" in out


def test_embedded_script() -> None:
    out = run_example("embedded_script.py")
    assert "sensor-1 is up at 127.0.0.1:" in out
    assert "status: {'node': 'sensor-1', 'ok': True}" in out


def test_embedded_script_reaches_a_running_subscriber(tmp_path: Path) -> None:
    """Joined to a cluster where ``zcluster sub`` runs, the script's readings reach it."""
    seed = f"127.0.0.1:{free_port_pair()}"
    zcluster = [sys.executable, "-m", "zcluster"]
    node_log, sub_err = tmp_path / "node.log", tmp_path / "sub.err"
    with node_log.open("w") as log, sub_err.open("w") as err:
        node = subprocess.Popen([*zcluster, "node", "--id", "n1", "--bind", seed], stderr=log)
        sub = subprocess.Popen(
            [*zcluster, "sub", "sensors.temperature", "--seed", seed, "--count", "3"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            assert wait_until(lambda: "subscribed to" in sub_err.read_text(), 15)
            out = run_example("embedded_script.py", "--seed", seed)
            assert "publishing to 1 subscriber(s)" in out
            printed, _ = sub.communicate(timeout=EXAMPLE_TIMEOUT_S)
            assert [line.split("] ")[1] for line in printed.splitlines()] == [
                '{"celsius": 21.5}',
                '{"celsius": 21.7}',
                '{"celsius": 21.6}',
            ]
        finally:
            for proc in (sub, node):
                if proc.poll() is None:
                    proc.kill()
                proc.wait(EXAMPLE_TIMEOUT_S)


def test_asyncio_app() -> None:
    out = run_example("asyncio_app.py")
    assert "resized to {'width': 320, 'height': 240}" in out
    assert "event: worker: resize finished" in out


def test_guaranteed_delivery() -> None:
    out = run_example("guaranteed_delivery.py")
    assert "1000 orders: ['delivered']" in out
    assert "billed in order, once each: True" in out
    assert "retransmissions: 0" not in out  # the lossy link made repairs necessary
    assert "sent in batches: True" in out
    assert "order -1: failed (handler raised ValueError: order -1 has a negative number)" in out
    assert "prices received: 500/500, lost for good: 0" in out
    assert "order to a stopped node: refused ('billing' is not a member" in out


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_every_example_is_exercised(path: Path) -> None:
    tested = Path(__file__).read_text()
    assert f'"{path.name}"' in tested, f"{path.name} has no test"


def test_causal_forum() -> None:
    out = run_example("causal_forum.py")
    assert "CAUSAL: replies read before their post: 0" in out
    assert "CAUSAL: replies that arrived first and waited for their post: True" in out
    assert "AT_LEAST_ONCE: replies read before their post: True" in out


def test_transactions() -> None:
    out = run_example("transactions.py")
    assert "apples: committed" in out
    assert "pears: aborted (warehouse vetoed: LookupError: no pears in stock)" in out
    assert "apples without shipping: aborted ('shipping' is not a member" in out
    booked = "{'warehouse': ['apples'], 'billing': ['apples'], 'shipping': ['apples']}"
    assert f"booked: {booked}" in out
