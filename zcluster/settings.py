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

Environment: ``ZCLUSTER_ID``, ``ZCLUSTER_BIND``, ``ZCLUSTER_ADVERTISE``,
``ZCLUSTER_SEEDS`` (comma-separated), ``ZCLUSTER_LOG_LEVEL``, and
``ZCLUSTER_<FIELD>`` for tuning, e.g. ``ZCLUSTER_HEARTBEAT_INTERVAL_S=0.5``.
Other ``ZCLUSTER_*`` variables are reported and ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
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
from zcluster.wire import check_name

_TOP_LEVEL = frozenset({"id", "bind", "advertise", "seeds", "log_level", "tuning"})
_PLAIN = ("id", "bind", "advertise", "log_level")
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
            else unknown_name(key, _TOP_LEVEL, "key")
            for key in unknown
        )
        raise ConfigError(f"{path}: {names}")
    tuning_raw = data.get("tuning", {})
    if not isinstance(tuning_raw, dict):
        raise ConfigError(f"{path}: [tuning] must be a table")
    plain = {k: v for k, v in data.items() if k != "tuning"}
    for key in _PLAIN:
        if key in plain and not isinstance(plain[key], str):
            raise ConfigError(f"{path}: {key} must be a string")
    if "seeds" in plain:
        plain["seeds"] = _seeds(plain["seeds"], path)
    return plain, tuning_from_mapping(tuning_raw, f"{path} [tuning]")


def environment_names() -> tuple[str, ...]:
    """The ``ZCLUSTER_*`` variables that name a setting."""
    return tuple(f"{ENV_PREFIX}{name.upper()}" for name in (*_PLAIN, "seeds", *field_names()))


def _from_env(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, float | int], tuple[str, ...]]:
    values = env_settings(environ)
    plain: dict[str, Any] = {k: values.pop(k) for k in _PLAIN if k in values}
    if "seeds" in values:
        plain["seeds"] = _seeds(values.pop("seeds"), "ZCLUSTER_SEEDS")
    known = set(field_names())
    ignored = tuple(sorted(f"ZCLUSTER_{k.upper()}" for k in values if k not in known))
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
) -> NodeSettings:
    """Merge flags, file, environment and defaults into validated settings."""
    env_plain, env_tuning, ignored = _from_env(environ)
    file_plain: dict[str, Any] = {}
    file_tuning: dict[str, float | int] = {}
    if config_file:
        file_plain, file_tuning = _from_file(read_toml(config_file), config_file)
    flags: dict[str, Any] = {
        "id": node_id,
        "bind": bind,
        "advertise": advertise,
        "log_level": log_level,
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
    return NodeSettings(final_id, final_bind, final_advertise, seeds_final, config, level, ignored)
