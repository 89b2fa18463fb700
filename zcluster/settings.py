"""Node settings from command-line flags, a TOML file and ``ZCLUSTER_*`` variables.

Precedence, highest first: flags, the config file, the environment,
built-in defaults. Every value is validated here so that a bad one is
reported as one clear line before anything starts.

Config file::

    id = "n1"
    bind = "0.0.0.0:7000"
    advertise = "10.0.0.5:7000"
    seeds = ["10.0.0.4:7000", "zcluster-headless:7000"]

    [tuning]                  # any NodeConfig field
    heartbeat_interval_s = 0.2

    [security]                # any SecurityConfig field (docs/security.md)
    mode = "curve-mutual"
    key = "keys/n1.key_secret"         # paths are relative to this file's directory
    authorized_keys = "keys/authorized"
    seed_keys = {"10.0.0.4:7000" = "keys/n0.key"}   # a z85 public key, or a NAME.key file
    # also: known_hosts, ca = [...], certificate, jwt_key, jwt_token, jwt_algorithm,
    # jwt_kid, jwt_verify_keys = [...], authorized_nodes = [...], cluster

Environment: ``ZCLUSTER_ID``, ``ZCLUSTER_BIND``, ``ZCLUSTER_ADVERTISE``,
``ZCLUSTER_SEEDS`` (comma-separated), ``ZCLUSTER_LOG_LEVEL``, and
``ZCLUSTER_<FIELD>`` for tuning, e.g. ``ZCLUSTER_HEARTBEAT_INTERVAL_S=0.5``.
Security: ``ZCLUSTER_SECURITY`` (the mode) and ``ZCLUSTER_SECURITY_<FIELD>`` for the
other fields of ``[security]``, e.g. ``ZCLUSTER_SECURITY_KEY``,
``ZCLUSTER_SECURITY_KNOWN_HOSTS``; the list fields (``CA``, ``JWT_VERIFY_KEYS``,
``AUTHORIZED_NODES``) comma-separated, and ``ZCLUSTER_SECURITY_SEED_KEYS`` as
``HOST:PORT=KEY,...``; paths relative to the working directory. The short-lived
commands (``pub``, ``sub``, ``members``, ...) read these too, below their flags.
Other ``ZCLUSTER_*`` variables are reported and ignored.

Each security setting is taken from the highest source that gives it; the result is
checked as a whole (:class:`~zcluster.security.config.SecurityConfig`), so that a
mode set by a flag and a key left in the environment is reported, not half-applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zcluster.address import parse_address
from zcluster.config import (
    ENV_PREFIX,
    NodeConfig,
    env_settings,
    field_names,
    read_toml,
    tuning_from_mapping,
    unknown_name,
)
from zcluster.errors import ConfigError, WireError
from zcluster.runtime.store import SYNC_POLICIES
from zcluster.security.config import SecurityConfig, SecurityMode
from zcluster.security.keys import check_curve_key, load_curve_key_pair
from zcluster.security.tokens import SUPPORTED_ALGORITHMS
from zcluster.wire import check_name

_TOP_LEVEL = frozenset(
    {
        "id",
        "bind",
        "advertise",
        "seeds",
        "log_level",
        "state_dir",
        "state_sync",
        "tuning",
        "security",
    }
)
_PLAIN = ("id", "bind", "advertise", "log_level", "state_dir", "state_sync")
DEFAULT_BIND = "127.0.0.1:0"
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL = "info"


@dataclasses.dataclass(frozen=True, slots=True)
class NodeSettings:
    node_id: str
    bind: str
    advertise: str | None
    seeds: tuple[str, ...]
    config: NodeConfig
    log_level: str = DEFAULT_LOG_LEVEL
    #: ZCLUSTER_* variables that name no setting (reported, not fatal: other tools may set them)
    ignored_environment: tuple[str, ...] = ()
    #: how the node secures its connections (flags, [security], ZCLUSTER_SECURITY*)
    security: SecurityConfig = dataclasses.field(default_factory=SecurityConfig)
    #: where what must survive a crash is kept (None: in memory), and its fsync policy
    state_dir: str | None = None
    state_sync: str = "normal"


def _seeds(value: object, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",") if s.strip()]
    elif isinstance(value, list | tuple) and all(isinstance(s, str) for s in value):
        items = list(value)
    else:
        raise ConfigError(f"{source}: seeds must be a list of HOST:PORT strings")
    for seed in items:
        parse_address(seed)
    return tuple(items)


def _from_file(data: Mapping[str, Any], path: str) -> tuple[dict[str, Any], dict[str, float | int]]:
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        tuning = set(field_names())
        names = "; ".join(
            f"{key!r} is a tuning setting: put it under [tuning]"
            if key in tuning
            else f"{key!r} is a security setting: put it under [security]"
            if key in SECURITY_KEYS
            else unknown_name(key, _TOP_LEVEL, "key")
            for key in unknown
        )
        raise ConfigError(f"{path}: {names}")
    tuning_raw = data.get("tuning", {})
    if not isinstance(tuning_raw, dict):
        raise ConfigError(f"{path}: [tuning] must be a table")
    plain = {k: v for k, v in data.items() if k not in ("tuning", "security")}
    for key in _PLAIN:
        if key in plain and not isinstance(plain[key], str):
            raise ConfigError(f"{path}: {key} must be a string")
    if "seeds" in plain:
        plain["seeds"] = _seeds(plain["seeds"], path)
    return plain, tuning_from_mapping(tuning_raw, f"{path} [tuning]")


def environment_names() -> tuple[str, ...]:
    """The ``ZCLUSTER_*`` variables that name a setting."""
    plain = (*_PLAIN, "seeds", *field_names())
    return (*(f"{ENV_PREFIX}{name.upper()}" for name in plain), *SECURITY_ENVIRONMENT.values())


def _from_env(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, float | int], tuple[str, ...]]:
    values = env_settings(environ)
    plain: dict[str, Any] = {k: values.pop(k) for k in _PLAIN if k in values}
    if "seeds" in values:
        plain["seeds"] = _seeds(values.pop("seeds"), "ZCLUSTER_SEEDS")
    known = set(field_names())
    security = {name[len(ENV_PREFIX) :].lower() for name in SECURITY_ENVIRONMENT.values()}
    ignored = tuple(
        sorted(f"ZCLUSTER_{k.upper()}" for k in values if k not in known and k not in security)
    )
    tuning = {k: v for k, v in values.items() if k in known}
    return plain, tuning_from_mapping(tuning, "environment (ZCLUSTER_*)"), ignored


def parse_assignments(pairs: Sequence[str]) -> dict[str, float | int]:
    """``KEY=VALUE`` tuning overrides from the command line."""
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        raw[key.strip()] = value.strip()
    return tuning_from_mapping(raw, "--set")


def resolve(
    *,
    node_id: str | None,
    bind: str | None,
    advertise: str | None,
    seeds: Sequence[str],
    config_file: str | None,
    tuning: Sequence[str],
    environ: Mapping[str, str],
    log_level: str | None = None,
    security: Mapping[str, Any] | None = None,
    state_dir: str | None = None,
    state_sync: str | None = None,
) -> NodeSettings:
    """Merge flags, file, environment and defaults into validated settings.

    ``security`` holds the security flags by SecurityConfig field name (None or empty:
    not given), as :func:`resolve_security` takes them."""
    env_plain, env_tuning, ignored = _from_env(environ)
    file_plain: dict[str, Any] = {}
    file_tuning: dict[str, float | int] = {}
    file_security: object = None
    if config_file:
        data = read_toml(config_file)
        file_plain, file_tuning = _from_file(data, config_file)
        file_security = data.get("security")
    flags: dict[str, Any] = {
        "id": node_id,
        "bind": bind,
        "advertise": advertise,
        "log_level": log_level,
        "state_dir": state_dir,
        "state_sync": state_sync,
    }
    if seeds:
        flags["seeds"] = _seeds(list(seeds), "--seed")
    merged: dict[str, Any] = {}
    for layer in (env_plain, file_plain, {k: v for k, v in flags.items() if v is not None}):
        merged.update(layer)
    if not merged.get("id"):
        raise ConfigError("a node id is required (--id, 'id' in the config file, or ZCLUSTER_ID)")
    try:
        final_id = check_name(merged["id"], "node id")
    except WireError as exc:
        raise ConfigError(str(exc)) from None
    final_bind = merged.get("bind", DEFAULT_BIND)
    parse_address(final_bind, allow_port_zero=True, allow_wildcard=True)
    final_advertise = merged.get("advertise")
    if final_advertise is not None:
        parse_address(final_advertise, allow_port_zero=True)
    level = merged.get("log_level", DEFAULT_LOG_LEVEL).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    overrides = {**env_tuning, **file_tuning, **parse_assignments(tuning)}
    config = NodeConfig().replace(**overrides) if overrides else NodeConfig()
    seeds_final = tuple(merged.get("seeds", ()))
    secured = resolve_security(
        security or {}, environ, file_table=file_security, config_file=config_file
    )
    sync = merged.get("state_sync", "normal")
    if sync not in SYNC_POLICIES:
        raise ConfigError(f"state sync must be one of {', '.join(SYNC_POLICIES)}, got {sync!r}")
    return NodeSettings(
        final_id,
        final_bind,
        final_advertise,
        seeds_final,
        config,
        level,
        ignored,
        secured,
        merged.get("state_dir") or None,
        sync,
    )


# ---------------------------------------------------------------- security

#: the keys of [security]: the fields of SecurityConfig
SECURITY_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SecurityConfig))
#: the variable of each security setting: ZCLUSTER_SECURITY for the mode, else
#: ZCLUSTER_SECURITY_<FIELD>
SECURITY_ENVIRONMENT: dict[str, str] = {
    name: f"{ENV_PREFIX}SECURITY" if name == "mode" else f"{ENV_PREFIX}SECURITY_{name.upper()}"
    for name in SECURITY_KEYS
}
#: the command-line flag of each security setting (repeatable ones in the singular)
SECURITY_FLAGS: dict[str, str] = {
    "mode": "--security",
    "key": "--key",
    "seed_keys": "--seed-key",
    "known_hosts": "--known-hosts",
    "authorized_keys": "--authorized-keys",
    "ca": "--ca",
    "certificate": "--certificate",
    "jwt_key": "--jwt-key",
    "jwt_token": "--jwt-token",
    "jwt_algorithm": "--jwt-alg",
    "jwt_kid": "--jwt-kid",
    "jwt_verify_keys": "--jwt-verify-key",
    "authorized_nodes": "--authorized-node",
    "cluster": "--cluster",
}
_SECURITY_PATHS = frozenset({"key", "known_hosts", "authorized_keys", "certificate"})
_SECURITY_PATHS |= {"jwt_key", "jwt_token"}
_SECURITY_PATH_LISTS = frozenset({"ca", "jwt_verify_keys"})
#: (the settings of one source by field name, where each came from)
_Layer = tuple[dict[str, Any], dict[str, str]]


def _items(raw: object, source: str, split: bool) -> list[str]:
    """A list setting: a list of strings, or one string (comma-separated if ``split``)."""
    if isinstance(raw, str):
        items = [item.strip() for item in raw.split(",")] if split else [raw]
    elif isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
        items = [item.strip() for item in raw]
    else:
        raise ConfigError(f"{source} must be a list of strings")
    return [item for item in items if item]


def _path(raw: object, source: str, base: Path | None) -> Path:
    """A path setting; a relative one is taken from ``base`` (a config file's directory)
    when given, else from the working directory."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{source} must be a path (a non-empty string)")
    path = Path(raw.strip()).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _seed_keys(raw: object, source: str, base: Path | None, split: bool) -> dict[str, str]:
    """Seed address -> z85 public key, from ``HOST:PORT=KEY`` items (or a table), where
    KEY is the key itself or the seed's NAME.key file."""
    if isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        pairs = []
        for item in _items(raw, source, split):
            address, sep, key = item.partition("=")  # "=" is a z85 digit: split at the first
            if not sep or not address.strip() or not key.strip():
                raise ConfigError(f"{source}: expected HOST:PORT=KEY, got {item!r}")
            pairs.append((address.strip(), key.strip()))
    keys: dict[str, str] = {}
    for address, key in pairs:
        if not isinstance(key, str):
            raise ConfigError(f"{source}: the key of seed {address} must be a string")
        try:
            parse_address(address)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        keys[address] = _public_key(address, key, source, base)
    return keys


def _public_key(address: str, value: str, source: str, base: Path | None) -> str:
    try:
        return check_curve_key(value).decode()
    except ConfigError:
        pass
    path = _path(value, source, base)
    if not path.is_file():
        raise ConfigError(
            f"{source}: the key of seed {address} must be its Curve public key (40 "
            f"characters of z85) or its NAME.key file, got {value!r}"
        )
    return load_curve_key_pair(path).public.decode()


def _security_value(name: str, raw: object, source: str, base: Path | None, split: bool) -> Any:
    """One security setting as SecurityConfig takes it; ConfigError naming ``source``."""
    if name == "seed_keys":
        return _seed_keys(raw, source, base, split)
    if name in _SECURITY_PATH_LISTS:
        return tuple(_path(item, source, base) for item in _items(raw, source, split))
    if name == "authorized_nodes":
        return frozenset(_items(raw, source, split))
    if name in _SECURITY_PATHS:
        return _path(raw, source, base)
    if not isinstance(raw, str):
        raise ConfigError(f"{source} must be a string")
    if name == "mode":
        try:
            return SecurityMode.parse(raw.strip().lower())
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if name == "jwt_algorithm":
        algorithm = raw.strip().upper()
        if algorithm not in SUPPORTED_ALGORITHMS:
            known = ", ".join(SUPPORTED_ALGORITHMS)
            raise ConfigError(f"{source}: unknown JWT algorithm {raw!r} (one of: {known})")
        return algorithm
    return raw.strip()


def security_from_flags(flags: Mapping[str, Any]) -> _Layer:
    """The security flags given (by field name; None or empty: not given)."""
    unknown = set(flags) - set(SECURITY_KEYS)
    if unknown:
        raise ValueError(f"not security settings: {sorted(unknown)}")
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, raw in flags.items():
        if raw is None or raw == () or raw == []:
            continue
        values[name] = _security_value(name, raw, SECURITY_FLAGS[name], None, split=False)
        origins[name] = SECURITY_FLAGS[name]
    return values, origins


def security_from_file(table: object, path: str) -> _Layer:
    """The ``[security]`` table of config file ``path``; its relative paths are taken
    from the file's directory."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [security] must be a table")
    unknown = sorted(set(table) - set(SECURITY_KEYS))
    if unknown:
        names = "; ".join(unknown_name(key, SECURITY_KEYS, "security setting") for key in unknown)
        raise ConfigError(f"{path} [security]: {names}")
    base = Path(path).expanduser().parent
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, raw in table.items():
        origins[name] = f"{path} [security] {name}"
        values[name] = _security_value(name, raw, origins[name], base, split=False)
    return values, origins


def security_from_env(environ: Mapping[str, str]) -> _Layer:
    """``ZCLUSTER_SECURITY`` and ``ZCLUSTER_SECURITY_*`` (empty ones are not given)."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, variable in SECURITY_ENVIRONMENT.items():
        raw = environ.get(variable, "")
        if raw == "":
            continue
        values[name] = _security_value(name, raw, variable, None, split=True)
        origins[name] = variable
    return values, origins


def resolve_security(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    file_table: object = None,
    config_file: str | None = None,
) -> SecurityConfig:
    """The security settings from flags, a config file's ``[security]`` table (when
    ``config_file`` has one) and the environment, each setting from the highest source
    that gives it; ConfigError if they do not make a valid whole (saying which came
    from elsewhere than the flags)."""
    layers = [security_from_env(environ)]
    if file_table is not None:
        layers.append(security_from_file(file_table, config_file or "config file"))
    layers.append(security_from_flags(flags))
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer_values, layer_origins in layers:
        values.update(layer_values)
        origins.update(layer_origins)
    try:
        return SecurityConfig(**values)
    except ConfigError as exc:
        elsewhere = [origin for origin in origins.values() if not origin.startswith("--")]
        if not elsewhere:
            raise
        raise ConfigError(f"{exc} (settings not given as flags: {', '.join(elsewhere)})") from None
