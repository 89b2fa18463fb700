"""Ctrl-C, a second Ctrl-C and a closed stdout, as Unix users expect of a command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.commands import PROCESS_EXIT_TIMEOUT_S, zcluster
from tests.helpers import wait_until
from zcluster.cli import BROKEN_PIPE_EXIT, INTERRUPTED_EXIT
from zcluster.testing.processes import free_port_pair

#: a prompt stop: well under what publishing ten million messages takes
PROMPT_EXIT_S = 5.0
SECOND_SIGNAL_AFTER_S = 0.05


def _command(*args: str, stdout: int = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "zcluster", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=PROCESS_EXIT_TIMEOUT_S)


def test_ctrl_c_stops_pub_promptly_with_status_130(spawn) -> None:  # type: ignore[no-untyped-def]
    seed = f"127.0.0.1:{free_port_pair()}"
    n1 = spawn("n1", "--id", "n1", "--bind", seed)
    assert n1.wait_log("listening on", 10)
    pub = _command("pub", "bulk", "hello", "--seed", seed, "--count", "10000000")
    try:
        assert n1.wait_log("pub-", 15), n1.log()  # it joined: the seed logs its view
        pub.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        out, err = pub.communicate(timeout=PROCESS_EXIT_TIMEOUT_S)
        assert time.monotonic() - interrupted_at < PROMPT_EXIT_S
        assert pub.returncode == INTERRUPTED_EXIT, err
        assert "interrupted after" in err and "of 10000000 message(s)" in err, err
        assert "published" not in out
    finally:
        _reap(pub)


def test_a_second_ctrl_c_ends_a_node_at_once(spawn) -> None:  # type: ignore[no-untyped-def]
    seed = f"127.0.0.1:{free_port_pair()}"
    n1 = spawn("n1", "--id", "n1", "--bind", seed)
    n2 = spawn("n2", "--id", "n2", "--bind", f"127.0.0.1:{free_port_pair()}", "--seed", seed)
    assert n2.wait_log("view: 2 up of 2", 15), n2.log()
    n2.proc.send_signal(signal.SIGINT)
    # Apart, as two key presses are (the kernel merges a signal sent while the same one is
    # pending); well within the leave, which lasts at least heartbeat_interval_s (0.2 s).
    time.sleep(SECOND_SIGNAL_AFTER_S)
    n2.proc.send_signal(signal.SIGINT)
    assert n2.proc.wait(PROCESS_EXIT_TIMEOUT_S) == INTERRUPTED_EXIT, n2.log()
    assert n1.proc.poll() is None


def test_a_node_still_joining_stops_cleanly_on_sigterm(spawn) -> None:  # type: ignore[no-untyped-def]
    nobody = f"127.0.0.1:{free_port_pair()}"
    node = spawn("n1", "--id", "n1", "--seed", nobody)
    assert node.wait_log("listening on", 10), node.log()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(PROCESS_EXIT_TIMEOUT_S) == 0, node.log()
    assert "Traceback" not in node.log() and "node n1 stopped" in node.log()


def test_sub_ends_quietly_when_its_reader_goes(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``zcluster sub ... | head -2``: no traceback, the status of a broken pipe."""
    seed = f"127.0.0.1:{free_port_pair()}"
    n1 = spawn("n1", "--id", "n1", "--bind", seed)
    assert n1.wait_log("listening on", 10)
    sub_err = tmp_path / "sub.err"
    with sub_err.open("w") as err_file:
        sub = subprocess.Popen(
            [sys.executable, "-m", "zcluster", "sub", "bulk", "--seed", seed],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
        try:
            assert wait_until(lambda: "subscribed to 'bulk'" in sub_err.read_text(), 15)
            pub = zcluster("pub", "bulk", "hi", "--seed", seed, "--count", "2")
            assert pub.returncode == 0, pub.stderr
            assert sub.stdout is not None
            lines = [sub.stdout.readline(), sub.stdout.readline()]
            assert all(line.rstrip().endswith("] hi") for line in lines), lines
            sub.stdout.close()  # the reader goes, as head does after two lines
            more = zcluster("pub", "bulk", "hi", "--seed", seed, "--count", "20")
            assert more.returncode == 0, more.stderr
            assert sub.wait(PROCESS_EXIT_TIMEOUT_S) == BROKEN_PIPE_EXIT
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait(PROCESS_EXIT_TIMEOUT_S)
    err = sub_err.read_text()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("subscribed to 'bulk' as "), err
