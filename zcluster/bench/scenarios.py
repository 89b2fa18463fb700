"""The catalogue: every scenario group, its measurements and the rows of the report.

A :class:`Family` is what runs together: one session of the raw pyzmq
limit and one session of zcluster, each in fresh processes, giving one
sample per row per repetition. Each :class:`Row` pairs a zcluster figure
with the raw figure it is compared with (none for membership, which raw
ZeroMQ does not have); a row of the ``security`` group also names the row of
the same scenario in mode none, its ``reference`` (``bench.costs``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

from zcluster import DeliveryGuarantee
from zcluster.bench import ALL_GROUPS, direct, membership, memory, modes, pubsub, raw, rtt, workload
from zcluster.bench.samples import CPU, Sample, cpu_samples
from zcluster.bench.stats import megabytes_per_s
from zcluster.security.config import SecurityMode

#: every guarantee that publish() and send() accept (CAUSAL and TRANSACTIONAL are refused)
GUARANTEES = (
    DeliveryGuarantee.AT_MOST_ONCE,
    DeliveryGuarantee.AT_LEAST_ONCE,
    DeliveryGuarantee.EXACTLY_ONCE,
    DeliveryGuarantee.ORDERED,
)
#: the guarantees of the security group: the cost of a mode is per message and per
#: connection, not per guarantee (the acknowledgements of AT_LEAST_ONCE are messages too)
SECURITY_GUARANTEES = (DeliveryGuarantee.AT_MOST_ONCE, DeliveryGuarantee.AT_LEAST_ONCE)
#: the raw baseline's figure for a throughput scenario
DELIVERED = "delivered"

Session = Callable[[], dict[str, Sample]]


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the report: the zcluster figure ``key``, compared with raw ``raw_key``."""

    key: str
    title: str
    unit: str
    raw_key: str | None = None
    lower_is_better: bool = False
    #: the title of the row this one is a variant of (the same scenario in security
    #: mode none), which the costs table divides it by
    reference: str | None = None


@dataclasses.dataclass(frozen=True)
class Family:
    """Scenarios measured together. ``repeated``: once per repetition, or once per run."""

    group: str
    name: str
    rows: tuple[Row, ...]
    zcluster: Session
    raw: Session | None = None
    repeated: bool = True


def families(
    groups: Sequence[str], sizes: workload.Sizes, cluster_sizes: Sequence[int]
) -> list[Family]:
    """The families of the selected groups, in the order of ALL_GROUPS."""
    builders: dict[str, Callable[[], list[Family]]] = {
        "pubsub": functools.partial(_pubsub, sizes),
        "direct": functools.partial(_direct, sizes),
        "rtt": functools.partial(_rtt, sizes),
        "payload": functools.partial(_payload, sizes),
        "membership": functools.partial(_membership, cluster_sizes),
        "memory": functools.partial(_memory, sizes),
        "security": functools.partial(_security, sizes),
    }
    return [family for group in ALL_GROUPS if group in groups for family in builders[group]()]


def _throughput_rows(prefix: str, unit: str = "msg/s") -> tuple[Row, ...]:
    return tuple(Row(g.name, f"{prefix} {g.name}", unit, DELIVERED) for g in GUARANTEES)


def _pubsub(sizes: workload.Sizes) -> list[Family]:
    body_bytes = workload.BODY_BYTES
    out = []
    for subscribers, count in (
        (1, sizes.pubsub_messages_count),
        (workload.FANOUT_SUBSCRIBERS_COUNT, sizes.fanout_messages_count),
    ):
        zcluster = functools.partial(
            pubsub.pubsub,
            subscribers,
            GUARANTEES,
            count,
            sizes.bursts_count,
            sizes.warmup_for(count),
            body_bytes,
        )
        baseline = functools.partial(raw.pubsub, subscribers, count, body_bytes)
        name = f"pub/sub 1->{subscribers}"
        out.append(Family("pubsub", name, _throughput_rows(name), zcluster, baseline))
    return out


def _direct(sizes: workload.Sizes) -> list[Family]:
    count = sizes.messages_count
    return [
        Family(
            "direct",
            "direct send",
            _throughput_rows("direct send"),
            functools.partial(
                direct.direct, GUARANTEES, count, sizes.bursts_count, sizes.warmup_for(count)
            ),
            functools.partial(raw.push, count),
        )
    ]


def _rtt(sizes: workload.Sizes) -> list[Family]:
    count = sizes.round_trips_count
    warmup = sizes.warmup_for(count)
    out = []
    for api, use_asyncio in (("Node", False), ("AsyncNode", True)):
        rows = tuple(
            Row(key, f"{api}.request {key}", "us", key, lower_is_better=True)
            for key in ("p50", "p99")
        )
        out.append(
            Family(
                "rtt",
                f"{api}.request",
                rows,
                functools.partial(rtt.round_trips, count, warmup, use_asyncio=use_asyncio),
                functools.partial(raw.round_trips, count, warmup, use_asyncio=use_asyncio),
            )
        )
    return out


def _payload(sizes: workload.Sizes) -> list[Family]:
    out = []
    for body_bytes in workload.PAYLOAD_BODIES_BYTES:
        count = sizes.payload_messages_count(body_bytes)
        guarantee = (DeliveryGuarantee.AT_MOST_ONCE,)
        zcluster = functools.partial(
            pubsub.pubsub,
            1,
            guarantee,
            count,
            sizes.bursts_count,
            sizes.warmup_for(count),
            body_bytes,
        )
        baseline = functools.partial(raw.pubsub, 1, count, body_bytes)
        unit = "msg/s"
        if body_bytes > workload.PAYLOAD_BODIES_BYTES[0]:  # large bodies: bytes per second
            message_bytes = workload.packed_bytes(workload.body(body_bytes))
            zcluster = functools.partial(_in_megabytes, zcluster, message_bytes)
            baseline = functools.partial(_in_megabytes, baseline, message_bytes)
            unit = "MB/s"
        name = f"pub/sub 1->1 {_size_label(body_bytes)} body"
        key = DeliveryGuarantee.AT_MOST_ONCE.name
        out.append(Family("payload", name, (Row(key, name, unit, DELIVERED),), zcluster, baseline))
    return out


def _in_megabytes(session: Session, message_bytes: int) -> dict[str, Sample]:
    """The session's msg/s samples as MB/s of ``message_bytes`` messages."""
    return {
        key: dataclasses.replace(
            sample,
            value=None if sample.value is None else megabytes_per_s(sample.value, message_bytes),
            extra={**sample.extra, "message_bytes": message_bytes, "msgs_s": sample.value},
        )
        for key, sample in session().items()
    }


def _size_label(size_bytes: int) -> str:
    for unit_bytes, label in ((1_000_000, "MB"), (1_000, "KB")):
        if size_bytes >= unit_bytes:
            return f"{size_bytes / unit_bytes:g} {label}"
    return f"{size_bytes} B"


def _membership(cluster_sizes: Sequence[int]) -> list[Family]:
    return [
        Family(
            "membership",
            f"membership of {size}",
            (
                Row("converge", f"{size} processes: all see all UP", "s", lower_is_better=True),
                Row("detect", f"{size} processes: SIGKILL seen DOWN", "s", lower_is_better=True),
            ),
            functools.partial(membership.membership, size),
            repeated=False,
        )
        for size in cluster_sizes
    ]


def _memory(sizes: workload.Sizes) -> list[Family]:
    rows = (
        Row("idle", "idle node RSS", "MB", "idle", lower_is_better=True),
        Row("per_peer", "RSS per peer", "KB", lower_is_better=True),
        Row("per_pending", "per pending AT_LEAST_ONCE msg", "B", lower_is_better=True),
    )
    session = functools.partial(memory.zcluster_memory, sizes.peers_count, sizes.pending_count)
    return [Family("memory", "memory", rows, session, memory.raw_idle, repeated=False)]


def _security(sizes: workload.Sizes) -> list[Family]:
    """Fan-out and direct sends in each security mode, the modes of one scenario in turn
    (so that each repetition of a mode runs right after the same repetition of none):
    deliveries per second, and CPU time per delivery of all processes together.
    Raw pyzmq has CURVE, so curve modes are paired with a raw CURVE baseline and none
    with the plain one; a mode without Curve (jwt) has no raw side."""
    fanout, count = workload.FANOUT_SUBSCRIBERS_COUNT, sizes.fanout_messages_count
    fanout_session = functools.partial(
        pubsub.pubsub,
        fanout,
        SECURITY_GUARANTEES,
        count,
        sizes.bursts_count,
        sizes.warmup_for(count),
        workload.BODY_BYTES,
    )
    direct_count = sizes.messages_count
    direct_session = functools.partial(
        direct.direct,
        SECURITY_GUARANTEES,
        direct_count,
        sizes.bursts_count,
        sizes.warmup_for(direct_count),
    )
    scenarios = (
        (
            f"pub/sub 1->{fanout}",
            fanout_session,
            functools.partial(raw.pubsub, fanout, count, workload.BODY_BYTES),
        ),
        ("direct send", direct_session, functools.partial(raw.push, direct_count)),
    )
    out = []
    for name, session, baseline in scenarios:
        for mode in modes.SECURITY_MODES:
            has_raw = mode is SecurityMode.NONE or mode.uses_curve
            zcluster = functools.partial(modes.in_mode, mode, session)
            limit = functools.partial(baseline, curve=mode.uses_curve)
            out.append(
                Family(
                    "security",
                    f"{mode.value} {name}",
                    _security_rows(mode, name, has_raw),
                    functools.partial(_with_cpu, zcluster),
                    functools.partial(_with_cpu, limit) if has_raw else None,
                )
            )
    return out


def _security_rows(mode: SecurityMode, name: str, has_raw: bool) -> tuple[Row, ...]:
    """Throughput per guarantee, then CPU time per message, each naming its row in mode
    none (the reference)."""
    reference = modes.SECURITY_MODES[0]
    rows = []
    for cpu in (False, True):
        for guarantee in SECURITY_GUARANTEES:
            key, raw_key = guarantee.name, DELIVERED
            if cpu:
                key, raw_key = f"{key} {CPU}", f"{raw_key} {CPU}"
            rows.append(
                Row(
                    key,
                    security_title(mode, name, guarantee, cpu=cpu),
                    "us" if cpu else "msg/s",
                    raw_key if has_raw else None,
                    lower_is_better=cpu,
                    reference=None
                    if mode is reference
                    else security_title(reference, name, guarantee, cpu=cpu),
                )
            )
    return tuple(rows)


def _with_cpu(session: Session) -> dict[str, Sample]:
    """The session's samples, and a CPU time per message sample of each (``cpu_samples``)."""
    samples = session()
    return {**samples, **cpu_samples(samples)}


def security_title(
    mode: SecurityMode, name: str, guarantee: DeliveryGuarantee, *, cpu: bool = False
) -> str:
    """The row of scenario ``name`` with ``guarantee`` in ``mode``: "curve direct send
    AT_MOST_ONCE", or with ``cpu`` "curve direct send AT_MOST_ONCE CPU"."""
    return f"{mode.value} {name} {guarantee.name}{' CPU' if cpu else ''}"
