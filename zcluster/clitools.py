"""What the commands of ``zcluster`` share: options, logging, signals, short-lived nodes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click
import jwt

from zcluster.core.component import SUPPORTED_GUARANTEES
from zcluster.delivery import DeliveryGuarantee
from zcluster.errors import ConfigError
from zcluster.runtime.asyncnode import AsyncNode
from zcluster.security.config import SecurityConfig, SecurityMode
from zcluster.security.keys import NodeCertificate
from zcluster.serialization import JsonSerializer, MsgpackSerializer, Serializer
from zcluster.settings import DEFAULT_BIND, LOG_LEVELS, SECURITY_FLAGS, resolve_security

T = TypeVar("T")

#: the serializers a short-lived node may speak, by their command-line names
SERIALIZERS: dict[str, Callable[[], Serializer]] = {
    "msgpack": MsgpackSerializer,
    "json": JsonSerializer,
}

#: 128 + the signal's number, as shells report a process a signal ended
INTERRUPTED_EXIT = 128 + signal.SIGINT
#: the guarantees this release honours, by their names on the command line
GUARANTEES = {g.value.replace("_", "-"): g for g in DeliveryGuarantee if g in SUPPORTED_GUARANTEES}
GUARANTEE_NAMES = tuple(GUARANTEES)
BROKEN_PIPE_EXIT = 128 + signal.SIGPIPE
SHORT_LIVED_JOIN_TIMEOUT_S = 10.0


def setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


class _JsonLines(logging.Formatter):
    """One JSON object per record, for log shippers: time (UTC, ISO 8601), level,
    logger, message, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def on_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """The first SIGINT or SIGTERM asks for a graceful stop (``stop``); a second one ends
    the process at once, as a second Ctrl-C does elsewhere."""

    def on_signal() -> None:
        if stop.is_set():
            exit_now(INTERRUPTED_EXIT)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)


def exit_now(status: int) -> None:
    """End the process without waiting for anything (the OS closes its sockets)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def quiet_closed_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone, so that the interpreter's last
    flush does not complain about the broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


seed_option = click.option(
    "--seed",
    "seeds",
    multiple=True,
    metavar="HOST:PORT",
    help="Address of a cluster member to join through (repeatable; a DNS name may give several).",
)
log_option = click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    help="Logging detail (default: info for node, warning for the others).",
)
log_format_option = click.option(
    "--log-format",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object each (for log shippers).",
)
bind_option = click.option(
    "--bind", metavar="HOST:PORT", help="ROUTER address to bind (PUB binds PORT+1); default random."
)
join_timeout_option = click.option(
    "--join-timeout",
    default=SHORT_LIVED_JOIN_TIMEOUT_S,
    show_default=True,
    type=click.FloatRange(0, 3600, min_open=True),
    help="Seconds to wait for a seed to admit this short-lived node.",
)
format_option = click.option(
    "--format",
    "data_format",
    type=click.Choice(tuple(SERIALIZERS)),
    default="msgpack",
    show_default=True,
    help="How messages are serialized: as the cluster's nodes do (zcluster's default: msgpack).",
)
advertise_option = click.option(
    "--advertise", metavar="HOST:PORT", help="Address peers should use, when not --bind."
)


def tag_option(help_text: str) -> Callable[[Any], Any]:
    return click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help=help_text)


def parse_tags(items: tuple[str, ...]) -> dict[str, str]:
    """``--tag KEY=VALUE`` options as a mapping; ConfigError for one without ``=``."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tag {item!r}: expected KEY=VALUE, e.g. --tag role=worker")
        tags[key] = value
    return tags


# ---------------------------------------------------------------- security options

#: where the security flags of the running command are kept (its context's meta)
_SECURITY_META = "zcluster.security_flags"
_MODES = tuple(mode.value for mode in SecurityMode)
_SECURITY_HELP: dict[str, tuple[str, str]] = {  # field -> (metavar, help)
    "mode": (
        "MODE",
        "How connections are secured: none, curve, curve-mutual, jwt or curve+jwt "
        "(docs/security.md) [default: none].",
    ),
    "key": (
        "FILE",
        "This node's Curve key pair: the NAME.key_secret file of zcluster keygen "
        "(in curve-mutual, a short-lived command joins as NAME).",
    ),
    "seed_keys": (
        "HOST:PORT=KEY",
        "A seed's Curve public key, or its NAME.key file (curve modes; repeatable).",
    ),
    "known_hosts": ("FILE", "The seeds' Curve public keys: a file of 'HOST:PORT KEY' lines."),
    "authorized_keys": (
        "DIR",
        "curve-mutual: the NAME.key files of the nodes that may connect (NAME: node id).",
    ),
    "ca": ("FILE", "curve-mutual: the cluster CA's NAME.ca_public file (repeatable)."),
    "certificate": ("FILE", "curve-mutual: this node's certificate, signed by the cluster CA."),
    "jwt_key": ("FILE", "jwt: the key this node signs tokens with (HS256 secret or PEM)."),
    "jwt_token": ("FILE", "jwt: a token issued for this node (zcluster token issue)."),
    "jwt_algorithm": ("ALG", "jwt: HS256, RS256 or ES256, as the key is [default: HS256]."),
    "jwt_kid": ("KID", "jwt: the key id in tokens' headers."),
    "jwt_verify_keys": (
        "FILE",
        "jwt: a key that verifies peers' tokens (repeatable) [default: --jwt-key].",
    ),
    "authorized_nodes": (
        "ID",
        "Only this node id may connect (repeatable) [default: any the mode admits].",
    ),
    "cluster": (
        "NAME",
        "The cluster's name: tokens' audience, certificates' cluster [default: zcluster].",
    ),
}
_REPEATABLE = frozenset({"seed_keys", "ca", "jwt_verify_keys", "authorized_nodes"})


def _keep_security_flag(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    assert param.name is not None
    ctx.meta.setdefault(_SECURITY_META, {})[param.name.removeprefix("security_")] = value
    return value


def _security_option(field: str) -> tuple[list[str], dict[str, Any]]:
    """The declaration and attributes of the option of security setting ``field``."""
    metavar, help_text = _SECURITY_HELP[field]
    # the mode a choice, for completion; the rest is checked as the file and environment
    # are (zcluster.settings), the algorithm without regard to case
    choices = click.Choice(_MODES) if field == "mode" else None
    attributes = {
        "type": choices,
        "metavar": metavar,
        "multiple": field in _REPEATABLE,
        "help": help_text,
        "expose_value": False,  # kept for security_flags(): a command's signature is its own
        "callback": _keep_security_flag,
    }
    return [SECURITY_FLAGS[field], f"security_{field}"], attributes


def security_options(command: T) -> T:
    """The security flags (``--security MODE``, ``--key FILE``, ...) of a command that
    starts a node; :func:`security_flags` reads them. Applies to a function being made a
    command (where it stands among its options), or to a command already made, as
    ``request`` and ``send`` are (before its ``--log-level``, or last)."""
    options = [_security_option(field) for field in SECURITY_FLAGS]
    if isinstance(command, click.Command):
        names = [param.name for param in command.params]
        at = names.index("log_level") if "log_level" in names else len(names)
        command.params[at:at] = [click.Option(decls, **attrs) for decls, attrs in options]
        return command
    decorated: Any = command
    for decls, attrs in reversed(options):
        decorated = click.option(*decls, **attrs)(decorated)
    return cast(T, decorated)


def security_flags() -> dict[str, Any]:
    """The security flags of the running command, by SecurityConfig field (None or
    empty: not given); empty outside a command or for one without them."""
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(_SECURITY_META, {})) if ctx is not None else {}


def short_lived_security() -> SecurityConfig:
    """A short-lived command's security: its flags over ``ZCLUSTER_SECURITY*``."""
    return resolve_security(security_flags(), os.environ)


# ---------------------------------------------------------------- short-lived nodes


def short_lived_node(
    command: str,
    prefix: str,
    seeds: tuple[str, ...],
    bind: str | None,
    advertise: str | None,
    log_level: str | None,
    log_format: str,
    *,
    data_format: str = "msgpack",
    security: SecurityConfig | None = None,
    **options: Any,
) -> AsyncNode:
    """The node a short-lived command joins with: id ``PREFIX-`` and 8 hex digits (or
    the id its credentials speak for: see :func:`short_lived_id`), the serializer named
    by ``--format``, the security of its flags and environment (``security`` if given);
    logging set up. ConfigError without a seed, or for bad security settings."""
    if not seeds:
        raise ConfigError(f"{command} needs --seed HOST:PORT of a cluster member")
    if security is None:
        security = short_lived_security()
    setup_logging(log_level or "warning", log_format)
    serializer = SERIALIZERS[data_format]()
    node_id = short_lived_id(prefix, security)
    return AsyncNode(
        node_id,
        bind or DEFAULT_BIND,
        seeds,
        advertise,
        serializer=serializer,
        security=security,
        **options,
    )


def short_lived_id(prefix: str, security: SecurityConfig | None = None) -> str:
    """``PREFIX-`` and 8 hex digits; but the node id the credentials speak for when they
    bind one: in curve-mutual the id of the certificate, else the NAME of the key's
    NAME.key_secret file (the NAME.key that authorizes it); the subject of a token
    issued for this node (``--jwt-token``)."""
    bound = _bound_id(security) if security is not None else None
    return bound or f"{prefix}-{secrets.token_hex(4)}"


def _bound_id(security: SecurityConfig) -> str | None:
    """The node id ``security`` lets us speak as, if only one; None if any (or if a file
    cannot be read: loading it says what is wrong)."""
    mode = security.security_mode
    if mode is SecurityMode.CURVE_MUTUAL:
        if security.certificate is not None:
            try:
                return NodeCertificate.read(Path(security.certificate)).node_id
            except ConfigError:
                return None
        if security.key is not None:
            name = Path(security.key).name
            return name.removesuffix(".key_secret").removesuffix(".key") or None
    if mode.uses_tokens and security.jwt_token is not None:
        return _token_subject(Path(security.jwt_token))
    return None


def _token_subject(path: Path) -> str | None:
    """The subject of the token in ``path``, unverified: the id it was issued for."""
    try:
        claims = jwt.decode(path.read_text(encoding="ascii").strip(), options=_UNVERIFIED)
    except (OSError, UnicodeDecodeError, jwt.PyJWTError, ValueError):
        return None
    subject = claims.get("sub")
    return subject if isinstance(subject, str) and subject else None


#: reading a token's claims only to learn whom it names; the nodes it is shown to verify it
_UNVERIFIED: Any = {"verify_signature": False}


def parse_message(text: str, as_json: bool) -> Any:
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"MESSAGE is not valid JSON: {exc}") from None


async def interruptibly(stop: asyncio.Event, work: Awaitable[T]) -> tuple[T] | None:
    """``(await work,)`` unless ``stop`` is set first: then None, and ``work`` cancelled."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        return (task.result(),)
    task.cancel()
    return None


async def start_interruptibly(
    node: AsyncNode, stop: asyncio.Event, join_timeout: float = SHORT_LIVED_JOIN_TIMEOUT_S
) -> bool:
    """Join, unless ``stop`` is set first; returns whether the node is running (raises
    JoinTimeout or JoinRefused)."""
    if await interruptibly(stop, node.start(timeout=join_timeout)) is not None:
        return True
    await node.stop()
    return False
