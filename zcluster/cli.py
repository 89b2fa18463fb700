"""The ``zcluster`` command line: node, pub, sub, members, request, send, keygen, token,
demo, bench.

Every command that starts a node takes the security flags (``--security MODE``,
``--key FILE``, ...: :func:`zcluster.clitools.security_options`).

Errors in arguments, config files or the environment print one line,
``zcluster: error: ...``, and exit with status 2; never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import click

from zcluster import __version__
from zcluster.application import notable_change
from zcluster.bench import GROUPS as BENCH_GROUPS
from zcluster.bench import OPTIONAL_GROUPS as OPTIONAL_BENCH_GROUPS
from zcluster.bench import workload as bench_sizes
from zcluster.cli_direct import request, send
from zcluster.cli_keys import keygen
from zcluster.cli_token import token
from zcluster.clitools import (
    BROKEN_PIPE_EXIT,
    GUARANTEE_NAMES,
    GUARANTEES,
    INTERRUPTED_EXIT,
    advertise_option,
    bind_option,
    format_option,
    join_timeout_option,
    log_format_option,
    log_option,
    on_stop_signals,
    parse_message,
    parse_tags,
    quiet_closed_stdout,
    security_flags,
    security_options,
    seed_option,
    setup_logging,
    short_lived_node,
    start_interruptibly,
    tag_option,
)
from zcluster.config import NodeConfig, did_you_mean
from zcluster.delivery import DeliveryGuarantee, DrainReport
from zcluster.errors import ConfigError, ZclusterError
from zcluster.protocol.members import Member, MemberStatus
from zcluster.runtime.asyncnode import AsyncNode, JoinRefused, JoinTimeout
from zcluster.runtime.runners import OnError, ReadControl, Runner, ThreadRunner
from zcluster.security.config import SecurityMode
from zcluster.settings import (
    NodeSettings,
    environment_names,
    resolve,
    resolve_security,
)

log = logging.getLogger("zcluster.cli")

USAGE_ERROR_EXIT = 2
#: how long one wait of `zcluster node` for its own join lasts before it waits again
JOIN_WATCH_S = 3600.0
#: members named in a ``view:`` log line; the others are counted
VIEW_SHOWN_MAX_COUNT = 16
#: zcluster members waits this long after joining for the view to settle
MEMBERS_SETTLE_S = 0.3
#: zcluster pub lets the loop see signals after this many publications
PUBLISH_YIELD_EVERY_COUNT = 1000


def _tags_text(member: Member) -> str:
    return ",".join(f"{key}={value}" for key, value in member.tags)


def _describe_view(members: Sequence[Member]) -> str:
    """``view: 3 up of 4 [n1=up, ...]``: the members not gone for good (left and removed
    ones are not listed), at most VIEW_SHOWN_MAX_COUNT of them by name."""
    shown = [m for m in members if not m.status.is_gone]
    parts = [f"{m.node_id}={m.status}" for m in shown[:VIEW_SHOWN_MAX_COUNT]]
    if len(shown) > VIEW_SHOWN_MAX_COUNT:
        parts.append(f"and {len(shown) - VIEW_SHOWN_MAX_COUNT} more")
    up = sum(1 for m in shown if m.status is MemberStatus.UP)
    return f"view: {up} up of {len(shown)} [{', '.join(parts)}]"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zcluster")
def cli() -> None:
    """Broker-less cluster messaging on ZeroMQ."""


# ---------------------------------------------------------------- node


@cli.command(short_help="Run a node until Ctrl-C or SIGTERM, then leave.")
@click.option("--id", "node_id", metavar="ID", help="This node's id (stable across restarts).")
@bind_option
@advertise_option
@seed_option
@click.option("--config", "config_file", metavar="FILE", help="TOML config file.")
@click.option(
    "--set", "tuning", multiple=True, metavar="KEY=VALUE", help="Override a tuning setting."
)
@tag_option("What this node says about itself, gossiped with its record (repeatable).")
@click.option(
    "--state-dir",
    metavar="DIR",
    help="Keep unsettled guaranteed sends, the exactly-once window and transaction "
    "decisions here, across crashes and restarts (one directory per node).",
)
@click.option(
    "--state-sync",
    type=click.Choice(["normal", "full", "off"]),
    help="When the state is fsynced: normal (survives the process dying; default), "
    "full (survives a power loss), off.",
)
@security_options
@log_option
@log_format_option
def node(
    node_id: str | None,
    bind: str | None,
    advertise: str | None,
    seeds: tuple[str, ...],
    config_file: str | None,
    tuning: tuple[str, ...],
    tags: tuple[str, ...],
    state_dir: str | None,
    state_sync: str | None,
    log_level: str | None,
    log_format: str,
) -> None:
    """Run a node in the foreground until SIGINT or SIGTERM (then leave the cluster)."""
    settings = resolve(
        node_id=node_id,
        bind=bind,
        advertise=advertise,
        seeds=seeds,
        config_file=config_file,
        tuning=tuning,
        environ=os.environ,
        log_level=log_level,
        security=security_flags(),
        state_dir=state_dir,
        state_sync=state_sync,
    )
    wanted = parse_tags(tags)
    setup_logging(settings.log_level, log_format)
    for name in settings.ignored_environment:
        log.warning("ignoring %s: no such setting%s", name, did_you_mean(name, environment_names()))
    asyncio.run(_run_node(settings, wanted))


async def _run_node(settings: NodeSettings, tags: dict[str, str]) -> None:
    node = AsyncNode(
        settings.node_id,
        settings.bind,
        settings.seeds,
        settings.advertise,
        config=settings.config,
        tags=tags,
        security=settings.security,
        state_dir=settings.state_dir,
        state_sync=settings.state_sync,
    )
    stop = asyncio.Event()
    on_stop_signals(asyncio.get_running_loop(), stop)
    last_view = ""

    def log_view(member: Member, previous: Member | None) -> None:
        nonlocal last_view
        if not notable_change(member, previous):
            return  # the steps on the way (joining, leaving) and bookkeeping: no line
        view = _describe_view(node.members())
        if view != last_view:
            last_view = view
            log.info("%s", view)

    node.on_member_change(log_view)
    await node.start(wait=False)
    log.info("node %s incarnation %d", node.node_id, node.incarnation)
    if settings.security.security_mode is not SecurityMode.NONE:
        log.info("node %s security mode %s", node.node_id, settings.security.security_mode.value)
        # SIGHUP: read the key and token files again (rotation without a restart)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, node.reload_security)
    joining = asyncio.ensure_future(_until_joined(node, stop))
    try:
        await stop.wait()
    finally:
        joining.cancel()
        log.info("node %s leaving", node.node_id)
        await node.stop()
    if joining.done() and not joining.cancelled() and joining.exception() is not None:
        raise joining.exception()  # type: ignore[misc]


async def _until_joined(node: AsyncNode, stop: asyncio.Event) -> None:
    """Wait for the node to join, however long that takes; stop it if a seed refuses it
    (JoinRefused: another live process has its node id)."""
    while True:
        try:
            await node.wait_joined(timeout=JOIN_WATCH_S)
            return
        except JoinTimeout:
            continue  # still trying; the node warns meanwhile
        except JoinRefused:
            stop.set()
            raise


# ---------------------------------------------------------------- pub / sub


@cli.command(short_help="Publish MESSAGE on TOPIC, then leave.")
@click.argument("topic")
@click.argument("message")
@seed_option
@bind_option
@advertise_option
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--json", "as_json", is_flag=True, help="MESSAGE is JSON, not a plain string.")
@click.option(
    "--guarantee",
    type=click.Choice(GUARANTEE_NAMES),
    default="at-most-once",
    show_default=True,
    help="Delivery guarantee; numbered ones are repaired from our retransmit buffer.",
)
@click.option(
    "--wait",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds to wait for every member to confirm it receives our publications.",
)
@click.option(
    "--drain-timeout",
    default=NodeConfig().drain_timeout_s,
    show_default=True,
    type=click.FloatRange(0, 3600, min_open=True),
    help="Seconds to wait, before leaving, for subscribers to confirm they have every message.",
)
@click.option(
    "--output",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="The outcome as a line of text, or as one JSON object (for scripts).",
)
@format_option
@join_timeout_option
@security_options
@log_option
@log_format_option
def pub(
    topic: str,
    message: str,
    seeds: tuple[str, ...],
    bind: str | None,
    advertise: str | None,
    count: int,
    as_json: bool,
    guarantee: str,
    wait: float,
    drain_timeout: float,
    output: str,
    data_format: str,
    join_timeout: float,
    log_level: str | None,
    log_format: str,
) -> None:
    """Join the cluster briefly, publish MESSAGE on TOPIC, and leave once every subscriber
    confirmed it has every message (up to drain_timeout_s; exit status 1 if not)."""
    value = parse_message(message, as_json)
    config = NodeConfig(drain_timeout_s=drain_timeout)
    node = short_lived_node(
        "pub",
        "pub",
        seeds,
        bind,
        advertise,
        log_level,
        log_format,
        data_format=data_format,
        config=config,
    )
    how = GUARANTEES[guarantee]
    outcome = asyncio.run(_run_pub(node, topic, value, count, how, wait, join_timeout))
    if outcome is None:
        sys.exit(INTERRUPTED_EXIT)
    receivers, report = outcome
    if output == "json":
        click.echo(json.dumps(_pub_outcome(topic, count, receivers, report)))
    else:
        click.echo(
            f"published {count} message(s) on {topic!r} to {receivers} subscriber(s); "
            f"{len(report.subscribers_confirmed)} confirmed having them all"
        )
    if not report.complete:
        click.echo(f"zcluster: error: not every message was delivered: {report}", err=True)
        sys.exit(1)


def _pub_outcome(topic: str, count: int, receivers: int, report: DrainReport) -> dict[str, Any]:
    return {
        "topic": topic,
        "published": count,
        "subscribers": receivers,
        "confirmed": list(report.subscribers_confirmed),
        "unconfirmed": list(report.subscribers_unconfirmed),
        "at_stake": report.at_stake,
        "dropped": report.publications_dropped,
        "complete": report.complete,
    }


async def _run_pub(
    node: AsyncNode,
    topic: str,
    value: Any,
    count: int,
    guarantee: DeliveryGuarantee,
    wait: float,
    join_timeout: float,
) -> tuple[int, DrainReport] | None:
    """Publish ``count`` times, then leave once every subscriber has them all: how many
    subscribers there were and what the leave delivered; None if SIGINT or SIGTERM came
    first."""
    stop = asyncio.Event()
    on_stop_signals(asyncio.get_running_loop(), stop)
    if not await start_interruptibly(node, stop, join_timeout):
        return None
    try:

        def everyone_listens() -> bool:
            live = {m.node_id for m in node.members() if m.status is MemberStatus.UP}
            live.discard(node.node_id)
            return live <= node.listeners()

        if not await node.wait_for(everyone_listens, wait):
            log.warning(
                "not every member confirmed it receives us within %gs; publishing anyway", wait
            )
        for sent in range(count):
            if sent % PUBLISH_YIELD_EVERY_COUNT == 0:
                await asyncio.sleep(0)  # let a signal through
                if stop.is_set():
                    click.echo(f"interrupted after {sent} of {count} message(s)", err=True)
                    await node.stop()
                    return None
            await node.publish(topic, value, guarantee=guarantee)
    except BaseException:
        await node.stop()
        raise
    receivers = len(node.subscribers(topic))
    return receivers, await node.stop()


@cli.command(short_help="Print the cluster's members, as a table or JSON.")
@seed_option
@bind_option
@advertise_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per member.")
@tag_option("Only members with this tag (repeatable: all of them).")
@join_timeout_option
@security_options
@log_option
@log_format_option
def members(
    seeds: tuple[str, ...],
    bind: str | None,
    advertise: str | None,
    as_json: bool,
    tags: tuple[str, ...],
    join_timeout: float,
    log_level: str | None,
    log_format: str,
) -> None:
    """Join the cluster briefly through --seed and print its members as this node sees
    them (itself and members that left or were removed left out), then leave."""
    node = short_lived_node("members", "members", seeds, bind, advertise, log_level, log_format)
    if not asyncio.run(_run_members(node, as_json, parse_tags(tags), join_timeout)):
        sys.exit(INTERRUPTED_EXIT)


async def _run_members(
    node: AsyncNode, as_json: bool, tags: dict[str, str], join_timeout: float
) -> bool:
    stop = asyncio.Event()
    on_stop_signals(asyncio.get_running_loop(), stop)
    if not await start_interruptibly(node, stop, join_timeout):
        return False
    try:
        # The seed's table arrives with the join; one gossip round brings what it lacked.
        await asyncio.sleep(MEMBERS_SETTLE_S)
        view = [
            m
            for m in sorted(node.members(tags), key=lambda m: m.node_id)
            if m.node_id != node.node_id and not m.status.is_gone
        ]
    finally:
        await node.stop()
    if as_json:
        for member in view:
            click.echo(json.dumps(member.as_dict()))
        return True
    rows = [("NODE", "STATUS", "ADDRESS", "PUB", "INCARNATION", "TAGS")]
    rows += [
        (m.node_id, str(m.status), m.address, m.pub_address, str(m.incarnation), _tags_text(m))
        for m in view
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
    return True


@cli.command(short_help="Print what is published on TOPIC.")
@click.argument("topic")
@seed_option
@bind_option
@advertise_option
@click.option("--count", type=click.IntRange(1), help="Exit after this many messages.")
@click.option("--json", "as_json", is_flag=True, help="Print each message as a JSON line.")
@click.option(
    "--prefix", is_flag=True, help="TOPIC is a prefix: print every topic that starts with it."
)
@format_option
@join_timeout_option
@security_options
@log_option
@log_format_option
def sub(
    topic: str,
    seeds: tuple[str, ...],
    bind: str | None,
    advertise: str | None,
    count: int | None,
    as_json: bool,
    prefix: bool,
    data_format: str,
    join_timeout: float,
    log_level: str | None,
    log_format: str,
) -> None:
    """Join the cluster and print messages published on TOPIC until interrupted."""
    # Messages are printed on a thread of their own: a slow reader of our output holds up
    # the printing, not the node (which keeps answering its peers while it waits).
    config = NodeConfig()
    printers: list[ThreadRunner] = []

    def printer(loop: asyncio.AbstractEventLoop, reading: ReadControl, on_error: OnError) -> Runner:
        printers.append(ThreadRunner.for_node(loop, reading, on_error, config=config))
        return printers[-1]

    node = short_lived_node(
        "sub",
        "sub",
        seeds,
        bind,
        advertise,
        log_level,
        log_format,
        data_format=data_format,
        config=config,
        callbacks=printer,
    )
    printed_all = asyncio.run(_run_sub(node, topic, prefix, count, as_json, join_timeout))
    for thread in printers:
        thread.join()  # what was received before the stop is printed
    if not printed_all:
        quiet_closed_stdout()
        sys.exit(BROKEN_PIPE_EXIT)


async def _run_sub(
    node: AsyncNode,
    topic: str,
    prefix: bool,
    count: int | None,
    as_json: bool,
    join_timeout: float,
) -> bool:
    """Print what arrives until ``count``, SIGINT or SIGTERM; False if stdout's reader
    went away (``zcluster sub ... | head``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received = 0
    reader_gone = False

    def show(topic_name: str, message: Any, sender: str) -> None:  # on the printing thread
        nonlocal received, reader_gone
        if reader_gone or (count is not None and received >= count):
            return
        received += 1
        if as_json:
            line = json.dumps(
                {"topic": topic_name, "sender": sender, "message": message}, default=repr
            )
        else:
            text = message if isinstance(message, str) else json.dumps(message, default=repr)
            line = f"[{sender}] {text}"
        try:
            click.echo(line)
        except BrokenPipeError:
            reader_gone = True
            loop.call_soon_threadsafe(stop.set)
            return
        if count is not None and received >= count:
            loop.call_soon_threadsafe(stop.set)

    if prefix:
        await node.subscribe_prefix(topic, show)
    else:
        await node.subscribe(topic, show)
    on_stop_signals(loop, stop)
    if not await start_interruptibly(node, stop, join_timeout):
        return True
    what = f"topics starting with {topic!r}" if prefix else repr(topic)
    click.echo(f"subscribed to {what} as {node.node_id}", err=True)
    try:
        await stop.wait()
    finally:
        await node.stop()
    return not reader_gone


# ---------------------------------------------------------------- demo


@cli.command(short_help="Run a local cluster doing fan-out.")
@click.option("--subscribers", default=3, show_default=True, type=click.IntRange(1, 16))
@click.option("--messages", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option(
    "--security",
    "security_mode",
    type=click.Choice(tuple(mode.value for mode in SecurityMode)),
    default=SecurityMode.NONE.value,
    show_default=True,
    help="Security mode, with throw-away keys and secrets made for the run.",
)
def demo(subscribers: int, messages: int, security_mode: str) -> None:
    """Start a local cluster, fan a stream out to subscriber processes, show what each got."""
    from zcluster.demo import run_demo

    setup_logging("warning")
    sys.exit(run_demo(subscribers, messages, security_mode))


@cli.command("demo-subscriber", hidden=True)
@click.option("--id", "node_id", required=True)
@seed_option
@click.option("--topic", required=True)
@click.option("--count", required=True, type=click.IntRange(1))
@click.option("--timeout", default=60.0, type=click.FloatRange(0.1, 3600))
@security_options
def demo_subscriber(
    node_id: str, seeds: tuple[str, ...], topic: str, count: int, timeout: float
) -> None:
    """One subscriber process of ``zcluster demo`` (reports JSON lines on stdout)."""
    from zcluster.demo import run_subscriber

    setup_logging("warning")
    security = resolve_security(security_flags(), {})  # the demo's flags, not the environment
    asyncio.run(run_subscriber(node_id, seeds, topic, count, timeout, security))


# ---------------------------------------------------------------- bench


def _sizes_text(sizes: Sequence[int]) -> str:
    return ",".join(str(size) for size in sizes)


@cli.command(short_help="Measure zcluster next to raw pyzmq.")
@click.option("--quick", is_flag=True, help="Smoke run: small counts, one repetition.")
@click.option(
    "--repeat",
    type=click.IntRange(1, 100),
    help=f"Repetitions [default: {bench_sizes.DEFAULT_REPEAT_COUNT}; "
    f"{bench_sizes.QUICK_REPEAT_COUNT} with --quick].",
)
@click.option(
    "--scenarios",
    metavar="GROUP,...",
    help=(
        f"Groups to run [default: {','.join(BENCH_GROUPS)}; "
        f"also: {','.join(OPTIONAL_BENCH_GROUPS)}]."
    ),
)
@click.option(
    "--messages",
    type=click.IntRange(100, 10_000_000),
    help=f"Messages per measured burst [default: {bench_sizes.DEFAULT_MESSAGES_COUNT}; "
    f"{bench_sizes.QUICK_MESSAGES_COUNT} with --quick].",
)
@click.option(
    "--json", "json_path", metavar="PATH", help="Results file [default: zcluster-bench-UTC.json]."
)
@click.option(
    "--cluster-sizes",
    metavar="N,...",
    help=f"Membership clusters [default: {_sizes_text(bench_sizes.DEFAULT_CLUSTER_SIZES)}; "
    f"{_sizes_text(bench_sizes.QUICK_CLUSTER_SIZES)} with --quick].",
)
def bench(
    quick: bool,
    repeat: int | None,
    scenarios: str | None,
    messages: int | None,
    json_path: str | None,
    cluster_sizes: str | None,
) -> None:
    """Measure zcluster next to raw pyzmq in the same run; print ratios, write JSON."""
    from zcluster.bench.main import BenchOptions, parse_cluster_sizes, parse_groups, run_bench

    options = BenchOptions(
        quick=quick,
        repeat_count=repeat,
        groups=None if scenarios is None else parse_groups(scenarios),
        messages_count=messages,
        json_path=json_path,
        cluster_sizes=None if cluster_sizes is None else parse_cluster_sizes(cluster_sizes),
    )
    sys.exit(run_bench(options))


# ---------------------------------------------------------------- entry point


# request and send are made in cli_direct; their security flags are added here
cli.add_command(security_options(request))
cli.add_command(security_options(send))
cli.add_command(keygen)
cli.add_command(token)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI with one-line errors and exit code 2 for bad input."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="zcluster",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"zcluster: error: {exc.format_message()}", err=True)
        sys.exit(USAGE_ERROR_EXIT)
    except ConfigError as exc:
        click.echo(f"zcluster: error: {exc}", err=True)
        sys.exit(USAGE_ERROR_EXIT)
    except ZclusterError as exc:
        click.echo(f"zcluster: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
