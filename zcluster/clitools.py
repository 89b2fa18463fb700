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
from typing import Any, TypeVar

import click

from zcluster.core.component import SUPPORTED_GUARANTEES
from zcluster.delivery import DeliveryGuarantee
from zcluster.errors import ConfigError
from zcluster.runtime.asyncnode import AsyncNode
from zcluster.serialization import JsonSerializer, MsgpackSerializer, Serializer
from zcluster.settings import DEFAULT_BIND, LOG_LEVELS

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
    **options: Any,
) -> AsyncNode:
    """The node a short-lived command joins with: id ``PREFIX-`` and 8 hex digits, the
    serializer named by ``--format``; logging set up. ConfigError without a seed."""
    if not seeds:
        raise ConfigError(f"{command} needs --seed HOST:PORT of a cluster member")
    setup_logging(log_level or "warning", log_format)
    serializer = SERIALIZERS[data_format]()
    node_id = short_lived_id(prefix)
    return AsyncNode(
        node_id, bind or DEFAULT_BIND, seeds, advertise, serializer=serializer, **options
    )


def short_lived_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


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
