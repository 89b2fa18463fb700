"""The zcluster command line, as real processes on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.commands import PROCESS_EXIT_TIMEOUT_S, zcluster
from tests.helpers import wait_until
from zcluster.testing.processes import free_port_pair


def test_three_nodes_kill_and_restart(spawn) -> None:  # type: ignore[no-untyped-def]
    ports = [free_port_pair() for _ in range(3)]
    seed = f"127.0.0.1:{ports[0]}"
    n1 = spawn("n1", "--id", "n1", "--bind", seed)
    assert n1.wait_log("listening on", 10)
    n2 = spawn("n2", "--id", "n2", "--bind", f"127.0.0.1:{ports[1]}", "--seed", seed)
    n3 = spawn("n3", "--id", "n3", "--bind", f"127.0.0.1:{ports[2]}", "--seed", seed)
    for node in (n1, n2, n3):
        assert node.wait_log("view: 3 up of 3", 10), node.log()

    marks = [len(n1.log()), len(n2.log())]
    n3.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_until(
        lambda: all(
            "member n3 suspect -> down" in n.log()[m:] for n, m in zip((n1, n2), marks, strict=True)
        ),
        5,
    ), n1.log()[marks[0] :]
    elapsed = time.monotonic() - killed_at
    assert elapsed < 3.0, f"down seen after {elapsed:.2f}s"

    marks = [len(n1.log()), len(n2.log())]
    n3b = spawn("n3b", "--id", "n3", "--bind", f"127.0.0.1:{ports[2]}", "--seed", seed)
    assert n3b.wait_log("view: 3 up of 3", 10), n3b.log()
    for node, mark in zip((n1, n2), marks, strict=True):
        assert node.wait_log("view: 3 up of 3", 10, after=mark), node.log()[mark:]
        assert (
            "(restarted) -> joining" in node.log()[mark:] or "down (restarted)" in node.log()[mark:]
        )


def test_sigterm_leaves_the_cluster_and_exits_cleanly(spawn) -> None:  # type: ignore[no-untyped-def]
    port = free_port_pair()
    seed = f"127.0.0.1:{port}"
    n1 = spawn("n1", "--id", "n1", "--bind", seed)
    assert n1.wait_log("listening on", 10)
    n2 = spawn("n2", "--id", "n2", "--seed", seed)
    assert n1.wait_log("view: 2 up of 2", 10)
    n2.proc.send_signal(signal.SIGTERM)
    assert n2.proc.wait(PROCESS_EXIT_TIMEOUT_S) == 0
    assert "leaving" in n2.log() and "Traceback" not in n2.log()
    assert n1.wait_log("member n2 leaving -> left", 5), n1.log()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["node"], {}, "a node id is required"),
        (["node", "--id", "a", "--bind", "nohost"], {}, "invalid address 'nohost'"),
        (["node", "--id", "a", "--bind", "127.0.0.1:99999"], {}, "port must be"),
        (["node", "--id", "has space"], {}, "node id must be"),
        (["node", "--id", "a", "--seed", "x:y"], {}, "invalid address 'x:y'"),
        (["node", "--id", "a", "--frobnicate"], {}, "No such option"),
        (["node", "--id", "a", "--set", "heartbeat_interval_s"], {}, "KEY=VALUE"),
        (["node", "--id", "a", "--set", "nope=1"], {}, "unknown setting 'nope'"),
        (["node", "--id", "a"], {"ZCLUSTER_HEARTBEAT_INTERVAL_S": "fast"}, "must be a number"),
        (["node", "--id", "a"], {"ZCLUSTER_PROBE_TIMEOUT_S": "-1"}, "must be positive"),
        (["node", "--id", "a", "--config", "/nonexistent.toml"], {}, "config file not found"),
        (["pub", "t", "m"], {}, "needs --seed"),
        (["pub", "t", "{", "--json", "--seed", "127.0.0.1:9"], {}, "not valid JSON"),
        (["bogus"], {}, "No such command"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = zcluster(*args, env=env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zcluster: error:") and message in lines[0], lines[0]


def test_bad_config_files_are_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("id = \n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('id = "a"\ncolour = "blue"\n')
    tuning = tmp_path / "tuning.toml"
    tuning.write_text('id = "a"\n[tuning]\nheartbeat_interval_s = "soon"\n')
    for path, message in (
        (broken, "not valid TOML"),
        (unknown, "colour"),
        (tuning, "heartbeat_interval_s"),
    ):
        result = zcluster("node", "--config", str(path))
        assert result.returncode == 2
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_port_in_use_is_a_clean_error(spawn) -> None:  # type: ignore[no-untyped-def]
    port = free_port_pair()
    n1 = spawn("n1", "--id", "n1", "--bind", f"127.0.0.1:{port}")
    assert n1.wait_log("listening on", 10)
    result = zcluster("node", "--id", "n2", "--bind", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot bind the ROUTER socket to 127.0.0.1:{port} " in result.stderr
    assert "Traceback" not in result.stderr
    # the PUB's port taken, the ROUTER's free: the error names the PUB and its port
    result = zcluster("node", "--id", "n3", "--bind", f"127.0.0.1:{port - 1}")
    if "cannot bind the ROUTER" not in result.stderr:  # else port - 1 is taken too
        assert result.returncode == 1
        assert f"cannot bind the PUB socket to 127.0.0.1:{port} " in result.stderr


def test_settings_precedence_flags_over_file_over_env(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "node.toml"
    port = free_port_pair()
    config.write_text(f'id = "from-file"\nbind = "127.0.0.1:{port}"\n')
    env = {"ZCLUSTER_ID": "from-env", "ZCLUSTER_BIND": "127.0.0.1:1"}
    from_file = spawn("file", "--config", str(config), env=env)
    assert from_file.wait_log(f"node from-file listening on 127.0.0.1:{port}", 10), from_file.log()
    from_file.stop()
    from_flag = spawn("flag", "--config", str(config), "--id", "from-flag", env=env)
    assert from_flag.wait_log("node from-flag listening on", 10), from_flag.log()


def test_pub_and_sub_commands(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port_pair()
    seed = f"127.0.0.1:{port}"
    n1 = spawn("n1", "--id", "n1", "--bind", seed)
    assert n1.wait_log("listening on", 10)
    sub_err = (tmp_path / "sub.err").open("w+")
    sub = subprocess.Popen(
        [sys.executable, "-m", "zcluster", "sub", "greetings", "--seed", seed, "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=sub_err,
        text=True,
    )
    try:
        assert wait_until(
            lambda: "subscribed to 'greetings'" in (tmp_path / "sub.err").read_text(), 10
        )
        result = zcluster("pub", "greetings", "hello", "--seed", seed, "--count", "2")
        assert result.returncode == 0, result.stderr
        assert "published 2 message(s) on 'greetings' to 1 subscriber(s)" in result.stdout
        out, _ = sub.communicate(timeout=PROCESS_EXIT_TIMEOUT_S)
        lines = out.strip().splitlines()
        assert len(lines) == 2 and all(line.endswith("] hello") for line in lines), out
        assert sub.returncode == 0
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
        sub_err.close()


def test_demo_runs_a_local_fan_out() -> None:
    result = zcluster("demo", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo complete: every subscriber got every message" in result.stdout
    for i in (1, 2, 3):
        assert f"demo-subscriber-{i}: 1000/1000 messages, in order" in result.stdout


def test_unknown_zcluster_variables_are_reported_not_fatal(spawn) -> None:  # type: ignore[no-untyped-def]
    node = spawn(
        "n1", "--id", "n1", env={"ZCLUSTER_HEARTBEAT_S": "1", "ZCLUSTER_LOG_LEVEL": "debug"}
    )
    assert node.wait_log("listening on", 10), node.log()
    assert "ignoring ZCLUSTER_HEARTBEAT_S: no such setting" in node.log()
    assert node.proc.poll() is None


def test_bin_launcher_runs_from_a_checkout() -> None:
    launcher = Path(__file__).resolve().parents[2] / "bin" / "zcluster"
    result = subprocess.run(
        [sys.executable, str(launcher), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("zcluster, version ")


def test_members_prints_the_view_as_a_table_and_as_json(spawn) -> None:  # type: ignore[no-untyped-def]
    seed = f"127.0.0.1:{free_port_pair()}"
    n1 = spawn("n1", "--id", "n1", "--bind", seed)
    n2_address = f"127.0.0.1:{free_port_pair()}"
    n2 = spawn("n2", "--id", "n2", "--bind", n2_address, "--seed", seed, "--tag", "role=worker")
    assert n2.wait_log("view: 2 up of 2", 10), n2.log()
    table = zcluster("members", "--seed", seed)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NODE", "STATUS", "ADDRESS", "PUB", "INCARNATION", "TAGS"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["n1", "up", seed],
        ["n2", "up", n2_address],
    ]
    assert lines[2].split()[-1] == "role=worker"
    listed = zcluster("members", "--seed", seed, "--json")
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(e["node_id"], e["status"], e["tags"]) for e in entries] == [
        ("n1", "up", {}),
        ("n2", "up", {"role": "worker"}),
    ]
    workers = zcluster("members", "--seed", seed, "--tag", "role=worker", "--json")
    assert [json.loads(line)["node_id"] for line in workers.stdout.splitlines()] == ["n2"]
    assert n1.proc.poll() is None  # the short-lived clients came and left; nothing else changed
