"""Swarm testing on the simulated network, with invariants checked as the run goes.

Each seed draws a configuration (swarm testing: node settings, network
conditions, which guarantees and features are used, 3 to 7 nodes, which
faults may happen) and then a schedule of sends, publications and faults:
crashes, restarts of crashed or stopped nodes under the same id (a new
incarnation), graceful stops, partitions, one-way cuts, heals and changes of
network conditions. After every step of the schedule (50 to 100 ms of virtual
time) an oracle checks what the application saw against what the protocol
promises (docs/delivery.md, docs/architecture.md):

Direct sends (guaranteed):
- every send ends in exactly one final status, no later than its ttl plus one
  tick while its sender runs (an EXPIRED one not before its ttl);
- DELIVERED only if the receiver's handler ran it and returned; FAILED with a
  handler's reason only if the handler ran it and raised; FAILED at once only
  for a non-member or a full outbox; "left the cluster" (or "was leaving") only for a
  stopped node;
- an EXACTLY_ONCE handler runs at most once per message per receiver incarnation;
- once an ORDERED message of a sender has run on a receiver incarnation, no
  earlier message of that sender runs there again or later (so ORDERED messages
  run in sending order, each once);
- handlers run only on the addressed node, with the right sender.

Guaranteed pub/sub:
- a publication reaches a subscriber incarnation at most once, only on a topic
  it reads, from the right publisher;
- once an ORDERED publication was delivered, no earlier one of that stream is;
- a loss report names numbers that exist, never one that was delivered, never
  one reported before;
- every publication of a publisher that was published while the subscriber was
  confirmed in ``subscribers(topic)``, with both still running at the end, is
  delivered or reported lost once the network is quiet.

Membership:
- a node's view only holds real incarnations; a record moves forward (merge
  order) unless it was removed; LEAVING and LEFT only for nodes being stopped;
  a node's own record is never suspect, down or removed;
- once faults stop, views converge within a bound; crashed nodes are not live in
  any view; no live node is suspect, down or missing for a live peer during a
  stability period; every confirmed subscription shows in the publisher's
  ``subscribers(topic)``; sends between live nodes are DELIVERED.

Views are also sampled every 10 ms of virtual time (who had whom down, left or
removed), to tell the circumstances of a violation.

A failure prints the seed, the drawn configuration, the tail of the schedule
and how to rerun exactly that seed: ``ZCLUSTER_SIM_SEED=<seed> pytest
tests/sim/test_swarm.py`` (a comma-separated list runs several).

Bugs found: every protocol bug this swarm found is reduced to a deterministic
test in test_swarm_findings.py. Those still open are listed in ``KNOWN_BUGS``: a
violation in the circumstances such a bug needs is counted rather than failed,
so the sweep keeps finding new ones; ``ZCLUSTER_SIM_STRICT=1`` fails on them too.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import pytest

from zcluster import AckStatus, Member, MemberStatus, NodeConfig
from zcluster import DeliveryGuarantee as G
from zcluster.testing import NetworkConditions
from zcluster.testing.sim import SimNetwork, SimNode

#: set to a seed (or "3,17,40") to run exactly those seeds, in every sweep of this file
SEED_ENV = "ZCLUSTER_SIM_SEED"
#: set to 1 to fail on the known bugs below too
STRICT_ENV = "ZCLUSTER_SIM_STRICT"

#: Protocol bugs this swarm found that are still open; each has a deterministic
#: reproduction in test_swarm_findings.py (xfail, strict). A violation in the
#: circumstances such a bug needs is counted, not failed, unless ZCLUSTER_SIM_STRICT=1.
#: Remove an entry when its bug is fixed (the bugs found and fixed since are regression
#: tests in test_swarm_findings.py).
KNOWN_BUGS: dict[str, str] = {}
DEFAULT_SEEDS = range(100)
SLOW_SEEDS = range(10_000, 13_000)

RELIABLE = (G.AT_LEAST_ONCE, G.EXACTLY_ONCE, G.ORDERED)
FAULT_KINDS = ("crash", "restart", "stop", "partition", "block", "heal", "conditions")
HANDLER = "h"
#: virtual time of one schedule step, drawn in this range; invariants are checked after each
STEP_S = (0.05, 0.1)
#: views are also sampled while a step runs (SimNetwork.run_until polls every 10 ms); a
#: state seen for this much less than a duration may have lasted that duration
SAMPLING_MARGIN_S = 0.05
#: faults stop, and once the failure detection bound has passed, views must agree
#: within this (virtual seconds), plus the seed contact interval if some node was down
#: for another (it may have been removed on both sides: they meet again through the
#: seeds) ...
CONVERGENCE_BOUND_S = 10.0
#: ... then stay agreed, with no live node suspected, for this long
STABILITY_S = 5.0
#: gaps of confirmed subscriptions must be closed (delivered or reported lost) within this,
#: plus the time to fetch the backlog (fetch_max_count every fetch_retry_s)
REPAIR_BOUND_S = 10.0
#: sends and publications made once the cluster is quiet must complete within this
QUIET_DELIVERY_BOUND_S = 5.0


def chosen_seeds(default: Iterable[int]) -> list[int]:
    forced = os.environ.get(SEED_ENV, "").strip()
    if forced:
        return [int(s) for s in forced.split(",") if s.strip()]
    return list(default)


# ====================================================================== configuration


@dataclasses.dataclass(frozen=True)
class SwarmConfig:
    """Everything a seed decides before the run starts."""

    seed: int
    node_ids: tuple[str, ...]
    node_config: NodeConfig
    conditions: NetworkConditions
    #: guarantees of direct sends (empty: no direct sends)
    direct: tuple[G, ...]
    #: guarantees of publications (empty: no pub/sub)
    publish: tuple[G, ...]
    topics: tuple[str, ...]
    #: each node's topics from the start (topic, replay)
    reads: Mapping[str, tuple[tuple[str, bool], ...]]
    #: fault kinds this run may draw
    faults: tuple[str, ...]
    #: probability of a fault at each step
    fault_rate: float
    steps: int
    #: most direct sends and publications per step
    sends_per_step: int
    publications_per_step: int
    #: share of direct messages whose handler raises
    failing_rate: float
    #: per-message ttls to draw from (never above the duplicate window)
    ttls: tuple[float, ...]
    #: restart every node still down once faults stop
    restart_at_end: bool
    #: virtual time a handler takes before its outcome is back (SimNetwork.handler_delay_s)
    handler_delay_s: float

    def describe(self) -> str:
        defaults = NodeConfig()
        tuned = {
            f.name: getattr(self.node_config, f.name)
            for f in dataclasses.fields(NodeConfig)
            if getattr(self.node_config, f.name) != getattr(defaults, f.name)
        }
        c = self.conditions
        lines = [
            f"nodes={list(self.node_ids)}",
            f"NodeConfig(**{tuned})",
            f"network: latency={c.latency} jitter={c.jitter} loss={c.packet_loss_rate} "
            f"duplicate={c.duplicate_rate} reorder={c.reorder_rate}/{c.reorder_delay}",
            f"direct={[g.name for g in self.direct]} publish={[g.name for g in self.publish]}",
            f"topics={list(self.topics)} reads={dict(self.reads)}",
            f"faults={list(self.faults)} fault_rate={self.fault_rate} steps={self.steps}",
            f"sends_per_step={self.sends_per_step} "
            f"publications_per_step={self.publications_per_step} "
            f"failing_rate={self.failing_rate} ttls={list(self.ttls)} "
            f"restart_at_end={self.restart_at_end} handler_delay_s={self.handler_delay_s}",
        ]
        return "\n  ".join(lines)


def draw_conditions(rng: random.Random) -> NetworkConditions:
    return NetworkConditions(
        latency=rng.choice([0.0005, 0.002, 0.01]),
        jitter=rng.choice([0.0, 0.001, 0.01]),
        packet_loss_rate=rng.choice([0.0, 0.02, 0.1, 0.25]),
        duplicate_rate=rng.choice([0.0, 0.05, 0.2]),
        reorder_rate=rng.choice([0.0, 0.1, 0.3]),
        reorder_delay=rng.choice([0.01, 0.05]),
    )


def draw_config(seed: int) -> SwarmConfig:
    rng = random.Random(f"swarm-config-{seed}")
    size = rng.randint(3, 7)
    node_ids = tuple(f"n{i}" for i in range(size))
    heartbeat = rng.choice([0.1, 0.2, 0.3])
    retry_initial = rng.choice([0.02, 0.05, 0.2, 0.5])
    ttl = rng.choice([0.5, 2.0, 5.0, 15.0])
    node_config = NodeConfig(
        heartbeat_interval_s=heartbeat,
        heartbeat_timeout_s=round(heartbeat * rng.choice([3, 4, 6]), 3),
        probe_timeout_s=round(heartbeat * 2, 3),
        suspect_timeout_s=round(heartbeat * rng.choice([3, 4]), 3),
        retry_initial_s=retry_initial,
        retry_max_s=rng.choice([r for r in (0.1, 0.5, 1.0, 2.0, 4.0) if r >= retry_initial]),
        outbox_max_count=rng.choice([3, 8, 64, 10_000]),
        retransmit_buffer_count=rng.choice([4, 16, 128, 10_000]),
        topic_holdback_max_count=rng.choice([2, 8, 64, 10_000]),
        message_ttl_s=ttl,
        dedup_window_s=rng.choice([ttl, 2 * ttl, 300.0]),
        fetch_retry_s=rng.choice([0.05, 0.3, 1.0]),
        fetch_max_count=rng.choice([4, 1024]),
        listen_retry_s=rng.choice([0.1, 0.5]),
        ack_selective_max_count=rng.choice([2, 1024]),
        inbound_streams_max_count=2 if rng.random() < 0.15 else 10_000,
        down_member_expiry_s=rng.choice([2.0, 5.0, 3600.0]),
        left_member_expiry_s=rng.choice([1.0, 30.0]),
        removed_tombstone_s=rng.choice([1.0, 60.0]),
        reconnect_interval_s=rng.choice([0.5, 1.0]),
        seed_contact_interval_s=rng.choice([5.0, 30.0]),
    )
    features = rng.choice(["direct", "pubsub", "both", "both"])
    direct: tuple[G, ...] = ()
    publish: tuple[G, ...] = ()
    if features in ("direct", "both"):
        direct = tuple(g for g in RELIABLE if rng.random() < 0.6) or (rng.choice(RELIABLE),)
    if features in ("pubsub", "both"):
        publish = tuple(g for g in RELIABLE if rng.random() < 0.6) or (rng.choice(RELIABLE),)
    topics = tuple(f"t{i}" for i in range(rng.randint(1, 3)))
    reads = {
        node_id: tuple((t, rng.random() < 0.2) for t in topics if rng.random() < 0.6)
        for node_id in node_ids
    }
    faults = tuple(k for k in FAULT_KINDS if rng.random() < 0.7)
    return SwarmConfig(
        seed=seed,
        node_ids=node_ids,
        node_config=node_config,
        conditions=draw_conditions(rng),
        direct=direct,
        publish=publish,
        topics=topics,
        reads=reads,
        faults=faults,
        fault_rate=rng.choice([0.02, 0.05, 0.1]),
        steps=rng.randint(100, 200),
        sends_per_step=rng.choice([1, 2, 4]),
        publications_per_step=rng.choice([1, 2, 4]),
        failing_rate=rng.choice([0.0, 0.05]),
        ttls=tuple(sorted({ttl, ttl / 2, 0.1})),
        restart_at_end=rng.random() < 0.5,
        handler_delay_s=rng.choice([0.0, 0.0, 0.005, 0.05]),
    )


# ====================================================================== the oracle's records


@dataclasses.dataclass(eq=False)
class Life:
    """One incarnation of one node id, and what it did and saw."""

    label: str
    node: SimNode
    generation: int
    incarnation: int
    started_at: float
    reads: dict[str, bool]
    ended: str = ""  # "", "crash", "stopping", "stop"
    delivered_seen: int = 0
    losses_seen: int = 0
    #: numbers of its guaranteed sends, and those without a final status yet
    numbers: set[int] = dataclasses.field(default_factory=set)
    pending: dict[int, Sent] = dataclasses.field(default_factory=dict)
    #: how many messages it sent to each receiver (the index of the next)
    sends_to: Counter[str] = dataclasses.field(default_factory=Counter)
    #: its latest publication number on each topic
    published: Counter[str] = dataclasses.field(default_factory=Counter)
    #: its view at the last step: node id -> (incarnation, version, status)
    view: dict[str, tuple[int, int, MemberStatus]] = dataclasses.field(default_factory=dict)
    #: its view at the last sample (every 10 ms of virtual time)
    sampled: dict[str, Member] = dataclasses.field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def running(self) -> bool:
        return self.ended in ("", "stopping")


@dataclasses.dataclass(eq=False)
class Sent:
    """One guaranteed direct message."""

    sender: Life
    number: int
    receiver: str
    index: int
    guarantee: G
    payload: bytes
    fails: bool
    sent_at: float
    deadline: float
    immediate: bool = False
    status: tuple[AckStatus, str] | None = None


@dataclasses.dataclass(eq=False)
class Run:
    receiver: Life
    at: float
    ok: bool


@dataclasses.dataclass(eq=False)
class Pub:
    """One guaranteed publication."""

    publisher: Life
    topic: str
    seq: int
    guarantee: G
    at: float
    #: labels of subscriber incarnations confirmed by the publisher when it was published
    confirmed: frozenset[str]


class Violation(AssertionError):
    pass


GONE = (MemberStatus.LEFT, MemberStatus.REMOVED)
STOPPED = ("stopping", "stop")


# ====================================================================== the swarm


class Swarm:
    """Runs one seed: the schedule, the faults, and the oracle checking them."""

    def __init__(self, config: SwarmConfig, *, strict: bool = False) -> None:
        self.config = config
        self.strict = strict
        self.rng = random.Random(f"swarm-schedule-{config.seed}")
        self.net = SimNetwork(config.seed, config=config.node_config)
        self.net.handler_delay_s = config.handler_delay_s
        self.base = config.conditions
        self.lives: list[Life] = []
        self.current: dict[str, Life] = {}
        self.log: list[str] = []
        self.violations: list[str] = []
        #: known bugs met (see KNOWN_BUGS): how often, and the first occurrence
        self.known: Counter[str] = Counter()
        self.known_examples: dict[str, str] = {}
        #: documented exceptions met (e.g. a receiver forgetting streams beyond its bound)
        self.relaxed: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.sends: dict[bytes, Sent] = {}
        self.runs: dict[bytes, list[Run]] = {}
        #: (receiver label, sender label) -> highest index of an ORDERED message run
        self.ordered_high: dict[tuple[str, str], int] = {}
        self.pubs: dict[bytes, Pub] = {}
        #: (subscriber label, publisher label, topic) -> numbers delivered
        self.got: dict[tuple[str, str, str], set[int]] = {}
        self.pub_ordered_high: dict[tuple[str, str, str], int] = {}
        #: (subscriber label, publisher id, topic) -> loss ranges reported
        self.lost: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        #: the same reports, by the publisher life they are about (when it is clear)
        self.lost_of_life: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        #: (viewer label, incarnation): the viewer had it left, removed or purged (so forgot
        #: its streams) at some sample
        self.gone: set[tuple[str, int]] = set()
        #: (viewer label, node id) -> since when the viewer has had it not live (sampled)
        self.down_since: dict[tuple[str, str], float] = {}
        #: (viewer label, node id) -> the last time the viewer had it not live (sampled)
        self.not_live: dict[tuple[str, str], float] = {}
        #: incarnations some node had down long enough to remove them
        self.long_down: set[int] = set()
        #: node ids ever stopped gracefully (LEFT is only for them)
        self.stopped_ids: set[str] = set()

    # ------------------------------------------------------------ helpers

    @property
    def now(self) -> float:
        return self.net.now

    def note(self, what: str) -> None:
        self.log.append(f"{self.now:9.3f} {what}")

    def violation(self, what: str, known: str | None = None) -> None:
        """Record a broken invariant; ``known`` names the known bug whose circumstances
        it occurred in (then it is counted, not failed, unless strict or no longer listed
        in KNOWN_BUGS)."""
        if known in KNOWN_BUGS and not self.strict:
            self.known[known] += 1
            self.known_examples.setdefault(known, f"t={self.now:.3f}: {what}")
            return
        suffix = f" [known bug {known}]" if known else ""
        self.violations.append(f"t={self.now:.3f}: {what}{suffix}")

    def running(self) -> list[Life]:
        return [life for life in self.current.values() if life.ended == ""]

    def removed_alive(self, viewer: Life, peer: Life) -> bool:
        """Whether ``viewer`` may have removed ``peer`` while it was alive (and so forgotten
        its streams): some node had it down as long as removal takes, or the viewer was
        seen holding it removed or purged, and it was not stopped."""
        if peer.ended in STOPPED:
            return False
        return peer.incarnation in self.long_down or (viewer.label, peer.incarnation) in self.gone

    def stream_bug(self, reader: Life, publisher: Life) -> str | None:
        """The known bug that may have reset ``reader``'s streams of ``publisher``."""
        return "removed-live-publisher" if self.removed_alive(reader, publisher) else None

    # ------------------------------------------------------------ nodes

    def start(self, node_id: str, seeds: tuple[str, ...]) -> Life:
        node = self.net.add_node(node_id, seeds=seeds)
        me = node.member(node_id)
        assert me is not None
        generation = sum(1 for life in self.lives if life.node_id == node_id)
        life = Life(f"{node_id}.{generation}", node, generation, me.incarnation, self.now, {})
        self.lives.append(life)
        self.current[node_id] = life
        node.handlers[HANDLER] = self.handler_for(life)
        for topic, replay in self.config.reads.get(node_id, ()):
            self.subscribe(life, topic, replay)
        self.note(f"start {life.label} seeds={len(seeds)}")
        return life

    def subscribe(self, life: Life, topic: str, replay: bool) -> None:
        if topic in life.reads:
            return
        life.reads[topic] = replay
        self.net.subscribe(life.node_id, topic, replay=replay)

    def handler_for(self, life: Life) -> Callable[[str, bytes], None]:
        def handle(sender: str, payload: bytes) -> None:
            self.ran(life, sender, payload)
            if payload.endswith(b"!"):
                raise ValueError("refused by the test")

        return handle

    def restart(self, node_id: str) -> None:
        seeds = tuple(
            life.node.core.address for life in self.current.values() if life.node_id != node_id
        )
        self.start(node_id, seeds)

    def crash(self, life: Life) -> None:
        self.net.crash(life.node_id)
        life.ended = "crash"
        self.note(f"crash {life.label}")

    def stop(self, life: Life) -> None:
        self.note(f"stop {life.label} (begins)")
        life.ended = "stopping"
        self.stopped_ids.add(life.node_id)
        # A leave may last (it delivers what was accepted first): the others are checked
        # meanwhile, step by step, as at any other time.
        self.net.begin_stop(life.node_id)
        core = life.node.core
        self.run_until(lambda: core.has_left, self.net.config.graceful_stop_max_s)
        self.net.end_stop(life.node_id)
        life.ended = "stop"
        self.note(f"stop {life.label} (done)")

    # ------------------------------------------------------------ traffic

    def send(self, sender: Life, receiver: str, guarantee: G, ttl: float) -> Sent:
        index = sender.sends_to[receiver]
        sender.sends_to[receiver] += 1
        fails = self.rng.random() < self.config.failing_rate
        payload = f"{sender.label}>{receiver}#{index}".encode() + (b"!" if fails else b"")
        # What the sender knows now decides whether it may refuse the message at once.
        known = sender.node.member(receiver)
        member = known is not None and known.status not in GONE
        full = sender.node.core.outbox_count(receiver) >= self.config.node_config.outbox_max_count
        number = self.net.send(sender.node_id, receiver, HANDLER, payload, guarantee, ttl)
        sent = Sent(
            sender, number, receiver, index, guarantee, payload, fails, self.now, self.now + ttl
        )
        self.sends[payload] = sent
        sender.numbers.add(number)
        if number in sender.node.acks:
            sent.immediate = True
            reason = sender.node.acks[number][1]
            if "is not a member" in reason and member:
                self.violation(f"{payload!r} refused, but {receiver} is a member: {known}")
            if "is full" in reason and not full:
                self.violation(f"{payload!r} refused, but the outbox to {receiver} has room")
            self.settle(sent)
        else:
            if not member or full:
                self.violation(f"{payload!r} accepted for {known} with a full outbox={full}")
            sender.pending[number] = sent
        self.stats["sends"] += 1
        return sent

    def publish(self, publisher: Life, topic: str, guarantee: G) -> None:
        publisher.published[topic] += 1
        seq = publisher.published[topic]
        core = publisher.node.core
        confirmed = frozenset(
            life.label
            for node_id in core.subscribers(topic)
            if (life := self.current.get(node_id)) is not None
            and life.running
            and (seen := publisher.node.member(node_id)) is not None
            and seen.incarnation == life.incarnation
        )
        payload = f"{publisher.label}|{topic}|{seq}".encode()
        self.pubs[payload] = Pub(publisher, topic, seq, guarantee, self.now, confirmed)
        self.net.publish(publisher.node_id, topic, payload, guarantee)
        self.stats["publications"] += 1

    def traffic(self, sends: int, publications: int) -> None:
        config, rng = self.config, self.rng
        live = self.running()
        if config.direct and len(live) >= 2:
            for _ in range(rng.randint(0, sends)):
                sender = rng.choice(live)
                receiver = rng.choice([n for n in config.node_ids if n != sender.node_id])
                self.send(sender, receiver, rng.choice(config.direct), rng.choice(config.ttls))
            if rng.random() < 0.2:  # fan-in: several senders to one receiver at one instant
                target = rng.choice(live)
                for sender in live:
                    if sender is not target:
                        ttl = rng.choice(config.ttls)
                        self.send(sender, target.node_id, rng.choice(config.direct), ttl)
        if config.publish and live:
            for _ in range(rng.randint(0, publications)):
                publisher = rng.choice(live)
                topic = rng.choice(config.topics)
                self.publish(publisher, topic, rng.choice(config.publish))
            if rng.random() < 0.02:  # a late subscription
                reader = rng.choice(live)
                topic = rng.choice(config.topics)
                if topic not in reader.reads:
                    self.note(f"subscribe {reader.label} {topic}")
                    self.subscribe(reader, topic, rng.random() < 0.3)

    # ------------------------------------------------------------ faults

    def fault(self) -> None:
        config, rng, net = self.config, self.rng, self.net
        kind = rng.choice(config.faults)
        live = self.running()
        down = [life for life in self.current.values() if not life.running]
        if kind == "crash" and len(live) > 2:
            self.crash(rng.choice(live))
        elif kind == "stop" and len(live) > 2:
            self.stop(rng.choice(live))
        elif kind == "restart" and down:
            self.restart(rng.choice(down).node_id)
        elif kind == "partition":
            ids = list(config.node_ids)
            rng.shuffle(ids)
            cuts = sorted(rng.sample(range(1, len(ids)), min(len(ids) - 1, rng.randint(1, 2))))
            groups = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)], strict=True)]
            if rng.random() < 0.2:  # the first node of the last group hears nobody
                groups[-1] = groups[-1][1:]
            net.partition(*[g for g in groups if g])
            self.note(f"partition {groups}")
        elif kind == "block":
            a, b = rng.sample(config.node_ids, 2)
            net.block(a, b)
            self.note(f"block {a}->{b}")
        elif kind == "heal":
            net.heal()
            self.note("heal")
        elif kind == "conditions":
            drawn = draw_conditions(rng)
            current = net.conditions
            net.set_conditions(
                dataclasses.replace(
                    drawn,
                    partition_groups=current.partition_groups,
                    blocked_links=current.blocked_links,
                )
            )
            self.note(f"conditions loss={drawn.packet_loss_rate} jitter={drawn.jitter}")

    # ------------------------------------------------------------ direct delivery

    def ran(self, receiver: Life, sender_id: str, payload: bytes) -> None:
        """A handler ran (called from inside the handler: record, never raise)."""
        sent = self.sends.get(payload)
        if sent is None:
            self.violation(f"{receiver.label} ran a message never sent: {payload!r}")
            return
        if sent.receiver != receiver.node_id or sent.sender.node_id != sender_id:
            self.violation(f"{receiver.label} ran {payload!r} from {sender_id}: wrong node")
        runs = self.runs.setdefault(payload, [])
        here = [r for r in runs if r.receiver is receiver]
        runs.append(Run(receiver, self.now, not sent.fails))
        self.stats["runs"] += 1
        if here and sent.guarantee is G.EXACTLY_ONCE:
            self.violation(
                f"EXACTLY_ONCE {payload!r} ran {len(here) + 1} times on {receiver.label}"
            )
        key = (receiver.label, sent.sender.label)
        high = self.ordered_high.get(key, 0)
        if sent.index < high or (sent.index == high and here and sent.guarantee is G.ORDERED):
            what = (
                f"{receiver.label} ran {payload!r} ({sent.guarantee.name}, run {len(here) + 1})"
                f" after ORDERED #{high} of {sent.sender.label}"
            )
            if receiver.node.stats().get("reliable_streams_evicted", 0):
                self.relaxed["direct order or duplicate after the receiver evicted a stream"] += 1
            else:
                self.violation(what)
        if sent.guarantee is G.ORDERED:
            self.ordered_high[key] = max(high, sent.index)

    def settle(self, sent: Sent) -> None:
        """A send got its final status: is it one the protocol may give?"""
        status = sent.sender.node.acks[sent.number]
        sent.status = status
        kind, reason = status
        what = f"{sent.payload!r} ({sent.guarantee.name}) {kind.name} {reason!r}"
        runs = self.runs.get(sent.payload, [])
        self.stats[f"status_{kind.name}"] += 1
        refused = "is not a member" in reason or "is full" in reason
        if sent.immediate:
            if kind is not AckStatus.FAILED or not refused:
                self.violation(f"immediate final status {what}")
        elif refused:
            self.violation(f"a refusal that was not immediate: {what}")
        elif kind is AckStatus.DELIVERED:
            if not any(r.ok for r in runs):
                self.violation(f"DELIVERED but no handler returned: {what}; runs={len(runs)}")
        elif kind is AckStatus.EXPIRED:
            if self.now < sent.deadline - 1e-9 or "ttl" not in reason:
                self.violation(f"EXPIRED before its ttl ({sent.deadline:.3f}): {what}")
        elif "handler raised" in reason:
            if not sent.fails or not runs:
                self.violation(f"a handler failure that did not happen: {what}")
        elif "left the cluster" in reason or "leaving the cluster" in reason:
            if sent.receiver not in self.stopped_ids:
                self.violation(f"'left' for a node never stopped: {what}")
        elif "removed from the cluster" not in reason:
            self.violation(f"unexpected final status {what}")

    def observe_sends(self, life: Life) -> None:
        acks = life.node.acks
        for number in [n for n in life.pending if n in acks]:
            self.settle(life.pending.pop(number))
        if life.running:
            slack = 1.5 * self.config.node_config.tick_interval_s
            for sent in life.pending.values():
                if self.now > sent.deadline + slack:
                    self.violation(
                        f"{sent.payload!r} has no final status {self.now - sent.sent_at:.3f}s "
                        f"after it was sent with ttl {sent.deadline - sent.sent_at:.3f}s"
                    )
                    sent.deadline = float("inf")  # reported once
        if len(acks) > len(life.numbers) and (unknown := set(acks) - life.numbers):
            self.violation(f"{life.label} has statuses for numbers never sent: {unknown}")

    # ------------------------------------------------------------ pub/sub

    def observe_publications(self, life: Life) -> None:
        delivered = life.node.delivered
        for sender, topic, payload in delivered[life.delivered_seen :]:
            if topic != HANDLER:
                self.delivered_publication(life, sender, topic, payload)
        life.delivered_seen = len(delivered)
        for loss in life.node.losses[life.losses_seen :]:
            self.check_loss(life, loss.publisher, loss.topic, loss.first, loss.last)
        life.losses_seen = len(life.node.losses)

    def delivered_publication(self, life: Life, sender: str, topic: str, payload: bytes) -> None:
        pub = self.pubs.get(payload)
        if pub is None or pub.topic != topic or pub.publisher.node_id != sender:
            self.violation(f"{life.label} got a publication never published: {payload!r}")
            return
        self.stats["publications_delivered"] += 1
        if topic not in life.reads:
            self.violation(f"{life.label} got {payload!r} on a topic it does not read")
        key = (life.label, pub.publisher.label, topic)
        got = self.got.setdefault(key, set())
        if pub.seq in got:
            known = self.stream_bug(life, pub.publisher)
            self.violation(f"{life.label} got {payload!r} twice", known)
        got.add(pub.seq)
        high = self.pub_ordered_high.get(key, 0)
        if pub.seq < high:
            self.violation(
                f"{life.label} got {payload!r} ({pub.guarantee.name}) after ORDERED #{high}",
                self.stream_bug(life, pub.publisher),
            )
        if pub.guarantee is G.ORDERED:
            self.pub_ordered_high[key] = max(high, pub.seq)
        for first, last in self.lost.get((life.label, sender, topic), ()):
            if first <= pub.seq <= last and self.loss_sources(sender, topic, last) == [
                pub.publisher
            ]:
                self.violation(
                    f"{life.label} got {payload!r}, reported lost before",
                    self.stream_bug(life, pub.publisher),
                )

    def loss_sources(self, publisher: str, topic: str, last: int) -> list[Life]:
        """The incarnations of ``publisher`` a loss report may be about (losses carry no
        incarnation): those that published ``last`` on the topic."""
        return [
            life
            for life in self.lives
            if life.node_id == publisher and life.published[topic] >= last
        ]

    def check_loss(self, life: Life, publisher: str, topic: str, first: int, last: int) -> None:
        what = f"{life.label} told {publisher}/{topic} {first}..{last} are lost"
        if topic not in life.reads:
            self.violation(f"{what}, on a topic it does not read")
        if not 1 <= first <= last:
            self.violation(f"{what}: not a range")
            return
        self.stats["losses"] += 1
        self.stats["lost_publications"] += last - first + 1
        sources = self.loss_sources(publisher, topic, last)
        if not sources:
            self.violation(f"{what}: never published")
            return
        delivered = [
            {seq for seq in self.got.get((life.label, source.label, topic), ()) if first <= seq}
            for source in sources
        ]
        if all(any(seq <= last for seq in seqs) for seqs in delivered):
            self.violation(f"{what}, but delivered some of them", self.loss_bug(life, sources))
        self.lost.setdefault((life.label, publisher, topic), []).append((first, last))
        if len(sources) == 1:
            # Reports about different lives of a publisher may overlap: each life numbers anew.
            reported = self.lost_of_life.setdefault((life.label, sources[0].label, topic), [])
            if any(first <= b and a <= last for a, b in reported):
                known = self.loss_bug(life, sources)
                self.violation(f"{what}, overlapping an earlier report {reported}", known)
            reported.append((first, last))

    def loss_bug(self, life: Life, sources: list[Life]) -> str | None:
        """The known bug a wrong loss report about one of ``sources`` may come from."""
        return next((k for k in (self.stream_bug(life, x) for x in sources) if k), None)

    # ------------------------------------------------------------ membership

    def sample(self) -> bool:
        """Every 10 ms of virtual time: who sees whom as live, down, left, removed or purged."""
        now = self.now
        removal_s = self.config.node_config.down_member_expiry_s - SAMPLING_MARGIN_S
        for life in self.current.values():
            if life.ended:
                continue
            previous = life.sampled
            records = {m.node_id: m for m in life.node.members()}
            for node_id in previous.keys() | records.keys():
                if node_id == life.node_id:
                    continue
                record = records.get(node_id)
                key = (life.label, node_id)
                if record is None or not record.status.is_live:
                    self.not_live[key] = now
                    since = self.down_since.setdefault(key, now)
                    if record is not None and now - since >= removal_s:
                        self.long_down.add(record.incarnation)
                else:
                    self.down_since.pop(key, None)
                if record is None or record.status in GONE:
                    seen = record or previous.get(node_id)
                    if seen is not None:
                        self.gone.add((life.label, seen.incarnation))
            life.sampled = records
        return False

    def observe_view(self, life: Life) -> None:
        previous = life.view
        view: dict[str, tuple[int, int, MemberStatus]] = {}
        for member in life.node.members():
            record = (member.incarnation, member.version, member.status)
            view[member.node_id] = record
            subject = next((x for x in self.lives if x.incarnation == member.incarnation), None)
            if subject is None or subject.node_id != member.node_id:
                self.violation(f"{life.label} sees an incarnation that never ran: {member}")
                continue
            if subject is life:
                if member.status in (MemberStatus.SUSPECT, MemberStatus.DOWN, *GONE):
                    self.violation(f"{life.label} sees itself as {member}")
                continue
            before = previous.get(member.node_id)
            if before is not None and record < before and before[2] is not MemberStatus.REMOVED:
                self.violation(
                    f"{life.label}'s record of {member.node_id} went back from {before} to {record}"
                )
            leaving = member.status in (MemberStatus.LEAVING, MemberStatus.LEFT)
            if leaving and subject.ended not in STOPPED:
                self.violation(f"{life.label} sees {member} but it was never stopped")
        own = view.get(life.node_id)
        if own is None or own[0] != life.incarnation:
            self.violation(f"{life.label} does not hold its own record: {own}")
        life.view = view

    # ------------------------------------------------------------ checking

    def check(self) -> None:
        """After every step: read what happened since the last one, and check it."""
        for life in self.lives:
            self.observe_sends(life)
            self.observe_publications(life)
            if life.ended == "":
                self.observe_view(life)
        if self.violations:
            raise Violation("\n".join(self.violations[:12]))

    def advance(self, seconds: float) -> None:
        self.net.run_until(self.sample, seconds)  # sample() never holds: runs it all
        self.check()

    def step(self, faults: bool, traffic: bool) -> None:
        config = self.config
        if faults and config.faults and self.rng.random() < config.fault_rate:
            self.fault()
        if traffic:
            self.traffic(config.sends_per_step, config.publications_per_step)
        self.advance(self.rng.uniform(*STEP_S))

    def run_until(self, predicate: Callable[[], bool], bound_s: float) -> bool:
        """Run in steps, checking invariants after each, until ``predicate()`` or the bound."""
        deadline = self.now + bound_s
        while not predicate():
            if self.now >= deadline - 1e-9:
                return False
            self.advance(min(self.rng.uniform(*STEP_S), deadline - self.now))
        return True

    def converged(self) -> bool:
        running = self.running()
        ids = {life.node_id for life in running}
        for life in running:
            view = life.node.view()
            if any(view.get(other) is not MemberStatus.UP for other in ids):
                return False
            for gone in set(self.config.node_ids) - ids:
                status = view.get(gone)
                if status is not None and status.is_live:
                    return False
        return self.net.views_agree()

    def unconfirmed(self) -> list[tuple[Life, Life, str]]:
        """(reader, publisher, topic): running nodes missing from ``subscribers(topic)``."""
        return [
            (reader, publisher, topic)
            for reader in self.running()
            for topic in reader.reads
            for publisher in self.running()
            if publisher is not reader
            and reader.node_id not in publisher.node.core.subscribers(topic)
        ]

    def unrepaired(self) -> list[tuple[Pub, Life]]:
        """Publications a running subscriber was confirmed for, neither delivered nor lost."""
        missing = []
        for pub in self.pubs.values():
            if not pub.publisher.running:
                continue
            for label in pub.confirmed:
                reader = self.current[label.rsplit(".", 1)[0]]
                if reader.label != label or not reader.running:
                    continue
                if pub.seq in self.got.get((label, pub.publisher.label, pub.topic), ()):
                    continue
                losses = self.lost.get((label, pub.publisher.node_id, pub.topic), ())
                if not any(a <= pub.seq <= b for a, b in losses):
                    missing.append((pub, reader))
        return missing

    # ------------------------------------------------------------ the run

    def run(self) -> None:
        config, net = self.config, self.net
        for i, node_id in enumerate(config.node_ids):
            # Every earlier node is a seed, so any split has a seed on the other side.
            self.start(node_id, tuple(life.node.core.address for life in self.lives[:i]))
        if not self.run_until(self.converged, 20):
            raise Violation("the cluster did not form")
        net.set_conditions(self.base)
        self.note("faults begin")
        for _ in range(config.steps):
            self.step(faults=True, traffic=True)

        # Faults stop: heal, no more loss (latency, jitter, duplication and reordering
        # stay), and maybe restart what is down. Probes sent before the heal may still
        # time out; after that, views must converge, within a bound that includes meeting
        # again through the seeds if a node was down long enough to be removed.
        net.set_conditions(dataclasses.replace(self.base, packet_loss_rate=0.0))
        self.note("faults end")
        if config.restart_at_end:
            for life in list(self.current.values()):
                if not life.running:
                    self.restart(life.node_id)
        faults_end = self.now
        node_config = config.node_config
        self.run_until(lambda: False, node_config.failure_detection_bound_s)
        bound = CONVERGENCE_BOUND_S
        if self.not_live:
            bound += node_config.seed_contact_interval_s
        if not self.run_until(self.converged, bound):
            raise Violation(f"views did not converge within {bound}s: {self.views()}")
        self.stats["convergence_ms"] = round(1000 * (self.now - faults_end))
        self.note("converged")

        # Every send made so far ends within its ttl (checked at each step).
        last = max((s.deadline for s in self.sends.values() if s.status is None), default=0.0)
        self.run_until(lambda: False, max(0.0, last - self.now) + 0.2)

        # Subscriptions are confirmed again.
        self.run_until(lambda: not self.unconfirmed(), 5.0)
        for reader, publisher, topic in self.unconfirmed():
            what = f"{reader.label} not in {publisher.label}.subscribers({topic!r})"
            self.violation(f"on a quiet network {what}")

        # A quiet cluster delivers: sends between running nodes, and publications.
        quiet: list[Sent] = []
        for sender in self.running():
            for receiver in self.running():
                if config.direct and sender is not receiver:
                    guarantee = self.rng.choice(config.direct)
                    quiet.append(self.send(sender, receiver.node_id, guarantee, max(config.ttls)))
            for topic in config.topics if config.publish else ():
                self.publish(sender, topic, self.rng.choice(config.publish))
        # A receiver following fewer senders than it has forgets and relearns streams all
        # the time (documented): its messages may then run again and again and expire.
        thrashing = config.node_config.inbound_streams_max_count < len(self.running()) - 1
        bound = max(config.ttls) + 1.0 if thrashing else QUIET_DELIVERY_BOUND_S
        self.run_until(lambda: all(s.status is not None for s in quiet), bound)
        for sent in quiet:
            if sent.fails or (thrashing and sent.status is not None):
                continue
            if sent.status is None or sent.status[0] is not AckStatus.DELIVERED:
                self.violation(f"on a quiet network {sent.payload!r} ended {sent.status}")

        # Every publication a running subscriber was confirmed for: delivered or lost. A
        # stream fetches at most fetch_max_count publications every fetch_retry_s, and its
        # gap may hold everything its publisher published on the topic.
        gap = max((p.publisher.published[p.topic] for p, _ in self.unrepaired()), default=0)
        rounds = -(-gap // config.node_config.fetch_max_count)
        bound = REPAIR_BOUND_S + rounds * config.node_config.fetch_retry_s
        self.run_until(lambda: not self.unrepaired(), bound)
        for pub, reader in self.unrepaired():
            what = f"{reader.label} never got nor lost {pub.publisher.label}|{pub.topic}|{pub.seq}"
            self.violation(what, self.stream_bug(reader, pub.publisher))
        self.check()

        # Stability: nobody running is suspected, or missing, while the network is quiet.
        deadline = self.now + STABILITY_S
        while self.now < deadline:
            self.step(faults=False, traffic=False)
            if not self.converged():
                raise Violation(f"views diverged on a quiet network: {self.views()}")

    def views(self) -> dict[str, dict[str, str]]:
        return {
            life.label: {m.node_id: f"{m.status}@{m.incarnation}" for m in life.node.members()}
            for life in self.running()
        }


def failure_report(swarm: Swarm, problem: BaseException) -> str:
    config = swarm.config
    tail = "\n    ".join(swarm.log[-40:])
    known = "".join(f"\n  {k} x{n}: {swarm.known_examples[k]}" for k, n in swarm.known.items())
    return (
        f"swarm seed {config.seed} failed at virtual t={swarm.now:.3f}s:\n{problem}\n\n"
        f"configuration:\n  {config.describe()}\n"
        f"schedule (last {min(40, len(swarm.log))} of {len(swarm.log)} events):\n    {tail}\n"
        f"known bugs met before (tolerated):{known or ' none'}\n"
        f"rerun exactly this seed: {f'{STRICT_ENV}=1 ' if swarm.strict else ''}"
        f"{SEED_ENV}={config.seed} .venv/bin/python -m pytest tests/sim/test_swarm.py"
    )


def run_swarm(seed: int) -> Swarm:
    strict = os.environ.get(STRICT_ENV, "") not in ("", "0")
    swarm = Swarm(draw_config(seed), strict=strict)
    try:
        swarm.run()
    except AssertionError as exc:  # our Violations, and the simulator's own checks
        raise AssertionError(failure_report(swarm, exc)) from exc
    return swarm


# ====================================================================== the tests


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", chosen_seeds(DEFAULT_SEEDS))
def test_swarm(seed: int) -> None:
    run_swarm(seed)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", chosen_seeds(SLOW_SEEDS))
def test_swarm_long_sweep(seed: int) -> None:
    run_swarm(seed)


def test_a_swarm_seed_replays_exactly() -> None:
    runs = [run_swarm(7) for _ in range(2)]
    first, again = (
        (swarm.net.trace_digest(), sorted(swarm.stats.items()), sorted(swarm.known.items()))
        for swarm in runs
    )
    assert first == again


def test_the_default_seeds_draw_every_feature() -> None:
    """Swarm testing only helps if the seeds spread: every option appears in the default run."""
    configs = [draw_config(seed) for seed in DEFAULT_SEEDS]
    assert {len(c.node_ids) for c in configs} == set(range(3, 8))
    assert {g for c in configs for g in c.direct} == set(RELIABLE)
    assert {g for c in configs for g in c.publish} == set(RELIABLE)
    assert {k for c in configs for k in c.faults} == set(FAULT_KINDS)
    assert any(not c.direct for c in configs) and any(not c.publish for c in configs)
    assert any(c.node_config.inbound_streams_max_count == 2 for c in configs)
    assert any(c.node_config.down_member_expiry_s == 2.0 for c in configs)
    assert any(c.conditions.packet_loss_rate == 0.25 for c in configs)
    assert any(c.conditions.duplicate_rate and c.conditions.reorder_rate for c in configs)
    assert any(c.restart_at_end for c in configs) and any(c.failing_rate for c in configs)
    assert {c.handler_delay_s for c in configs} == {0.0, 0.005, 0.05}
    assert any(replay for c in configs for reads in c.reads.values() for _, replay in reads)


def test_the_seed_variable_selects_exactly_those_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SEED_ENV, "17, 4")
    assert chosen_seeds(range(100)) == [17, 4]
    monkeypatch.delenv(SEED_ENV)
    assert chosen_seeds(range(3)) == [0, 1, 2]


def test_a_failure_names_the_seed_the_configuration_and_how_to_rerun_it() -> None:
    class Breaks(Swarm):
        def check(self) -> None:
            if self.now > 1.0:
                self.violation("something broke")
            super().check()

    swarm = Breaks(draw_config(12))
    with pytest.raises(Violation) as caught:
        swarm.run()
    report = failure_report(swarm, caught.value)
    assert "swarm seed 12 failed at virtual t=" in report and "something broke" in report
    assert swarm.config.describe() in report and "faults begin" in report
    assert f"{SEED_ENV}=12 " in report and "tests/sim/test_swarm.py" in report


# ---------------------------------------------------------------------- the oracle itself


def sabotaged_config() -> SwarmConfig:
    """A busy run with every guarantee and a quiet network, for the tests below."""
    return dataclasses.replace(
        draw_config(3),
        direct=RELIABLE,
        publish=RELIABLE,
        faults=("stop",),
        fault_rate=0.02,
        failing_rate=0.0,
        steps=60,
        reads={f"n{i}": (("t0", False),) for i in range(7)},
    )


def expect_violation(swarm: Swarm, match: str) -> None:
    with pytest.raises(Violation, match=match):
        swarm.run()


def test_the_oracle_notices_an_exactly_once_handler_run_twice() -> None:
    class RunsTwice(Swarm):
        def ran(self, receiver: Life, sender_id: str, payload: bytes) -> None:
            super().ran(receiver, sender_id, payload)
            if self.sends[payload].guarantee is G.EXACTLY_ONCE:
                super().ran(receiver, sender_id, payload)

    expect_violation(RunsTwice(sabotaged_config()), "EXACTLY_ONCE .* ran 2 times")


def test_the_oracle_notices_an_ordered_message_run_out_of_order() -> None:
    class RunsTheOneBefore(Swarm):
        def ran(self, receiver: Life, sender_id: str, payload: bytes) -> None:
            super().ran(receiver, sender_id, payload)
            sent = self.sends[payload]
            before = f"{sent.sender.label}>{sent.receiver}#{sent.index - 1}".encode()
            if sent.guarantee is G.ORDERED and before in self.sends:
                super().ran(receiver, sender_id, before)  # again, after a later ORDERED one

    expect_violation(RunsTheOneBefore(sabotaged_config()), "after ORDERED")


def test_the_oracle_notices_delivered_without_a_handler_run() -> None:
    class Forgets(Swarm):
        def ran(self, receiver: Life, sender_id: str, payload: bytes) -> None:
            if self.stats["runs"] < 5:
                super().ran(receiver, sender_id, payload)

    expect_violation(Forgets(sabotaged_config()), "DELIVERED but no handler returned")


def test_the_oracle_notices_a_publication_delivered_twice() -> None:
    class Doubles(Swarm):
        def check(self) -> None:
            for life in self.lives:
                mine = [d for d in life.node.delivered[life.delivered_seen :] if d[1] != HANDLER]
                if mine:
                    life.node.delivered.append(mine[0])
            super().check()

    expect_violation(Doubles(sabotaged_config()), "twice")


def test_the_oracle_notices_a_publication_neither_delivered_nor_lost() -> None:
    class Drops(Swarm):
        def check(self) -> None:
            for life in self.lives:
                delivered = life.node.delivered
                for i in range(life.delivered_seen, len(delivered)):
                    if delivered[i][1] != HANDLER and delivered[i][2].endswith(b"|5"):
                        delivered[i] = (delivered[i][0], HANDLER, b"")  # as if never delivered
            super().check()

    expect_violation(Drops(sabotaged_config()), "never got nor lost")


def test_the_oracle_notices_a_left_member_that_never_left() -> None:
    class Hides(Swarm):
        def stop(self, life: Life) -> None:
            self.net.stop(life.node_id)
            life.ended = "crash"  # the oracle believes it crashed

    expect_violation(Hides(sabotaged_config()), "never stopped")
