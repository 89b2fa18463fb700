"""Every default, bound and timeout of a node, in one place.

Units are part of the names: ``*_s`` seconds, ``*_count`` items, ``*_bytes``.
Values are validated once, when a :class:`NodeConfig` is built, so a bad
setting fails at start-up with a :class:`~zcluster.errors.ConfigError`
instead of misbehaving later.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from zcluster.errors import ConfigError
from zcluster.protocol.messages import MAX_BATCH_COUNT, MAX_SUSPECTERS_COUNT

ENV_PREFIX = "ZCLUSTER_"


@dataclasses.dataclass(frozen=True, slots=True)
class NodeConfig:
    """Tunable settings of one node. Defaults suit a LAN or loopback cluster."""

    # --- failure detection (docs/architecture.md, "Failure detection") ---
    #: while a live member does not speak swim, a heartbeat goes out on PUB this often
    heartbeat_interval_s: float = 0.2
    #: silence from a member that does not speak swim longer than this starts a probe
    heartbeat_timeout_s: float = 0.8
    #: one member that speaks swim, in shuffled rounds, is probed this often
    probe_interval_s: float = 0.2
    #: a probe's direct PING unanswered this long is tried through other members (PING_REQ)
    direct_probe_timeout_s: float = 0.1
    #: a direct + indirect probe must be answered within this
    probe_timeout_s: float = 0.4
    #: members asked to probe a member on our behalf
    indirect_probe_count: int = 3
    #: a suspect member that stays silent this long is declared down: the shortest suspicion,
    #: once suspect_confirmations_count other members suspect it too (and the only one for
    #: members that do not speak swim)
    suspect_timeout_s: float = 0.8
    #: the longest suspicion, while no other member confirms it (members that speak swim;
    #: never shorter than suspect_timeout_s)
    suspect_timeout_max_s: float = 2.0
    #: independent suspicions that bring a suspicion down to suspect_timeout_s
    suspect_confirmations_count: int = 3
    #: a node that misses answers or must refute suspicions of itself probes more slowly and
    #: waits longer, up to (1 + this) times the probe settings (Lifeguard's local health)
    local_health_max_count: int = 8
    #: what subscribers send a node's PUB (subscriptions) is taken at most this often:
    #: up to the ROUTER's high-water mark of them per connection each time
    subscriptions_take_interval_s: float = 0.005
    #: the core's timer granularity; every time-based step runs on this tick
    tick_interval_s: float = 0.05

    # --- gossip and membership ---
    #: how many heartbeats carry each membership change; times ceil(log10(members + 1)),
    #: how many probe and gossip messages carry each change a node applies (swim)
    gossip_retransmit_count: int = 4
    #: most membership records piggybacked on one heartbeat, probe or gossip message
    gossip_records_per_heartbeat_count: int = 64
    #: while it has news (swim), a node pushes it to gossip_fanout_count random members
    #: this often
    gossip_interval_s: float = 0.1
    gossip_fanout_count: int = 3
    #: full-state push-pull with one random member this often (anti-entropy safety net)
    sync_interval_s: float = 10.0
    #: ... times ceil(live members / this): what a table push-pull costs grows with the
    #: cluster, what the safety net costs a node per second does not
    sync_interval_members_count: int = 100
    #: a heartbeat whose view digest differs from ours starts a push-pull with its
    #: sender, at most this often
    divergence_sync_interval_s: float = 1.0
    #: while not joined, seeds are contacted again this often
    join_retry_interval_s: float = 0.5
    #: down members (and seeds, when alone) are contacted this often so that
    #: healed partitions merge back
    reconnect_interval_s: float = 1.0
    #: seeds that are not live members are contacted this often, so that clusters
    #: split for longer than down_member_expiry_s still merge back
    seed_contact_interval_s: float = 30.0
    #: reconnect attempts go to this many of the most recently down members
    reconnect_candidates_count: int = 16
    #: most members one node keeps in its table (tombstones included)
    members_max_count: int = 10_000
    #: a down member is kept (and reconnect attempts made) this long, then removed
    down_member_expiry_s: float = 3600.0
    #: a member that left is kept this long before it is removed
    left_member_expiry_s: float = 30.0
    #: a removed member's tombstone blocks stale gossip this long, then is purged
    removed_tombstone_s: float = 60.0
    #: a graceful stop lets running handlers of guaranteed messages finish for at most this
    #: long, then announces leaving; it waits as long again to be confirmed left
    leave_timeout_s: float = 1.0
    #: a join by a new incarnation of a live member waits this long for the live one to
    #: answer: if it does, the join is refused (its id is in use); if not, it is a restart
    id_claim_timeout_s: float = 1.0
    #: a graceful stop waits at most this long for its guaranteed sends to be acknowledged
    #: and its subscribers to confirm they hold every publication (docs/delivery.md)
    drain_timeout_s: float = 30.0
    #: while it waits, a FLUSH goes again this often to subscribers yet to confirm
    drain_retry_s: float = 0.25

    # --- answers (docs/architecture.md, "Answers") ---
    #: answers to non-members (ACK, REPLY, REFUSE, a table), all together, at most this
    #: many a second: their reply addresses are only claims
    stranger_answers_per_s: float = 200.0
    #: answers that carry this node's member table (SYNC replies), at most this many a
    #: second: a small SYNC asks for up to max_header_bytes
    table_answers_per_s: float = 50.0
    #: publications resent to one member (its FETCHes), at most this many a second
    member_resends_per_s: float = 16_384.0

    # --- messaging ---
    #: default timeout of request()
    request_timeout_s: float = 5.0
    #: most requests awaiting a reply at once
    pending_requests_max_count: int = 10_000
    #: largest frame accepted or sent (also set as zmq.MAXMSGSIZE); with
    #: max_header_bytes and receive_queue_max_bytes it sets how many messages ZeroMQ
    #: queues per connection
    max_message_bytes: int = 1024 * 1024
    #: publications with a payload up to this size go out as one frame when every member
    #: reads that form (ZeroMQ's cost is per frame); larger ones as three, with no copy
    one_frame_max_bytes: int = 64 * 1024
    #: largest header frame accepted
    max_header_bytes: int = 1024 * 1024
    #: most topics one node subscribes to
    subscriptions_max_count: int = 10_000

    # --- delivery guarantees (docs/delivery.md) ---
    #: a guaranteed send that is not acknowledged within this ends EXPIRED (ttl= overrides)
    message_ttl_s: float = 60.0
    #: first retransmission of an unacknowledged message after this (then doubling)
    retry_initial_s: float = 0.2
    #: retransmissions back off to at most this interval
    retry_max_s: float = 2.0
    #: unacknowledged guaranteed messages per receiver; also each stream's receive window
    outbox_max_count: int = 10_000
    #: a send to a full outbox waits this long for room, then raises Backpressure
    send_block_timeout_s: float = 10.0
    #: exactly-once: message ids remembered per receiver, at most this many ...
    dedup_window_max_count: int = 100_000
    #: ... so that a copy arriving within this of being sent is recognised (it must cover
    #: message_ttl_s and every EXACTLY_ONCE ttl; ids are kept for dedup_retention_s)
    dedup_window_s: float = 300.0
    #: senders whose streams a receiver tracks; the least recently heard is forgotten
    inbound_streams_max_count: int = 10_000
    #: guaranteed messages to one receiver that leave together, in one DATA_BATCH, at most
    #: (those sent while the first of a burst travels; docs/delivery.md) ...
    data_batch_max_count: int = 64
    #: ... and bytes in one DATA_BATCH, payloads and records, at most (never beyond
    #: max_message_bytes nor max_header_bytes; a larger message leaves alone)
    data_batch_max_bytes: int = 65_536
    #: sequence numbers acknowledged selectively (above a gap) in one acknowledgement
    ack_selective_max_count: int = 1024
    #: guaranteed publications kept per topic for subscribers that missed them
    retransmit_buffer_count: int = 10_000
    #: topics one node publishes with a guarantee
    published_topics_max_count: int = 10_000
    #: topics whose latest sequence number rides on each heartbeat (most recent first)
    heartbeat_topics_max_count: int = 256
    #: publications asked for (and resent) in one fetch
    fetch_max_count: int = 1024
    #: a gap still open this long after a fetch is fetched again
    fetch_retry_s: float = 0.3
    #: telling a publisher which topics we read is repeated this often until it answers
    listen_retry_s: float = 0.5
    #: a subscriber counts as confirmed (``subscribers()``) this long after its LISTEN,
    #: time for its SUB's subscription, which travels on another connection, to arrive
    listen_settle_s: float = 0.05
    #: a subscriber holds back at most this many publications behind one gap
    topic_holdback_max_count: int = 10_000
    #: with a state_dir: exactly-once messages handed to handlers and not finished, at
    #: most (a crash cuts these short: they are not run again); the next wait their turn
    exactly_once_in_hand_max_count: int = 64
    #: payload bytes held back behind gaps (ORDERED), at most, over every stream: this much
    #: for guaranteed sends and as much for publications; past it, their senders send again
    holdback_max_bytes: int = 64 * 1024 * 1024
    #: (publisher, topic) streams one subscriber tracks; the least recently heard goes
    topic_streams_max_count: int = 100_000
    #: CAUSAL: dependencies one message carries (and a receiver accepts), at most; past it,
    #: the dependencies learned longest ago are dropped (counted)
    causal_dependencies_max_count: int = 1024
    #: CAUSAL: a dependency is carried this long after this node learned of it; by then its
    #: message was delivered, expired or reported lost (it must cover message_ttl_s)
    causal_dependency_retention_s: float = 120.0
    #: CAUSAL: a message waits at most this long for the messages it depends on, then is
    #: delivered without them (reported: causal_released_unmet)
    causal_hold_max_s: float = 30.0
    #: CAUSAL: messages waiting for their dependencies, at most this many and ...
    causal_holdback_max_count: int = 10_000
    #: ... this many payload bytes; past either, the one waiting longest is delivered
    causal_holdback_max_bytes: int = 64 * 1024 * 1024
    #: TRANSACTIONAL: a transaction not voted on by every target within this aborts
    #: (timeout= overrides) ...
    transaction_timeout_s: float = 10.0
    #: ... and a participant holds a prepared message for at most this long a timeout
    transaction_timeout_max_s: float = 300.0
    #: TRANSACTIONAL: PREPARE, a decision and a question are sent again this often until
    #: answered
    transaction_retry_s: float = 0.5
    #: TRANSACTIONAL: a prepared participant asks for the decision this long after the
    #: timeout, if it has not heard it
    transaction_decision_grace_s: float = 1.0
    #: TRANSACTIONAL: a prepared participant that cannot learn the decision aborts this
    #: long after it voted (the blocking window of two-phase commit; reported)
    transaction_in_doubt_max_s: float = 60.0
    #: TRANSACTIONAL: decisions are kept this long to answer late questions and copies
    #: (at least as long as a participant may still ask: the longest timeout, the grace and
    #: the in-doubt time)
    transaction_memory_s: float = 600.0
    #: TRANSACTIONAL: transactions in progress on one node, coordinated and taken part in
    transactions_max_count: int = 10_000
    #: TRANSACTIONAL: decisions a participant remembers (the oldest go first)
    transactions_remembered_max_count: int = 100_000
    #: TRANSACTIONAL: payload bytes of the transactions a participant holds, at most; past
    #: it a PREPARE is refused
    transactions_held_max_bytes: int = 64 * 1024 * 1024

    # --- sockets and queues ---
    #: ZeroMQ high-water mark (messages queued per subscriber) of the PUB
    pubsub_hwm_count: int = 100_000
    #: ZeroMQ high-water mark (messages queued per connection) of each DEALER
    direct_hwm_count: int = 10_000
    #: what ZeroMQ holds received from one connection to the ROUTER or the PUB at most:
    #: the ROUTER's high-water mark, set before binding, is this divided by the largest
    #: message (a header and a payload: 4 by default; direct sends keep their pace with
    #: 4), the PUB's this divided by what one subscription may hold (docs/architecture.md,
    #: "Memory")
    receive_queue_max_bytes: int = 8 * 1024 * 1024
    #: ... and from every connection together: a connection is let in at its handshake
    #: only while there is room for one more such queue (256 with the defaults)
    receive_queues_max_bytes: int = 2 * 1024 * 1024 * 1024
    #: connections to the ROUTER and the PUB from one address, let in at most (each
    #: node holds two to each member); past it or the total, a new one waits in its
    #: handshake for room, then is closed and tried again by its client
    inbound_connections_per_address_max_count: int = 256
    #: while connections wait for room, a warning says so at most this often
    connections_held_log_interval_s: float = 60.0
    #: what ZeroMQ holds received from one publisher on the SUB (members' PUBs only):
    #: fan-out needs about a thousand messages of queue to keep its pace (256 cost its
    #: guaranteed publications about a tenth, 64 a quarter, measured): 1,024 by default
    subscribe_queue_max_bytes: int = 2 * 1024 * 1024 * 1024
    #: payload bytes of received messages waiting for handlers and subscribers, at most ...
    callback_queue_max_bytes: int = 256 * 1024 * 1024
    #: ... and of those, one sender's (all non-members together count as one sender)
    callback_queue_sender_max_bytes: int = 32 * 1024 * 1024
    #: a publication that finds a subscriber's queue full waits this long for room, then
    #: goes to the others and is dropped for that subscriber (zcluster/runtime/lane.py)
    publish_block_max_s: float = 10.0
    #: linger of every socket at close
    socket_linger_s: float = 0.2
    #: a failing handler's or callback's traceback is logged at most once per this; the
    #: failures in between are counted (callback_errors) and told with the next report
    callback_error_log_interval_s: float = 10.0
    #: messages read from one socket before yielding to other work ...
    receive_batch_count: int = 256
    #: ... or as long as this, whichever comes first (timers and the other socket wait)
    receive_batch_max_s: float = 0.005
    #: calls queued from the blocking API to the node's loop before callers wait
    submit_queue_max_count: int = 50_000
    #: received messages queued for blocking-API callbacks before reading pauses
    callback_queue_max_count: int = 50_000
    #: while no seed has admitted the node, a warning says so this often
    join_warning_interval_s: float = 5.0
    #: while no seed admits the node, each warning connects to each seed for at most this
    #: long to say what is there (nothing, another program, a PUB port, a node)
    seed_check_timeout_s: float = 3.0
    #: start() waits this long for a seed to admit the node
    join_timeout_s: float = 10.0
    #: a blocking call into the node's loop (stop, members, ...) gives up after this
    control_call_timeout_s: float = 10.0
    #: most ZeroMQ sockets of one node (one per member, plus a few); libzmq's default is 1023
    sockets_max_count: int = 4096
    #: connections to non-members (seeds, requesters) close after this idle time
    idle_connection_s: float = 30.0
    #: most open connections to non-members; the least recently used closes first
    non_member_connections_max_count: int = 256
    #: memory freed after a burst (large frames, a flood) is given back to the system this
    #: often (glibc's malloc_trim; runtime/memory.py)
    memory_trim_interval_s: float = 10.0
    #: connections to the ROUTER and the PUB whose close libzmq did not report are looked
    #: for this often (their descriptors asked who is at the other end)
    inbound_connections_check_s: float = 10.0
    #: ZMTP-level heartbeat that drops dead TCP connections (complements detection)
    zmtp_heartbeat_s: float = 1.0

    # --- security (docs/security.md) ---
    #: a connection's handshake (and its ZAP verdict) must finish within this; one kept
    #: waiting for longer is closed and tried again by its client
    auth_handshake_timeout_s: float = 5.0
    #: refused handshakes from one address: past this rate (and a burst as large), its
    #: handshakes are refused without being examined
    auth_failures_per_s: float = 20.0
    #: clock difference tolerated when checking a token's exp, nbf and iat
    auth_token_leeway_s: float = 30.0
    #: how long the tokens this node makes for itself are valid (short: each one-time
    #: token's id is remembered by its receiver until it expires)
    auth_token_ttl_s: float = 120.0
    #: one-time token ids remembered (until they expire) to refuse a replayed handshake
    auth_replay_max_count: int = 100_000
    #: connections bound to a node id by AUTH, remembered at most (the least recently
    #: bound forgotten first: its node says AUTH again within auth_resend_interval_s)
    auth_bindings_max_count: int = 16_384
    #: a connection says AUTH again this often (and when half its credential's life
    #: has passed), so that a peer that forgot it learns it again
    auth_resend_interval_s: float = 30.0
    #: handshakes to our PUB held until their client's AUTH arrives, at most
    auth_pending_max_count: int = 1024
    #: key and token files are checked for changes this often, and read once a change
    #: has settled (unchanged at the next check; also read on SIGHUP)
    auth_reload_interval_s: float = 2.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{field.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{field.name} must be a finite number, got {value!r}")
            if field.name.endswith("_count") or field.name.endswith("_bytes"):
                if not isinstance(value, int):
                    raise ConfigError(f"{field.name} must be an integer, got {value!r}")
                if value < 1:
                    raise ConfigError(f"{field.name} must be at least 1, got {value}")
            elif value <= 0:
                raise ConfigError(f"{field.name} must be positive, got {value}")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ConfigError("heartbeat_timeout_s must exceed heartbeat_interval_s")
        if self.retry_initial_s > self.retry_max_s:
            raise ConfigError("retry_initial_s must not exceed retry_max_s")
        if self.message_ttl_s > self.dedup_window_s:
            raise ConfigError(
                "message_ttl_s must not exceed dedup_window_s, or exactly-once could not "
                "recognise a late retransmission"
            )
        asking_s = (
            self.transaction_timeout_max_s
            + self.transaction_decision_grace_s
            + self.transaction_in_doubt_max_s
        )
        if self.transaction_memory_s < asking_s:
            raise ConfigError(
                "transaction_memory_s must cover transaction_timeout_max_s + "
                "transaction_decision_grace_s + transaction_in_doubt_max_s: a participant "
                "may ask that long about a decision, which must still be known"
            )
        if self.transaction_timeout_s > self.transaction_timeout_max_s:
            raise ConfigError("transaction_timeout_s must not exceed transaction_timeout_max_s")
        if self.causal_dependency_retention_s < self.message_ttl_s:
            raise ConfigError(
                "causal_dependency_retention_s must cover message_ttl_s, or a CAUSAL message "
                "could stop naming a predecessor that may still arrive"
            )
        if self.tick_interval_s > min(self.heartbeat_interval_s, self.probe_interval_s):
            raise ConfigError(
                "tick_interval_s must not exceed heartbeat_interval_s or probe_interval_s"
            )
        if self.direct_probe_timeout_s >= self.probe_timeout_s:
            raise ConfigError("direct_probe_timeout_s must be shorter than probe_timeout_s")
        if self.max_header_bytes > self.max_message_bytes:
            raise ConfigError("max_header_bytes must not exceed max_message_bytes")
        for queue in ("receive_queue_max_bytes", "subscribe_queue_max_bytes"):
            if getattr(self, queue) < self.message_max_bytes:
                raise ConfigError(
                    f"{queue} must hold one message: max_header_bytes + max_message_bytes"
                )
        if self.receive_queues_max_bytes < self.receive_queue_max_bytes:
            raise ConfigError("receive_queues_max_bytes must be at least receive_queue_max_bytes")
        if self.callback_queue_sender_max_bytes > self.callback_queue_max_bytes:
            raise ConfigError(
                "callback_queue_sender_max_bytes must not exceed callback_queue_max_bytes"
            )
        if self.data_batch_max_count > MAX_BATCH_COUNT:
            raise ConfigError(f"data_batch_max_count must be at most {MAX_BATCH_COUNT}")
        if self.suspect_confirmations_count >= MAX_SUSPECTERS_COUNT:
            # news names the suspecters, at most MAX_SUSPECTERS_COUNT of them on the wire
            raise ConfigError(f"suspect_confirmations_count must be below {MAX_SUSPECTERS_COUNT}")

    @property
    def graceful_stop_max_s(self) -> float:
        """The longest a graceful stop takes: handlers finishing and deliveries confirmed,
        then leaving."""
        drain_s = max(self.leave_timeout_s, self.drain_timeout_s)
        return drain_s + self.leave_timeout_s + self.heartbeat_interval_s

    @property
    def message_max_bytes(self) -> int:
        """The largest message ZeroMQ may queue: a header frame and a payload frame at
        their largest (its topic or routing frame, at most a few KiB, aside). libzmq
        counts its high-water marks in messages, whatever their frames."""
        return self.max_header_bytes + self.max_message_bytes

    @property
    def receive_hwm_count(self) -> int:
        """ZeroMQ's high-water mark of the ROUTER: what one connection may have queued, at
        the largest message size, stays within receive_queue_max_bytes."""
        return self.receive_queue_max_bytes // self.message_max_bytes

    def peer_memory_max_bytes(self, members_count: int) -> int:
        """The most memory what peers send can make the node hold when it reads this
        many members' PUBs (docs/architecture.md, "Memory"): ZeroMQ's receive queues,
        callbacks, one decode (about 64 bytes of Python objects per byte of a frame) and
        what waits behind gaps, dependencies and votes. The node's own queues (outboxes,
        retransmit buffers) come on top."""
        return (
            self.receive_queues_max_bytes
            + members_count * self.subscribe_queue_max_bytes
            + self.callback_queue_max_bytes
            + 64 * self.max_message_bytes
            + 2 * self.holdback_max_bytes
            + self.causal_holdback_max_bytes
            + self.transactions_held_max_bytes
        )

    @property
    def inbound_connections_max_count(self) -> int:
        """Connections to the ROUTER and the PUB let in at most: each one's queue within
        receive_queue_max_bytes, together within receive_queues_max_bytes."""
        return self.receive_queues_max_bytes // self.receive_queue_max_bytes

    @property
    def subscribe_hwm_count(self) -> int:
        """The SUB's, per publisher, within subscribe_queue_max_bytes."""
        return self.subscribe_queue_max_bytes // self.message_max_bytes

    @property
    def dedup_retention_s(self) -> float:
        """How long a receiver keeps an exactly-once id after its first copy arrived
        (and again after its handler finished).

        A sender sends no copy at or after the message's ttl, which for EXACTLY_ONCE is
        at most ``dedup_window_s`` (docs/protocol.md 6.10: also the receivers'), so every
        copy leaves within ``dedup_window_s`` of the first arrival; keeping the id as long
        again recognises every copy that spends less than ``dedup_window_s`` in transit.
        A receiver does not know the sender's ttl: it assumes the longest allowed.
        """
        return 2 * self.dedup_window_s

    @property
    def failure_detection_bound_s(self) -> float:
        """Worst case, on a quiet network, to a crashed member's ``down`` at the node that
        finds it: from its last heartbeat for a member that does not speak swim; for one
        that does, from the first probe it cannot answer, unconfirmed. (Such a probe comes
        soon: each probe interval, about one probe reaches any given member, so the first
        one within k intervals with probability about 1 - e^-k.)"""
        ticks = 3 * self.tick_interval_s
        heartbeats = self.heartbeat_timeout_s + self.probe_timeout_s + self.suspect_timeout_s
        probes = self.probe_timeout_s + max(self.suspect_timeout_s, self.suspect_timeout_max_s)
        return max(heartbeats, probes) + ticks

    def replace(self, **changes: Any) -> NodeConfig:
        """A copy with some settings changed (validated again)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ConfigError("; ".join(unknown_name(name, field_names()) for name in unknown))
        return dataclasses.replace(self, **changes)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(NodeConfig))


def unknown_name(name: str, known: Iterable[str], what: str = "setting") -> str:
    """``unknown setting 'x'``, with the closest known names when some are close."""
    return f"unknown {what} {name!r}{did_you_mean(name, known)}"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'y'?)`` for the known names close to ``name``; empty if none is."""
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _coerce(name: str, raw: object) -> float | int:
    """Turn a value from TOML or the environment into the field's type."""
    default = next(f.default for f in dataclasses.fields(NodeConfig) if f.name == name)
    want_int = isinstance(default, int)
    if isinstance(raw, bool):
        raise ConfigError(f"{name} must be a number, got {raw!r}")
    if isinstance(raw, int | float):
        value: float | int = raw
    elif isinstance(raw, str):
        try:
            value = int(raw) if want_int else float(raw)
        except ValueError:
            kind = "an integer" if want_int else "a number"
            raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    else:
        raise ConfigError(f"{name} must be a number, got {raw!r}")
    if want_int and not isinstance(value, int):
        if float(value).is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be an integer, got {raw!r}")
    return value


def tuning_from_mapping(values: Mapping[str, object], source: str) -> dict[str, float | int]:
    """Validate names and types of node tuning settings from one source."""
    known = set(field_names())
    out: dict[str, float | int] = {}
    for key, raw in values.items():
        if key not in known:
            raise ConfigError(f"{source}: {unknown_name(key, known)}")
        out[key] = _coerce(key, raw)
    return out


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML config file; errors name the file and say what is wrong."""
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def env_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """``ZCLUSTER_*`` variables, lower-cased without the prefix."""
    return {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and value != ""
    }
