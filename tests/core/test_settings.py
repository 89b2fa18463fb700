"""Tests of NodeConfig validation (zcluster/config.py) and of settings
resolution (zcluster/settings.py)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster.config import NodeConfig, env_settings, field_names, read_toml, tuning_from_mapping
from zcluster.errors import ConfigError
from zcluster.settings import DEFAULT_BIND, NodeSettings, parse_assignments, resolve

INT_FIELDS = [f.name for f in dataclasses.fields(NodeConfig) if isinstance(f.default, int)]
FLOAT_FIELDS = [f.name for f in dataclasses.fields(NodeConfig) if isinstance(f.default, float)]


def run(
    *,
    node_id: str | None = None,
    bind: str | None = None,
    advertise: str | None = None,
    seeds: Sequence[str] = (),
    config_file: str | Path | None = None,
    tuning: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> NodeSettings:
    return resolve(
        node_id=node_id,
        bind=bind,
        advertise=advertise,
        seeds=seeds,
        config_file=None if config_file is None else str(config_file),
        tuning=tuning,
        environ={} if environ is None else environ,
    )


@pytest.fixture
def write(tmp_path: Path) -> Any:
    def write(text: str, name: str = "node.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


# --------------------------------------------------------------- NodeConfig


def test_defaults_are_valid_and_typed() -> None:
    config = NodeConfig()
    assert INT_FIELDS and FLOAT_FIELDS
    assert set(INT_FIELDS) | set(FLOAT_FIELDS) == set(field_names())
    for name in INT_FIELDS:
        assert name.endswith(("_count", "_bytes")), name
    assert config.heartbeat_timeout_s > config.heartbeat_interval_s
    assert config.failure_detection_bound_s == pytest.approx(0.4 + 2.0 + 3 * 0.05)
    slow_probes = config.replace(heartbeat_timeout_s=3.0)
    assert slow_probes.failure_detection_bound_s == pytest.approx(3.0 + 0.4 + 0.8 + 3 * 0.05)


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5])
def test_non_positive_durations_are_rejected(name: str, value: float) -> None:
    with pytest.raises(
        ConfigError, match=f"^{name} must be positive, got {re.escape(str(value))}$"
    ):
        NodeConfig(**{name: value})


@pytest.mark.parametrize("name", INT_FIELDS)
@pytest.mark.parametrize("value", [0, -1])
def test_counts_below_one_are_rejected(name: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be at least 1, got {value}$"):
        NodeConfig(**{name: value})


@pytest.mark.parametrize("name", INT_FIELDS)
def test_counts_must_be_integers(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be an integer, got 2.5$"):
        NodeConfig(**{name: 2.5})
    with pytest.raises(ConfigError, match=f"^{name} must be an integer"):
        NodeConfig(**{name: 3.0})


@pytest.mark.parametrize(
    "name", ["heartbeat_interval_s", "indirect_probe_count", "max_header_bytes"]
)
@pytest.mark.parametrize("value", [True, False, "1", None, [1], 1j])
def test_non_numbers_and_bools_are_rejected(name: str, value: Any) -> None:
    with pytest.raises(
        ConfigError, match=f"^{name} must be a number, got {re.escape(repr(value))}$"
    ):
        NodeConfig(**{name: value})


def test_integer_durations_are_accepted() -> None:
    config = NodeConfig(heartbeat_timeout_s=2, down_member_expiry_s=10**9)
    assert config.heartbeat_timeout_s == 2
    assert config.down_member_expiry_s == 10**9


@pytest.mark.parametrize("timeout", [0.2, 0.1])
def test_heartbeat_timeout_must_exceed_interval(timeout: float) -> None:
    with pytest.raises(ConfigError, match="heartbeat_timeout_s must exceed heartbeat_interval_s"):
        NodeConfig(heartbeat_interval_s=0.2, heartbeat_timeout_s=timeout)
    NodeConfig(heartbeat_interval_s=0.2, heartbeat_timeout_s=0.2000001)


def test_tick_must_not_exceed_heartbeat_interval() -> None:
    with pytest.raises(ConfigError, match="tick_interval_s must not exceed heartbeat_interval_s"):
        NodeConfig(tick_interval_s=0.3)
    assert NodeConfig(tick_interval_s=0.2).tick_interval_s == 0.2


def test_more_confirmations_than_news_can_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="suspect_confirmations_count must be below 64"):
        NodeConfig(suspect_confirmations_count=64)
    assert NodeConfig(suspect_confirmations_count=63).suspect_confirmations_count == 63


def test_config_is_frozen() -> None:
    config = NodeConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.heartbeat_interval_s = 1.0  # type: ignore[misc]


def test_replace_returns_a_validated_copy() -> None:
    config = NodeConfig()
    changed = config.replace(indirect_probe_count=5, request_timeout_s=1.5)
    assert (changed.indirect_probe_count, changed.request_timeout_s) == (5, 1.5)
    assert config.indirect_probe_count == 3
    assert changed.heartbeat_interval_s == config.heartbeat_interval_s
    assert config.replace() == config
    with pytest.raises(ConfigError, match="must be positive"):
        config.replace(request_timeout_s=0)
    with pytest.raises(ConfigError, match="must exceed"):
        config.replace(heartbeat_timeout_s=config.heartbeat_interval_s)


def test_replace_rejects_unknown_names() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^unknown setting 'bogus'; unknown setting 'heartbeat_s' \(did you mean 'zmtp_",
    ):
        NodeConfig().replace(heartbeat_s=1.0, bogus=2, indirect_probe_count=4)
    with pytest.raises(ConfigError, match="unknown setting"):
        NodeConfig().replace(failure_detection_bound_s=1.0)  # a property, not a setting


@pytest.mark.parametrize("name", ["probe_timeout_s", "heartbeat_interval_s", "request_timeout_s"])
def test_nan_is_rejected(name: str) -> None:
    with pytest.raises(ConfigError):
        NodeConfig(**{name: math.nan})


def test_nan_from_the_command_line_is_rejected() -> None:
    with pytest.raises(ConfigError):
        run(node_id="n1", tuning=["probe_timeout_s=nan"])


# ------------------------------------------------------- config.py helpers


def test_env_settings_strips_prefix_lowercases_and_skips_empty_values() -> None:
    environ = {
        "ZCLUSTER_ID": "n1",
        "ZCLUSTER_HEARTBEAT_INTERVAL_S": "0.1",
        "ZCLUSTER_BIND": "",
        "HOME": "/x",
        "zcluster_id": "no",
    }
    assert env_settings(environ) == {"id": "n1", "heartbeat_interval_s": "0.1"}


def test_tuning_from_mapping_coerces_types() -> None:
    out = tuning_from_mapping(
        {
            "heartbeat_interval_s": "0.25",
            "indirect_probe_count": "7",
            "max_header_bytes": 2048.0,
            "probe_timeout_s": 1,
        },
        "test",
    )
    assert out == {
        "heartbeat_interval_s": 0.25,
        "indirect_probe_count": 7,
        "max_header_bytes": 2048,
        "probe_timeout_s": 1,
    }
    assert type(out["indirect_probe_count"]) is int
    assert type(out["max_header_bytes"]) is int
    assert type(out["heartbeat_interval_s"]) is float


@pytest.mark.parametrize(
    "key, raw, message",
    [
        ("indirect_probe_count", "2.5", "indirect_probe_count must be an integer, got '2.5'"),
        ("indirect_probe_count", "abc", "indirect_probe_count must be an integer, got 'abc'"),
        ("indirect_probe_count", 2.5, "indirect_probe_count must be an integer, got 2.5"),
        ("heartbeat_interval_s", "fast", "heartbeat_interval_s must be a number, got 'fast'"),
        ("heartbeat_interval_s", True, "heartbeat_interval_s must be a number, got True"),
        ("heartbeat_interval_s", [1], r"heartbeat_interval_s must be a number, got \[1\]"),
        ("heartbeat_interval_s", None, "heartbeat_interval_s must be a number, got None"),
    ],
)
def test_tuning_from_mapping_rejects_bad_values(key: str, raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tuning_from_mapping({key: raw}, "src")


def test_tuning_from_mapping_rejects_unknown_keys_naming_source_and_key() -> None:
    with pytest.raises(ConfigError, match=r"^my source: unknown setting 'nope'$"):
        tuning_from_mapping({"heartbeat_interval_s": 1.0, "nope": 1}, "my source")


def test_read_toml(write: Any) -> None:
    path = write('id = "n1"\n[tuning]\nheartbeat_interval_s = 0.1\n')
    assert read_toml(path) == {"id": "n1", "tuning": {"heartbeat_interval_s": 0.1}}


# ----------------------------------------------------------------- resolve


def test_defaults_with_only_an_id() -> None:
    result = run(node_id="n1")
    assert result == NodeSettings("n1", DEFAULT_BIND, None, (), NodeConfig())
    assert DEFAULT_BIND == "127.0.0.1:0"


def test_environment_alone() -> None:
    result = run(
        environ={
            "ZCLUSTER_ID": "env-node",
            "ZCLUSTER_BIND": "0.0.0.0:7000",
            "ZCLUSTER_ADVERTISE": "10.0.0.5:7000",
            "ZCLUSTER_SEEDS": "a:1, b:2,,[::1]:3 ,",
            "ZCLUSTER_HEARTBEAT_INTERVAL_S": "0.1",
            "ZCLUSTER_INDIRECT_PROBE_COUNT": "5",
            "UNRELATED": "x",
        }
    )
    assert result.node_id == "env-node"
    assert result.bind == "0.0.0.0:7000"
    assert result.advertise == "10.0.0.5:7000"
    assert result.seeds == ("a:1", "b:2", "[::1]:3")
    assert result.config.heartbeat_interval_s == 0.1
    assert result.config.indirect_probe_count == 5
    assert type(result.config.indirect_probe_count) is int


def test_single_seed_in_environment() -> None:
    assert run(environ={"ZCLUSTER_ID": "n", "ZCLUSTER_SEEDS": "seed-host:7000"}).seeds == (
        "seed-host:7000",
    )


def test_empty_environment_values_are_ignored() -> None:
    result = run(
        node_id="n1",
        environ={"ZCLUSTER_BIND": "", "ZCLUSTER_SEEDS": "", "ZCLUSTER_HEARTBEAT_INTERVAL_S": ""},
    )
    assert result == NodeSettings("n1", DEFAULT_BIND, None, (), NodeConfig())


ENV = {
    "ZCLUSTER_ID": "from-env",
    "ZCLUSTER_BIND": "127.0.0.1:1001",
    "ZCLUSTER_ADVERTISE": "10.0.0.1:1001",
    "ZCLUSTER_SEEDS": "env-seed:1001",
    "ZCLUSTER_HEARTBEAT_INTERVAL_S": "0.11",
}

FILE = """
id = "from-file"
bind = "127.0.0.1:2002"
advertise = "10.0.0.2:2002"
seeds = ["file-seed:2002", "file-seed-2:2002"]

[tuning]
heartbeat_interval_s = 0.12
"""


def test_file_overrides_environment(write: Any) -> None:
    result = run(config_file=write(FILE), environ=ENV)
    assert result.node_id == "from-file"
    assert result.bind == "127.0.0.1:2002"
    assert result.advertise == "10.0.0.2:2002"
    assert result.seeds == ("file-seed:2002", "file-seed-2:2002")
    assert result.config.heartbeat_interval_s == 0.12


def test_flags_override_file_and_environment(write: Any) -> None:
    result = run(
        node_id="from-flag",
        bind="127.0.0.1:3003",
        advertise="10.0.0.3:3003",
        seeds=["flag-seed:3003"],
        config_file=write(FILE),
        tuning=["heartbeat_interval_s=0.13"],
        environ=ENV,
    )
    assert result.node_id == "from-flag"
    assert result.bind == "127.0.0.1:3003"
    assert result.advertise == "10.0.0.3:3003"
    assert result.seeds == ("flag-seed:3003",)
    assert result.config.heartbeat_interval_s == 0.13


def test_flags_override_environment_without_file() -> None:
    result = run(
        node_id="from-flag",
        seeds=["flag-seed:1"],
        tuning=["heartbeat_interval_s=0.13"],
        environ=ENV,
    )
    assert (result.node_id, result.bind, result.seeds) == (
        "from-flag",
        "127.0.0.1:1001",
        ("flag-seed:1",),
    )
    assert result.config.heartbeat_interval_s == 0.13


def test_each_layer_only_overrides_what_it_sets(write: Any) -> None:
    path = write('bind = "127.0.0.1:2002"\n[tuning]\nprobe_timeout_s = 0.5\n')
    result = run(
        node_id="flag-id",
        config_file=path,
        tuning=["indirect_probe_count=9"],
        environ={
            "ZCLUSTER_ID": "env-id",
            "ZCLUSTER_SEEDS": "env-seed:1",
            "ZCLUSTER_PROBE_TIMEOUT_S": "0.7",
            "ZCLUSTER_SUSPECT_TIMEOUT_S": "2.5",
        },
    )
    assert result.node_id == "flag-id"  # flag
    assert result.bind == "127.0.0.1:2002"  # file
    assert result.advertise is None  # default
    assert result.seeds == ("env-seed:1",)  # environment
    assert result.config.probe_timeout_s == 0.5  # file beats environment
    assert result.config.suspect_timeout_s == 2.5  # environment
    assert result.config.indirect_probe_count == 9  # flag
    assert result.config.request_timeout_s == NodeConfig().request_timeout_s  # default


def test_empty_seed_flags_do_not_override(write: Any) -> None:
    assert run(config_file=write(FILE), seeds=[]).seeds == ("file-seed:2002", "file-seed-2:2002")


def test_seeds_as_comma_separated_string_in_file(write: Any) -> None:
    result = run(config_file=write('id = "n1"\nseeds = "a:1, b:2"\n'))
    assert result.seeds == ("a:1", "b:2")


def test_later_set_wins_and_set_overrides_file(write: Any) -> None:
    path = write('id = "n1"\n[tuning]\nindirect_probe_count = 2\n')
    result = run(config_file=path, tuning=["indirect_probe_count=4", "indirect_probe_count=6"])
    assert result.config.indirect_probe_count == 6


def test_bind_and_advertise_accept_port_zero_but_seeds_do_not() -> None:
    result = run(node_id="n1", bind="0.0.0.0:0", advertise="host:0")
    assert (result.bind, result.advertise) == ("0.0.0.0:0", "host:0")
    with pytest.raises(ConfigError, match=r"port must be 1\.\.65535"):
        run(node_id="n1", seeds=["host:0"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bind": "nohost"}, "invalid address 'nohost'"),
        ({"advertise": "::1:80"}, "IPv6 hosts need brackets"),
        ({"seeds": ["a:1", "b"]}, "invalid address 'b'"),
        ({"environ": {"ZCLUSTER_SEEDS": "a:1,b:99999"}}, "invalid address 'b:99999'"),
        ({"environ": {"ZCLUSTER_BIND": "h st:1"}}, "bad host"),
    ],
)
def test_invalid_addresses_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(node_id="n1", **kwargs)


def test_missing_id() -> None:
    with pytest.raises(ConfigError, match=r"^a node id is required .*ZCLUSTER_ID"):
        run()
    with pytest.raises(ConfigError, match="a node id is required"):
        run(environ={"ZCLUSTER_ID": ""})


def test_missing_id_in_file_too(write: Any) -> None:
    with pytest.raises(ConfigError, match="a node id is required"):
        run(config_file=write('bind = "127.0.0.1:1"\n'))
    with pytest.raises(ConfigError, match="a node id is required"):
        run(config_file=write('id = ""\n'))


@pytest.mark.parametrize("node_id", ["a b", "x" * 256, "tab\t"])
def test_invalid_id_is_a_config_error(node_id: str) -> None:
    with pytest.raises(ConfigError, match="node id must be"):
        run(node_id=node_id)
    with pytest.raises(ConfigError, match="node id must be"):
        run(environ={"ZCLUSTER_ID": node_id})


# ------------------------------------------------------------- file errors


def test_unknown_top_level_key_in_file(write: Any) -> None:
    path = write('id = "n1"\nnodeid = "n2"\nport = 1\n')
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}: unknown key 'nodeid'; unknown key 'port'$",
    ):
        run(config_file=path)


def test_unknown_tuning_key_in_file(write: Any) -> None:
    path = write('id = "n1"\n[tuning]\nheartbeat_s = 1.0\n')
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))} \[tuning\]: unknown setting 'heartbeat_s' \(did you",
    ):
        run(config_file=path)


def test_tuning_setting_at_top_level_is_unknown(write: Any) -> None:
    path = write('id = "n1"\nheartbeat_interval_s = 0.1\n')
    with pytest.raises(
        ConfigError, match="'heartbeat_interval_s' is a tuning setting: put it under \\[tuning\\]"
    ):
        run(config_file=path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("id = 5\n", "id must be a string"),
        ('id = "n1"\nbind = 7000\n', "bind must be a string"),
        ('id = "n1"\nadvertise = ["a:1"]\n', "advertise must be a string"),
        ('id = "n1"\ntuning = 5\n', r"\[tuning\] must be a table"),
        ('id = "n1"\nseeds = [1, 2]\n', "seeds must be a list of HOST:PORT strings"),
        ('id = "n1"\nseeds = 5\n', "seeds must be a list of HOST:PORT strings"),
        ('id = "n1"\nseeds = ["nohost"]\n', "invalid address 'nohost'"),
        (
            'id = "n1"\n[tuning]\nheartbeat_interval_s = true\n',
            "heartbeat_interval_s must be a number, got True",
        ),
        (
            'id = "n1"\n[tuning]\nheartbeat_interval_s = "fast"\n',
            "heartbeat_interval_s must be a number",
        ),
        (
            'id = "n1"\n[tuning]\nindirect_probe_count = 2.5\n',
            "indirect_probe_count must be an integer",
        ),
        (
            'id = "n1"\n[tuning]\nheartbeat_interval_s = 0\n',
            "heartbeat_interval_s must be positive",
        ),
        ('id = "n1"\n[tuning]\nheartbeat_timeout_s = 0.1\n', "heartbeat_timeout_s must exceed"),
    ],
)
def test_bad_values_in_file(write: Any, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run(config_file=write(text))


def test_whole_number_float_in_file_becomes_int(write: Any) -> None:
    result = run(
        config_file=write('id = "n1"\n[tuning]\nindirect_probe_count = 4.0\nprobe_timeout_s = 1\n')
    )
    assert result.config.indirect_probe_count == 4
    assert type(result.config.indirect_probe_count) is int
    assert result.config.probe_timeout_s == 1


def test_invalid_toml_names_the_file(write: Any) -> None:
    path = write('id = "n1\n[tuning\n')
    with pytest.raises(
        ConfigError, match=rf"^config file {re.escape(str(path))} is not valid TOML: "
    ):
        run(config_file=path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=rf"^config file not found: {re.escape(str(path))}$"):
        run(node_id="n1", config_file=path)


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=rf"^cannot read config file {re.escape(str(tmp_path))}: "
    ):
        run(node_id="n1", config_file=tmp_path)  # a directory


def test_empty_file_is_fine(write: Any) -> None:
    assert run(node_id="n1", config_file=write("")) == NodeSettings(
        "n1", DEFAULT_BIND, None, (), NodeConfig()
    )


def test_empty_config_file_name_means_no_file() -> None:
    assert (
        resolve(
            node_id="n1", bind=None, advertise=None, seeds=(), config_file="", tuning=(), environ={}
        ).node_id
        == "n1"
    )


# ------------------------------------------------------ environment errors


def test_unknown_environment_variables_are_reported_not_fatal() -> None:
    environ = {"ZCLUSTER_HEARTBEAT_S": "1", "ZCLUSTER_LOG_LEVEL": "debug"}
    settings = run(node_id="n1", environ=environ)
    assert settings.ignored_environment == ("ZCLUSTER_HEARTBEAT_S",)
    assert settings.log_level == "debug"
    assert settings.config == NodeConfig()


def test_bad_log_level_is_rejected() -> None:
    with pytest.raises(ConfigError, match="log level must be one of"):
        run(node_id="n1", environ={"ZCLUSTER_LOG_LEVEL": "loud"})


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "ZCLUSTER_INDIRECT_PROBE_COUNT",
            "many",
            "indirect_probe_count must be an integer, got 'many'",
        ),
        (
            "ZCLUSTER_INDIRECT_PROBE_COUNT",
            "2.0",
            "indirect_probe_count must be an integer, got '2.0'",
        ),
        (
            "ZCLUSTER_HEARTBEAT_INTERVAL_S",
            "soon",
            "heartbeat_interval_s must be a number, got 'soon'",
        ),
        ("ZCLUSTER_HEARTBEAT_INTERVAL_S", "-1", "heartbeat_interval_s must be positive"),
    ],
)
def test_bad_environment_tuning_values(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(node_id="n1", environ={name: value})


# ------------------------------------------------------ parse_assignments


def test_parse_assignments() -> None:
    out = parse_assignments(
        ["heartbeat_interval_s=0.5", " indirect_probe_count = 7 ", "max_header_bytes=4096"]
    )
    assert out == {"heartbeat_interval_s": 0.5, "indirect_probe_count": 7, "max_header_bytes": 4096}
    assert type(out["indirect_probe_count"]) is int
    assert type(out["heartbeat_interval_s"]) is float
    assert parse_assignments([]) == {}
    assert parse_assignments(["indirect_probe_count=2", "indirect_probe_count=3"]) == {
        "indirect_probe_count": 3
    }


@pytest.mark.parametrize("pair", ["novalue", "=5", "", "heartbeat_interval_s"])
def test_parse_assignments_malformed_pairs(pair: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^--set expects KEY=VALUE, got {re.escape(repr(pair))}$"
    ):
        parse_assignments([pair])


@pytest.mark.parametrize(
    "pair, message",
    [
        ("bogus=1", "--set: unknown setting 'bogus'"),
        ("heartbeat_interval_s=", "heartbeat_interval_s must be a number, got ''"),
        ("heartbeat_interval_s=1=2", "heartbeat_interval_s must be a number, got '1=2'"),
        ("indirect_probe_count=1.5", "indirect_probe_count must be an integer, got '1.5'"),
        (" =5", "--set"),
    ],
)
def test_parse_assignments_bad_values(pair: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_assignments([pair])


def test_bad_set_fails_resolve() -> None:
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        run(node_id="n1", tuning=["oops"])
    with pytest.raises(ConfigError, match="heartbeat_timeout_s must exceed heartbeat_interval_s"):
        run(node_id="n1", tuning=["heartbeat_interval_s=5"])


# ---------------------------------------------------------------- property


@settings(max_examples=200, deadline=None, database=None)
@given(
    env=st.one_of(st.none(), st.integers(1, 50)),
    file=st.one_of(st.none(), st.integers(1, 50)),
    flag=st.one_of(st.none(), st.integers(1, 50)),
)
def test_property_tuning_precedence(
    tmp_path_factory: Any, env: int | None, file: int | None, flag: int | None
) -> None:
    environ = {"ZCLUSTER_ID": "n1"}
    if env is not None:
        environ["ZCLUSTER_RECEIVE_BATCH_COUNT"] = str(env)
    config_file = None
    if file is not None:
        config_file = tmp_path_factory.mktemp("cfg") / "node.toml"
        config_file.write_text(f"[tuning]\nreceive_batch_count = {file}\n")
    tuning = [f"receive_batch_count={flag}"] if flag is not None else []
    result = run(environ=environ, config_file=config_file, tuning=tuning)
    expected = next(v for v in (flag, file, env, NodeConfig().receive_batch_count) if v is not None)
    assert result.config.receive_batch_count == expected
