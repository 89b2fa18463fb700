"""The ``zcluster bench`` command: settings, the run, the table on stdout, the JSON file."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from zcluster.bench import ALL_GROUPS, GROUPS, costs, modes, report, runner, scenarios, workload
from zcluster.errors import ConfigError

MIN_CLUSTER_SIZE = 2
MAX_CLUSTER_SIZE = 128


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """The command's options; None means the default (which ``quick`` changes)."""

    quick: bool = False
    repeat_count: int | None = None
    groups: tuple[str, ...] | None = None
    messages_count: int | None = None
    json_path: str | None = None
    cluster_sizes: tuple[int, ...] | None = None


def parse_groups(text: str) -> tuple[str, ...]:
    """``"pubsub,rtt"`` -> the groups, or ConfigError naming the unknown ones."""
    groups = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [g for g in groups if g not in ALL_GROUPS]
    if unknown or not groups:
        raise ConfigError(
            f"unknown scenario group(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(ALL_GROUPS)}"
        )
    return groups


def parse_cluster_sizes(text: str) -> tuple[int, ...]:
    """``"3,10,32"`` -> the sizes, or ConfigError."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"cluster sizes must be integers separated by commas: {text!r}") from None
    if not sizes or any(not MIN_CLUSTER_SIZE <= s <= MAX_CLUSTER_SIZE for s in sizes):
        raise ConfigError(
            f"cluster sizes must be from {MIN_CLUSTER_SIZE} to {MAX_CLUSTER_SIZE}: {text!r}"
        )
    return sizes


def default_json_path(now: datetime.datetime) -> Path:
    return Path(f"zcluster-bench-{now.strftime('%Y%m%dT%H%M%SZ')}.json")


def run_bench(options: BenchOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run, report, write the JSON; exit status 1 if a promise broke or a session failed."""
    quick = options.quick
    repeat = options.repeat_count or (
        workload.QUICK_REPEAT_COUNT if quick else workload.DEFAULT_REPEAT_COUNT
    )
    messages = options.messages_count or (
        workload.QUICK_MESSAGES_COUNT if quick else workload.DEFAULT_MESSAGES_COUNT
    )
    cluster_sizes = options.cluster_sizes or (
        workload.QUICK_CLUSTER_SIZES if quick else workload.DEFAULT_CLUSTER_SIZES
    )
    groups = options.groups or GROUPS
    sizes = workload.Sizes.for_run(messages, quick=quick)
    started = datetime.datetime.now(datetime.UTC)
    json_path = Path(options.json_path) if options.json_path else default_json_path(started)
    machine = report.machine()
    settings = _settings(quick, repeat, groups, sizes, cluster_sizes)
    load_before = os.getloadavg()[0]
    print(_heading(machine, repeat, sizes, [load_before]), file=err, flush=True)
    started_s = time.monotonic()
    runs = runner.run(
        scenarios.families(groups, sizes, cluster_sizes),
        repeat,
        lambda line: print(line, file=err, flush=True),
    )
    wall_s = time.monotonic() - started_s
    loads = [load_before, os.getloadavg()[0]]
    reports = report.summarize(runs)
    cost_rows = costs.summarize(reports)
    sections = [costs.text(cost_rows)] if cost_rows else []
    print(report.text(reports, _heading(machine, repeat, sizes, loads, wall_s), sections), file=out)
    document = {
        "tool": "zcluster bench",
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": wall_s,
        "machine": {**machine, "load_average_1min": loads},
        "settings": settings,
        "scenarios": [report.row_json(r) for r in reports],
        "security_costs": [costs.cost_json(c) for c in cost_rows],
    }
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {json_path.resolve()}", file=out)
    return 1 if report.failed(reports) else 0


def _heading(
    machine: dict[str, Any],
    repeat: int,
    sizes: workload.Sizes,
    loads: Sequence[float],
    wall_s: float | None = None,
) -> str:
    took = "" if wall_s is None else f", {wall_s:.0f} s"
    revision = f" ({machine['git_revision']})" if machine["git_revision"] else ""
    load = " -> ".join(f"{value:.1f}" for value in loads)
    busy = (
        "\nthe load average passed the core count: other work competed, figures move more"
        if max(loads) > (machine["cores"] or 1)
        else ""
    )
    return (
        f"zcluster bench: {repeat} repetition(s), bursts of {sizes.pubsub_messages_count:,}"
        f" pub/sub and {sizes.messages_count:,} direct messages"
        f" (zcluster {sizes.bursts_count}, raw {workload.RAW_BURSTS_COUNT}){took}\n"
        f"{machine['cores']} cores (load average {load}), Python {machine['python']}, "
        f"pyzmq {machine['pyzmq']}, libzmq {machine['libzmq']}, "
        f"zcluster {machine['zcluster']}{revision}{busy}"
    )


def _settings(
    quick: bool,
    repeat: int,
    groups: Sequence[str],
    sizes: workload.Sizes,
    cluster_sizes: Sequence[int],
) -> dict[str, Any]:
    return {
        "quick": quick,
        "repeat_count": repeat,
        "groups": list(groups),
        **dataclasses.asdict(sizes),
        "pubsub_messages_count": sizes.pubsub_messages_count,
        "fanout_messages_count": sizes.fanout_messages_count,
        "payload_messages_count": {
            str(b): sizes.payload_messages_count(b) for b in workload.PAYLOAD_BODIES_BYTES
        },
        "raw_bursts_count": workload.RAW_BURSTS_COUNT,
        "fanout_subscribers_count": workload.FANOUT_SUBSCRIBERS_COUNT,
        "cluster_sizes": list(cluster_sizes),
        "once_per_run": ["membership", "memory"],
        "security_modes": [mode.value for mode in modes.SECURITY_MODES],
        "security_guarantees": [g.name for g in scenarios.SECURITY_GUARANTEES],
        "bind": "127.0.0.1, random ports",
    }
