"""``zcluster request`` and ``zcluster send``, ``--format`` and ``--join-timeout``: real
processes on 127.0.0.1 (docs/cli.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.commands import PROCESS_EXIT_TIMEOUT_S, zcluster
from tests.helpers import wait_until
from zcluster.testing.processes import free_port_pair

SUB = [sys.executable, "-m", "zcluster", "sub"]


def test_request_prints_the_reply(seed: str) -> None:
    result = zcluster("request", "n1", "zcluster.view", "--seed", seed)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["node_id"] == "n1"
    assert "n1" in [m["node_id"] for m in view["members"]]


@pytest.mark.parametrize(
    "args, error",
    [
        (("n1", "nosuch", "hi"), "zcluster: error: no handler named 'nosuch' on node n1"),
        (("n9", "zcluster.view", "--join-timeout", "1"), "zcluster: error: 'n9' is not a live"),
    ],
)
def test_request_failures_exit_1_saying_why(seed: str, args: tuple[str, ...], error: str) -> None:
    result = zcluster("request", *args, "--seed", seed)
    assert result.returncode == 1, result.stdout + result.stderr
    assert error in result.stderr and "Traceback" not in result.stderr


def test_send_waits_for_acknowledgements_and_says_how_they_ended(seed: str) -> None:
    delivered = zcluster(
        "send", "n1", "zcluster.view", '{"n": 1}', "--json", "--count", "3", "--seed", seed
    )
    assert delivered.returncode == 0, delivered.stderr
    assert delivered.stdout == "sent 3 message(s) to n1 'zcluster.view': 3 delivered\n"
    failed = zcluster("send", "n1", "nosuch", "x", "--seed", seed)
    assert failed.returncode == 1
    assert failed.stdout == "sent 1 message(s) to n1 'nosuch': 0 delivered\n"
    assert "zcluster: error: 1 not delivered: no handler named 'nosuch' on node n1" in (
        failed.stderr
    )
    fire = zcluster("send", "n1", "nosuch", "x", "--guarantee", "at-most-once", "--seed", seed)
    assert fire.returncode == 0, fire.stderr
    assert fire.stdout == "sent 1 message(s) to n1 'nosuch' (at most once: not acknowledged)\n"


def test_a_json_speaking_subscriber_reads_a_json_publisher(seed: str, tmp_path: Path) -> None:
    err = tmp_path / "sub.err"
    with err.open("wb") as err_file:
        sub = subprocess.Popen(
            [*SUB, "t", "--seed", seed, "--format", "json", "--count", "1"],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    try:
        assert wait_until(lambda: "subscribed to 't'" in err.read_text(), 10), err.read_text()
        result = zcluster("pub", "t", '{"a": [1, 2]}', "--json", "--format", "json", "--seed", seed)
        assert result.returncode == 0, result.stderr
        out, _ = sub.communicate(timeout=PROCESS_EXIT_TIMEOUT_S)
        assert out.strip().endswith('] {"a": [1, 2]}'), out
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def test_join_timeout_bounds_a_client_that_cannot_join() -> None:
    nobody = f"127.0.0.1:{free_port_pair()}"
    began = time.monotonic()
    result = zcluster("members", "--seed", nobody, "--join-timeout", "1")
    assert result.returncode == 1
    assert "within 1s: no seed admitted it" in result.stderr
    assert time.monotonic() - began < 8
