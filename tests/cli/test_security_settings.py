"""Security settings from flags, a config file's ``[security]`` table and
``ZCLUSTER_SECURITY*`` variables (zcluster/settings.py): no processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zcluster.errors import ConfigError
from zcluster.security.config import SecurityConfig, SecurityMode
from zcluster.security.keys import load_curve_key_pair, write_curve_key_pair
from zcluster.settings import (
    SECURITY_ENVIRONMENT,
    SECURITY_FLAGS,
    SECURITY_KEYS,
    NodeSettings,
    environment_names,
    resolve,
)

SEED = "10.0.0.4:7000"
OTHER_SEED = "10.0.0.5:7000"


def settings(
    *,
    flags: dict[str, Any] | None = None,
    config: Path | None = None,
    environ: dict[str, str] | None = None,
) -> NodeSettings:
    return resolve(
        node_id="n1",
        bind=None,
        advertise=None,
        seeds=(),
        config_file=None if config is None else str(config),
        tuning=(),
        environ=environ or {},
        security=flags,
    )


def toml_value(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    return '"' + str(value).replace("\\", "\\\\") + '"'


def write_config(path: Path, table: dict[str, object], top: str = 'id = "n1"\n') -> Path:
    lines = [top, "[security]"] + [f"{key} = {toml_value(v)}" for key, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    for name in ("n0", "n1"):
        write_curve_key_pair(directory, name)
    return directory


def public(keys: Path, name: str) -> str:
    return load_curve_key_pair(keys / f"{name}.key").public.decode()


def three_ways(tmp_path: Path, keys: Path, case: str) -> list[SecurityConfig]:
    """The same settings as flags, as a [security] table (relative paths, from the
    file's directory), and as variables: the SecurityConfig each gives."""
    k = keys
    if case == "curve-mutual":
        # every list with two items; a seed's key as z85 and as its NAME.key file
        fields: dict[str, Any] = {
            "mode": "curve-mutual",
            "key": "n1.key_secret",
            "known_hosts": "known_hosts",
            "authorized_keys": "authorized",
            "ca": ["ca.ca_public", "old.ca_public"],
            "certificate": "n1.cert",
            "authorized_nodes": ["n0", "n2"],
            "cluster": "prod",
        }
        seeds = {SEED: public(k, "n0"), OTHER_SEED: "n0.key"}
    else:
        fields = {
            "mode": "curve+jwt",
            "key": "n1.key_secret",
            "jwt_key": "hs256.secret",
            "jwt_algorithm": "HS256",
            "jwt_kid": "2026-12",
            "jwt_verify_keys": ["hs256.secret", "old.secret"],
            "cluster": "prod",
        }
        seeds = {SEED: public(k, "n0")}
    lists = {"ca", "jwt_verify_keys", "authorized_nodes"}
    paths = {"key", "known_hosts", "authorized_keys", "certificate", "jwt_key", "ca"}
    paths |= {"jwt_verify_keys"}

    def absolute(name: str, value: Any) -> Any:
        if name not in paths:
            return value
        return [str(k / v) for v in value] if isinstance(value, list) else str(k / value)

    flags: dict[str, Any] = {
        name: tuple(absolute(name, v)) if name in lists else absolute(name, v)
        for name, v in fields.items()
    }
    seed_items = [f"{a}={v if a == SEED else k / v}" for a, v in seeds.items()]
    flags["seed_keys"] = tuple(seed_items)
    environ = {
        SECURITY_ENVIRONMENT[name]: ",".join(v) if isinstance(v, tuple) else v
        for name, v in flags.items()
    }
    # the file sits in keys/, its paths relative to it
    config = write_config(tmp_path / "keys" / "node.toml", {**fields, "seed_keys": seeds})
    return [
        settings(flags=flags).security,
        settings(config=config).security,
        settings(environ=environ).security,
    ]


@pytest.mark.parametrize("case", ["curve-mutual", "curve+jwt"])
def test_flags_file_and_environment_give_the_same_config(
    tmp_path: Path, keys: Path, case: str
) -> None:
    from_flags, from_file, from_env = three_ways(tmp_path, keys, case)
    assert from_flags == from_file == from_env
    assert from_flags.mode is SecurityMode(case)
    assert from_flags.key == keys / "n1.key_secret"
    assert from_flags.cluster == "prod"
    assert dict(from_flags.seed_keys)[SEED] == public(keys, "n0")
    if case == "curve-mutual":
        assert from_flags.ca == (keys / "ca.ca_public", keys / "old.ca_public")
        assert from_flags.authorized_nodes == frozenset({"n0", "n2"})
        assert dict(from_flags.seed_keys)[OTHER_SEED] == public(keys, "n0")  # from the file
    else:
        assert from_flags.jwt_verify_keys == (keys / "hs256.secret", keys / "old.secret")
        assert from_flags.jwt_kid == "2026-12"


def test_flags_win_over_the_file_which_wins_over_the_environment(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node.toml", {"cluster": "from-file", "jwt_kid": "file"})
    environ = {
        "ZCLUSTER_SECURITY": "jwt",
        "ZCLUSTER_SECURITY_JWT_KEY": "/env/secret",
        "ZCLUSTER_SECURITY_CLUSTER": "from-env",
        "ZCLUSTER_SECURITY_JWT_KID": "env",
    }
    flags = {"jwt_kid": "flag", "authorized_nodes": ()}  # empty: not given
    security = settings(flags=flags, config=config, environ=environ).security
    assert (security.mode, security.jwt_key) == (SecurityMode.JWT, Path("/env/secret"))
    assert (security.cluster, security.jwt_kid) == ("from-file", "flag")
    assert security.authorized_nodes is None
    assert settings().security == SecurityConfig()  # nothing given: mode none


def test_every_field_has_a_flag_and_a_variable() -> None:
    assert set(SECURITY_FLAGS) == set(SECURITY_KEYS) == set(SECURITY_ENVIRONMENT)
    assert SECURITY_ENVIRONMENT["mode"] == "ZCLUSTER_SECURITY"
    assert SECURITY_ENVIRONMENT["known_hosts"] == "ZCLUSTER_SECURITY_KNOWN_HOSTS"
    assert set(SECURITY_ENVIRONMENT.values()) <= set(environment_names())


def test_security_variables_are_not_reported_as_unknown() -> None:
    environ = {"ZCLUSTER_SECURITY": "none", "ZCLUSTER_SECURITY_CLUSTER": "c"}
    environ["ZCLUSTER_SECURITY_KEYS"] = "x"
    assert settings(environ=environ).ignored_environment == ("ZCLUSTER_SECURITY_KEYS",)


@pytest.mark.parametrize(
    ("table", "top", "message"),
    [
        ({"mod": "curve"}, "", "[security]: unknown security setting 'mod' (did you mean 'mode'?)"),
        ({"jwt_keys": "s"}, "", "unknown security setting 'jwt_keys' (did you mean 'jwt_key'"),
        ({}, 'mode = "curve"\n', "'mode' is a security setting: put it under [security]"),
        ({"mode": "curvy"}, "", "[security] mode: unknown security mode 'curvy'"),
        ({"mode": "curve", "key": 7}, "", "[security] key must be a path"),
        ({"mode": "jwt", "jwt_algorithm": "none"}, "", "unknown JWT algorithm 'none'"),
        ({"mode": "curve", "seed_keys": ["h:1"]}, "", "expected HOST:PORT=KEY, got 'h:1'"),
        ({"mode": "curve", "seed_keys": {"nohost": "k"}}, "", "invalid address 'nohost'"),
        ({"ca": 3}, "", "[security] ca must be a list of strings"),
        ({"mode": "curve", "ca": ["ca.ca_public"]}, "", "are for mode curve-mutual"),
    ],
)
def test_a_bad_security_table_is_refused_saying_why(
    tmp_path: Path, table: dict[str, object], top: str, message: str
) -> None:
    config = write_config(tmp_path / "node.toml", table, top=f'id = "n1"\n{top}')
    with pytest.raises(ConfigError) as caught:
        settings(config=config)
    assert message in str(caught.value)


def test_a_bad_combination_says_which_settings_came_from_elsewhere(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node.toml", {"jwt_key": "secret"})
    with pytest.raises(ConfigError) as caught:
        settings(flags={"mode": "curve"}, config=config)
    assert str(caught.value) == (
        "security mode curve uses no JWT keys or tokens "
        f"(settings not given as flags: {config} [security] jwt_key)"
    )
    with pytest.raises(ConfigError, match="needs this node's key file"):
        settings(flags={"mode": "curve-mutual", "authorized_keys": "."})


def test_one_string_where_a_list_of_paths_goes_is_one_path(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node.toml", {"mode": "jwt", "jwt_verify_keys": "one"})
    environ = {"ZCLUSTER_SECURITY_JWT_KEY": "/k"}
    security = settings(config=config, environ=environ).security  # one string: one path
    assert security.jwt_verify_keys == (tmp_path / "one",)
