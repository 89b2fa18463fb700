"""``zcluster pub`` leaves only once its subscribers hold every message, and says so; it
exits 1 when one could not confirm (docs/cli.md, docs/delivery.md)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.commands import PROCESS_EXIT_TIMEOUT_S, zcluster
from tests.helpers import wait_until

COUNT = 200_000


@pytest.fixture
def subscriber(seed: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A ``zcluster sub bulk`` writing to a file, subscribed; killed at teardown."""
    out, err = tmp_path / "sub.out", tmp_path / "sub.err"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zcluster", "sub", "bulk", "--seed", seed],
            stdout=out_file,
            stderr=err_file,
        )
    try:
        assert wait_until(lambda: "subscribed to 'bulk'" in err.read_text(), 10), err.read_text()
        yield proc, out
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(PROCESS_EXIT_TIMEOUT_S)


@pytest.mark.parametrize("guarantee", ["at-most-once", "at-least-once"])
def test_every_message_reaches_a_subscriber_before_pub_exits(
    seed: str, subscriber: tuple[subprocess.Popen[bytes], Path], guarantee: str
) -> None:
    _, out = subscriber
    result = zcluster(
        "pub", "bulk", "x", "--seed", seed, "--count", str(COUNT), "--guarantee", guarantee
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"published {COUNT} message(s) on 'bulk' to 1 subscriber(s); 1 confirmed having them all"
        in result.stdout
    )
    # Confirmed: every message was in the subscriber's hands before pub left.
    assert wait_until(lambda: out.read_bytes().count(b"\n") >= COUNT, 30)
    lines = out.read_text().splitlines()
    assert len(lines) == COUNT and all(line.endswith("] x") for line in lines)


def test_pub_exits_1_naming_a_subscriber_that_could_not_confirm(seed: str, tmp_path: Path) -> None:
    # A subscriber whose output nobody reads: it stays up, but soon reads nothing more.
    err = tmp_path / "stuck.err"
    with err.open("wb") as err_file:
        stuck = subprocess.Popen(
            [sys.executable, "-m", "zcluster", "sub", "bulk", "--seed", seed],
            stdout=subprocess.PIPE,
            stderr=err_file,
        )
    try:
        assert wait_until(lambda: "subscribed to 'bulk'" in err.read_text(), 10), err.read_text()
        result = zcluster(
            "pub", "bulk", "x" * 1000, "--seed", seed, "--count", "300000", "--drain-timeout", "1"
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "to 1 subscriber(s); 0 confirmed having them all" in result.stdout
        assert (
            "zcluster: error: not every message was delivered: 1 subscriber(s) did not confirm"
            in result.stderr
        )
    finally:
        stuck.kill()
        stuck.wait(PROCESS_EXIT_TIMEOUT_S)
        assert stuck.stdout is not None
        stuck.stdout.close()
