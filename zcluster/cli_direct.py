"""``zcluster request`` and ``zcluster send``: a member's handler, called from the shell.

Each joins the cluster briefly as a short-lived node (``req-`` or ``send-`` and 8 hex
digits), calls or sends, prints the outcome, and leaves once what it sent is settled.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from zcluster.clitools import (
    GUARANTEE_NAMES,
    GUARANTEES,
    INTERRUPTED_EXIT,
    advertise_option,
    bind_option,
    format_option,
    interruptibly,
    join_timeout_option,
    log_format_option,
    log_option,
    on_stop_signals,
    parse_message,
    seed_option,
    short_lived_node,
    start_interruptibly,
)
from zcluster.delivery import AckStatus, DeliveryGuarantee
from zcluster.errors import ZclusterError
from zcluster.runtime.asyncnode import AsyncNode

#: what waits for the outcome also waits, at most, for the call this long after its own
#: timeout: the reply may be on its way
_SETTLE_MARGIN_S = 1.0


def _stacked(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """One decorator applying several, the first outermost (as written above a function)."""

    def apply(command: Any) -> Any:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


#: NODE NAME [MESSAGE], and where to join: the arguments of both commands
to_a_member = _stacked(
    click.argument("node_id", metavar="NODE"),
    click.argument("name"),
    click.argument("message", required=False),
    seed_option,
    bind_option,
    advertise_option,
    click.option("--json", "as_json", is_flag=True, help="MESSAGE is JSON, not a plain string."),
)
#: how the short-lived node speaks and logs
short_lived_options = _stacked(format_option, join_timeout_option, log_option, log_format_option)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=repr)


# ---------------------------------------------------------------- request


@click.command(short_help="Call handler NAME on member NODE; print its reply.")
@to_a_member
@click.option(
    "--timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0, 3600, min_open=True),
    help="Seconds to wait for the reply.",
)
@short_lived_options
def request(
    node_id: str,
    name: str,
    message: str | None,
    seeds: tuple[str, ...],
    bind: str | None,
    advertise: str | None,
    as_json: bool,
    timeout: float,
    data_format: str,
    join_timeout: float,
    log_level: str | None,
    log_format: str,
) -> None:
    """Join the cluster briefly, call handler NAME on member NODE with MESSAGE (none if
    left out), print the reply (a string as it is, anything else as JSON) and leave.
    Exit status 1 if the handler fails, is missing, or does not answer in time."""
    value = None if message is None else parse_message(message, as_json)
    node = short_lived_node(
        "request", "req", seeds, bind, advertise, log_level, log_format, data_format=data_format
    )
    outcome = asyncio.run(_run_request(node, node_id, name, value, timeout, join_timeout))
    if outcome is None:
        sys.exit(INTERRUPTED_EXIT)
    click.echo(_shown(outcome[0]))


async def _run_request(
    node: AsyncNode, target: str, name: str, value: Any, timeout: float, join_timeout: float
) -> tuple[Any] | None:
    stop = asyncio.Event()
    on_stop_signals(asyncio.get_running_loop(), stop)
    if not await start_interruptibly(node, stop, join_timeout):
        return None
    try:
        if await interruptibly(stop, _until_live(node, target, join_timeout)) is None:
            return None
        outcome: tuple[Any] | None = await interruptibly(
            stop, node.request(target, name, value, timeout=timeout)
        )
        return outcome
    finally:
        await node.stop()


async def _until_live(node: AsyncNode, target: str, timeout: float) -> None:
    """A member the seed knows is in our table once we are admitted; wait a little for
    one that is joining too."""

    def live() -> bool:
        member = node.member(target)
        return member is not None and member.status.is_live

    await node.wait_for(live, timeout)


# ---------------------------------------------------------------- send


@click.command(short_help="Send MESSAGE to handler NAME on member NODE.")
@to_a_member
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option(
    "--guarantee",
    type=click.Choice(GUARANTEE_NAMES),
    default="at-least-once",
    show_default=True,
    help="Delivery guarantee: guaranteed sends are acknowledged once the handler ran.",
)
@click.option(
    "--ttl",
    type=click.FloatRange(0, 3600, min_open=True),
    help="Seconds a guaranteed send is retried before it expires (default: message_ttl_s).",
)
@short_lived_options
def send(
    node_id: str,
    name: str,
    message: str | None,
    seeds: tuple[str, ...],
    bind: str | None,
    advertise: str | None,
    as_json: bool,
    count: int,
    guarantee: str,
    ttl: float | None,
    data_format: str,
    join_timeout: float,
    log_level: str | None,
    log_format: str,
) -> None:
    """Join the cluster briefly, send MESSAGE (none if left out) to handler NAME on
    member NODE --count times, wait until every guaranteed send is acknowledged, say how
    they ended, and leave. Exit status 1 if any failed or expired."""
    value = None if message is None else parse_message(message, as_json)
    node = short_lived_node(
        "send", "send", seeds, bind, advertise, log_level, log_format, data_format=data_format
    )
    how = GUARANTEES[guarantee]
    outcome = asyncio.run(_run_send(node, node_id, name, value, count, how, ttl, join_timeout))
    if outcome is None:
        sys.exit(INTERRUPTED_EXIT)
    statuses, reasons = outcome
    sent = f"sent {count} message(s) to {node_id} {name!r}"
    if how is DeliveryGuarantee.AT_MOST_ONCE:
        click.echo(f"{sent} (at most once: not acknowledged)")
        return
    delivered = statuses.count(AckStatus.DELIVERED)
    click.echo(f"{sent}: {delivered} delivered")
    if delivered < count:
        shown = "; ".join(reasons[:3]) + (
            f"; and {len(reasons) - 3} more" if len(reasons) > 3 else ""
        )
        raise ZclusterError(f"{count - delivered} not delivered: {shown}")


async def _run_send(
    node: AsyncNode,
    target: str,
    name: str,
    value: Any,
    count: int,
    guarantee: DeliveryGuarantee,
    ttl: float | None,
    join_timeout: float,
) -> tuple[list[AckStatus], list[str]] | None:
    stop = asyncio.Event()
    on_stop_signals(asyncio.get_running_loop(), stop)
    if not await start_interruptibly(node, stop, join_timeout):
        return None
    try:
        if await interruptibly(stop, _until_live(node, target, join_timeout)) is None:
            return None
        acks = []
        for _ in range(count):
            if stop.is_set():
                return None
            ack = await node.send(target, name, value, guarantee=guarantee, ttl=ttl)
            if ack is not None:
                acks.append(ack)
        settled = await interruptibly(stop, asyncio.gather(*acks))
        if settled is None:
            return None
        statuses: list[AckStatus] = list(settled[0])
        reasons = [ack.reason for ack in acks if ack.status is not AckStatus.DELIVERED]
        return statuses, reasons
    finally:
        await node.stop()
