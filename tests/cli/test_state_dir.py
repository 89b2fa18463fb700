"""``zcluster node --state-dir``: a second process on the same directory is refused in
one line; the setting comes from the flag, the config file or ZCLUSTER_STATE_DIR; a
bad sync policy is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.commands import NodeProcess, zcluster
from zcluster.errors import ConfigError
from zcluster.settings import resolve


def test_a_second_node_on_the_same_state_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = NodeProcess(["--id", "n1", "--state-dir", str(state)], tmp_path / "n1.log")
    try:
        assert first.wait_log("incarnation", 20), first.log()
        second = zcluster("node", "--id", "n1", "--state-dir", str(state), timeout=30)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "is in use by another process" in lines[0], second.stderr
        assert first.proc.poll() is None, "the first node keeps running"
    finally:
        first.stop()
    # the lock goes with the process, however it ended (killed here)
    third = NodeProcess(["--id", "n1", "--state-dir", str(state)], tmp_path / "n3.log")
    try:
        assert third.wait_log("incarnation", 20), third.log()
    finally:
        third.stop()


def resolved(tmp_path: Path, **kwargs: object) -> tuple[str | None, str]:
    env = kwargs.pop("environ", {})
    settings = resolve(
        node_id="n1",
        bind=None,
        advertise=None,
        seeds=(),
        config_file=kwargs.pop("config_file", None),  # type: ignore[arg-type]
        tuning=(),
        environ=env,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    return settings.state_dir, settings.state_sync


def test_state_settings_from_flags_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('state_dir = "/from/file"\nstate_sync = "full"\n')
    environ = {"ZCLUSTER_STATE_DIR": "/from/env", "ZCLUSTER_STATE_SYNC": "off"}
    assert resolved(tmp_path) == (None, "normal")
    assert resolved(tmp_path, environ=environ) == ("/from/env", "off")
    assert resolved(tmp_path, environ=environ, config_file=str(config)) == ("/from/file", "full")
    assert resolved(
        tmp_path, environ=environ, config_file=str(config), state_dir="/flag", state_sync="normal"
    ) == ("/flag", "normal")
    with pytest.raises(ConfigError, match="state sync must be one of normal, full, off"):
        resolved(tmp_path, environ={"ZCLUSTER_STATE_SYNC": "sometimes"})


def test_a_bad_sync_flag_is_refused_by_the_command_line() -> None:
    result = zcluster("node", "--id", "n1", "--state-sync", "sometimes")
    assert result.returncode == 2 and "sometimes" in result.stderr
