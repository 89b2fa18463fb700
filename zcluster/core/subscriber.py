"""The subscribing side of fan-out: filters, LISTEN, gap repair and loss reports.

A subscriber tells each publisher which topics it reads (LISTEN, with the
first heartbeat of each publisher incarnation and again on every change),
until the publisher answers (LISTENING) with where each stream starts.
Numbered publications go through ``topics.Subscriptions``, which finds
gaps (also from the numbers heartbeats carry, so tail loss shows), fetches
them and reports what can never come.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import Command, Component, NodeContext, Receiver
from zcluster.core.publications import Publication
from zcluster.core.topics import Subscriptions
from zcluster.protocol import messages as msg
from zcluster.protocol.capabilities import PREFIX
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member

CAUSAL = DeliveryGuarantee.CAUSAL
#: a CAUSAL publication delivered by its stream: (publisher, incarnation, topic, seq,
#: payload, now); causal.py delivers it once what it depends on is
CausalArrived = Callable[[str, int, str, int, bytes, float], None]


class Subscriber(Component):
    def __init__(self, ctx: NodeContext, causal_arrived: CausalArrived) -> None:
        self._ctx = ctx
        self._causal_arrived = causal_arrived
        self.subscriptions = Subscriptions(ctx.config, ctx.counters)
        self._topics: set[str] = set()
        #: prefixes of topics read, in the order subscribed
        self._prefixes: dict[str, None] = {}
        # A topic read through a prefix only: no LISTENING confirms where its streams start.
        self.subscriptions.starts_settled = lambda topic: topic not in self._topics
        #: the incarnation of each publisher we told our topics (on its first heartbeat)
        self._listening_to: dict[str, int] = {}
        #: publishers told which topics we read that have not answered yet, and when to retry
        self._listen_unanswered: dict[str, float] = {}
        #: the topics of the last LISTEN sent to each of those: only a LISTENING for that set
        #: answers it (the network may duplicate an answer to an earlier LISTEN, and late)
        self._listen_sent: dict[str, tuple[str, ...]] = {}
        #: leaving publishers owed FLUSHED once we hold their last numbers: incarnation and
        #: positions (one per publisher: at most one per member)
        self._flushes: dict[str, tuple[int, tuple[msg.Position, ...]]] = {}

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {
            msg.Heartbeat: self._rx_heartbeat,
            msg.Beacon: self._rx_beacon,
            msg.Listening: self._rx_listening,
            msg.Publish: self._rx_publish,
            msg.Republish: self._rx_republish,
            msg.Lost: self._rx_lost,
            msg.Flush: self._rx_flush,
        }

    def commands(self) -> Mapping[type, Command]:
        return {
            ev.TopicSubscribed: self._on_subscribed,
            ev.TopicUnsubscribed: self._on_unsubscribed,
            ev.PrefixSubscribed: self._on_prefix_subscribed,
            ev.PrefixUnsubscribed: self._on_prefix_unsubscribed,
        }

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    def reads(self, topic: str) -> bool:
        """Whether this node reads ``topic``: subscribed to it, or to a prefix of it."""
        if topic in self._topics:
            return True
        for prefix in self._prefixes:  # noqa: SIM110 - any() and a generator cost more
            if topic.startswith(prefix):
                return True
        return False

    # ------------------------------------------------------------ events

    def _on_subscribed(self, event: ev.TopicSubscribed, now: float) -> None:
        if event.replay:
            self.subscriptions.replay_topics.add(event.topic)
        if event.topic in self._topics:
            return
        self._topics.add(event.topic)
        self._ctx.emit(fx.SetSubscription(event.topic, True))
        self._tell_listening(now)

    def _on_unsubscribed(self, event: ev.TopicUnsubscribed, now: float) -> None:
        if event.topic not in self._topics:
            return
        self._topics.discard(event.topic)
        self.subscriptions.replay_topics.discard(event.topic)
        if not self.reads(event.topic):  # still read through a prefix: its streams stay
            self.subscriptions.forget_topic(event.topic)
        self._ctx.emit(fx.SetSubscription(event.topic, False))
        self._tell_listening(now)

    def _on_prefix_subscribed(self, event: ev.PrefixSubscribed, now: float) -> None:
        if event.prefix in self._prefixes:
            return
        self._prefixes[event.prefix] = None
        self._ctx.emit(fx.SetSubscription(event.prefix, True, prefix=True))
        self._tell_listening(now)

    def _on_prefix_unsubscribed(self, event: ev.PrefixUnsubscribed, now: float) -> None:
        if self._prefixes.pop(event.prefix, "gone") == "gone":
            return
        for topic in self.subscriptions.topics():
            if topic.startswith(event.prefix) and not self.reads(topic):
                self.subscriptions.forget_topic(topic)
        self._ctx.emit(fx.SetSubscription(event.prefix, False, prefix=True))
        self._tell_listening(now)

    def tick(self, now: float) -> None:
        # Provisional starts that waited long enough for LISTENING become final.
        if self.subscriptions.has_provisional:
            for publisher, topic, ready in self.subscriptions.settle_starts(now):
                self._deliver(publisher, topic, ready, now)
        if self._flushes:
            self._answer_flushes()
        if not self._listen_unanswered:
            return
        for node_id, due in list(self._listen_unanswered.items()):
            if now < due:
                continue
            member = self._ctx.table.get(node_id)
            if member is not None and member.status.is_live:
                self._tell_listening_to(node_id, member.address, now)
            elif node_id not in self._listening_to:
                del self._listen_unanswered[node_id]
                self._listen_sent.pop(node_id, None)
            # else: a publisher we told before: told again once it is back

    @property
    def flush_due(self) -> bool:
        return self.subscriptions.new_gap

    def end_turn(self, now: float) -> None:
        """Ask publishers for the gaps found during this turn (and those due again)."""
        ctx = self._ctx
        self.subscriptions.new_gap = False
        if not self.subscriptions.has_gaps:
            return
        for publisher, topic, ranges in self.subscriptions.due_fetches(now):
            address = ctx.live_address(publisher)
            if address is not None:
                ctx.counters["publication_fetches"] += 1
                ctx.send(address, msg.Fetch(topic, tuple(ranges), ctx.address))

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        node_id = member.node_id
        new_life = previous is not None and previous.incarnation != member.incarnation
        # A publisher that speaks swim keeps our topics for its whole incarnation, even after
        # it stopped being live for us (or we forgot it), and sends us no heartbeat when it is
        # back: what we told it still holds. Earlier releases may forget them.
        told = self._listening_to.get(node_id)
        if told is not None and (
            told != member.incarnation
            or not (member.status.is_live or self._ctx.peers.announced_swim(node_id))
        ):
            self._forget_listening(node_id)
        if member.status.is_gone or new_life:
            # What the old life of this publisher left missing can never be fetched. (A
            # stream already started by a publication of this new life stays.) A publisher
            # we removed may be alive and come back in the same incarnation, still holding
            # the starts it gave us (and counting us a subscriber since): its streams resume
            # where the closed ones stopped, and one we never had starts where it says.
            before = member.incarnation + (1 if member.status.is_gone else 0)
            for topic, incarnation, ready in self.subscriptions.forget_publisher(node_id, before):
                self._deliver(node_id, topic, ready, now, incarnation)

    # ------------------------------------------------------------ messages

    def _rx_heartbeat(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        heartbeat = env.message
        assert isinstance(heartbeat, msg.Heartbeat)
        if heartbeat.me.node_id != env.sender or heartbeat.me.incarnation != env.incarnation:
            return  # inconsistent: counted and dropped by Gossip
        current = self._ctx.table.get(env.sender)
        if current is None or current.incarnation != env.incarnation:
            return
        if current.status.is_live and (
            self._listening_to.get(env.sender) != env.incarnation
            or (heartbeat.updates and self._written_off_by(heartbeat))
        ):
            # First heartbeat of this incarnation: its PUB reaches us; say which topics we read.
            # Again when it holds us down or gone: it may have forgotten them.
            self._note_listening(env.sender, env.incarnation)
            self._tell_listening_to(env.sender, current.address, now)
        reading = self._topics or self._prefixes
        if reading and heartbeat.positions and not current.status.is_gone:
            # The latest numbers: tail loss shows as a gap. A stream that starts here
            # starts provisionally at that number; LISTENING gives the real start. (Not
            # from a life that is over: its streams were closed, for good.)
            for topic, latest in heartbeat.positions:
                if self.reads(topic):
                    ready = self.subscriptions.position(
                        env.sender, env.incarnation, topic, latest, latest, now
                    )
                    self._deliver(env.sender, topic, ready, now)

    def _rx_beacon(self, env: msg.Envelope, _: bytes, topic: str | None, now: float) -> None:
        """A publisher's latest number on a topic we read (as in its heartbeats)."""
        beacon = env.message
        assert isinstance(beacon, msg.Beacon)
        current = self._ctx.table.get(env.sender)
        if topic is None or not self.reads(topic) or current is None or current.status.is_gone:
            return
        if current.incarnation == env.incarnation:
            ready = self.subscriptions.position(
                env.sender, env.incarnation, topic, beacon.seq, beacon.seq, now
            )
            self._deliver(env.sender, topic, ready, now)

    def _rx_listening(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        listening = env.message
        assert isinstance(listening, msg.Listening)
        sent = self._listen_sent.get(env.sender)
        if sent is not None and tuple(sorted(t for t, _ in listening.positions)) == sent:
            del self._listen_sent[env.sender]
            self._listen_unanswered.pop(env.sender, None)
        if self._life_over(env.sender, env.incarnation):
            return
        for topic, start in listening.positions:
            if topic in self._topics:
                ready = self.subscriptions.subscription_began(
                    env.sender, env.incarnation, topic, start
                )
                self._deliver(env.sender, topic, ready, now)

    def _rx_publish(self, env: msg.Envelope, payload: bytes, topic: str | None, now: float) -> None:
        if topic is None or not self.reads(topic):
            return
        publication = env.message
        assert isinstance(publication, msg.Publish)
        if publication.seq == 0:
            self._ctx.emit(fx.DeliverPublications(env.sender, topic, [payload]))
            return
        item = (publication.seq, publication.guarantee, payload)
        self._take(env.sender, env.incarnation, topic, item, now)

    def _rx_republish(self, env: msg.Envelope, payload: bytes, _: str | None, now: float) -> None:
        republish = env.message
        assert isinstance(republish, msg.Republish)
        if not self._from_member(env):
            return
        self._ctx.counters["publications_repaired"] += 1
        if self.reads(republish.topic):
            item = (republish.seq, republish.guarantee, payload)
            self._take(env.sender, env.incarnation, republish.topic, item, now)

    def _rx_flush(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        """A leaving publisher: we have read all it published before this; once we hold its
        last numbers too (fetched, or reported lost), FLUSHED tells it so."""
        flush = env.message
        assert isinstance(flush, msg.Flush)
        if self._life_over(env.sender, env.incarnation):
            return
        positions = tuple(p for p in flush.positions if self.reads(p[0]))
        for topic, last in positions:
            ready = self.subscriptions.position(env.sender, env.incarnation, topic, last, last, now)
            self._deliver(env.sender, topic, ready, now)
        self._flushes[env.sender] = (env.incarnation, positions)
        self._answer_flushes()

    def _answer_flushes(self) -> None:
        ctx, holds = self._ctx, self.subscriptions.holds_through
        for publisher, (incarnation, positions) in list(self._flushes.items()):
            if self._life_over(publisher, incarnation):
                del self._flushes[publisher]
            elif all(holds(publisher, incarnation, t, last) for t, last in positions):
                del self._flushes[publisher]
                address = ctx.live_address(publisher)
                if address is not None:
                    ctx.send(address, msg.Flushed())
                    ctx.counters["flushes_answered"] += 1

    def _rx_lost(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        lost = env.message
        assert isinstance(lost, msg.Lost)
        if not self._from_member(env):
            return
        ready = self.subscriptions.lost(env.sender, env.incarnation, lost.topic, lost.ranges)
        self._deliver(env.sender, lost.topic, ready, now)

    # ------------------------------------------------------------ internals

    def _from_member(self, env: msg.Envelope) -> bool:
        """Whether an answer to our FETCH comes from a member in the incarnation we asked
        (we fetch from members only): what a stranger sends is not held (counted)."""
        if self._ctx.is_current(env):
            return True
        self._ctx.counters["repairs_refused_not_a_member"] += 1
        return False

    def take_numbered(
        self, numbered: list[tuple[str, int, str, int, DeliveryGuarantee, bytes]], now: float
    ) -> None:
        """Numbered publications read on the driver's fast path, as ``_rx_publish`` takes
        them; a run of the next numbers of one stream is taken at once."""
        topics, prefixes = self._topics, self._prefixes
        run: list[Publication] = []
        key = ("", 0, "")
        ordered = 0
        for publisher, incarnation, topic, seq, guarantee, payload in numbered:
            if topic not in topics and not (prefixes and self.reads(topic)):
                continue
            if run and (seq != run[-1][0] + 1 or (publisher, incarnation, topic) != key):
                self._take_run(key, run, ordered, now)
                run, ordered = [], 0
            key = (publisher, incarnation, topic)
            run.append((seq, guarantee, payload))
            if guarantee is DeliveryGuarantee.ORDERED or guarantee is CAUSAL:
                ordered = seq  # (a CAUSAL one is taken alone: see _take_run)
        if run:
            self._take_run(key, run, ordered, now)

    def _take_run(
        self, key: tuple[str, int, str], run: list[Publication], ordered: int, now: float
    ) -> None:
        """Publications of one stream numbered one after another."""
        publisher, incarnation, topic = key
        causal = ordered and any(guarantee is CAUSAL for _, guarantee, _ in run)
        if (
            not causal
            and not self._life_over(publisher, incarnation)
            and self.subscriptions.take_in_order(
                publisher, incarnation, topic, run[0][0], run[-1][0], ordered
            )
        ):
            self._ctx.emit(fx.DeliverPublications(publisher, topic, [p for _, _, p in run]))
            return
        for item in run:
            self._take(publisher, incarnation, topic, item, now)

    def _take(
        self, publisher: str, incarnation: int, topic: str, item: Publication, now: float
    ) -> None:
        if self._life_over(publisher, incarnation):
            self._ctx.counters["publications_stale_incarnation"] += 1
            return
        # A stream that starts here starts provisionally after this number (see above).
        start = item[0] - 1
        subscriptions = self.subscriptions
        ready = subscriptions.publication(publisher, incarnation, topic, item, start, now)
        self._deliver(publisher, topic, ready, now)

    def _life_over(self, sender: str, incarnation: int) -> bool:
        """Whether the sender's incarnation is over for us (a later one is known, or it is
        LEFT or REMOVED, or purged): its streams were closed for good, and a late message
        of it must not start them again (what they missed was reported lost)."""
        current = self._ctx.table.get(sender)
        if current is None:
            return True
        if current.incarnation != incarnation:
            return current.incarnation > incarnation
        return current.status.is_gone

    def _deliver(
        self,
        publisher: str,
        topic: str,
        ready: list[Publication],
        now: float,
        incarnation: int | None = None,
    ) -> None:
        """Deliver ``ready`` (of ``incarnation``'s stream: by default the one held now)."""
        ctx = self._ctx
        released = self.subscriptions.released
        if released:
            # Held back by streams closed to make room for another (an older life first).
            for old_publisher, old_incarnation, old_topic, items in released:
                self._hand_over(old_publisher, old_topic, items, now, old_incarnation)
            released.clear()
        if ready:
            self._hand_over(publisher, topic, ready, now, incarnation)
        losses = self.subscriptions.losses
        if losses:
            for loss in losses:
                ctx.emit(fx.PublicationsLost(loss.publisher, loss.topic, loss.first, loss.last))
            losses.clear()

    def _hand_over(
        self,
        publisher: str,
        topic: str,
        ready: list[Publication],
        now: float,
        incarnation: int | None,
    ) -> None:
        """Publications to deliver in this order; CAUSAL ones go by way of causal.py."""
        if any(guarantee is CAUSAL for _, guarantee, _ in ready):
            if incarnation is None:
                stream = self.subscriptions.stream(publisher, topic)
                incarnation = 0 if stream is None else stream.incarnation
            plain: list[bytes] = []
            for seq, guarantee, payload in ready:
                if guarantee is CAUSAL:
                    if plain:
                        self._ctx.emit(fx.DeliverPublications(publisher, topic, plain))
                        plain = []
                    self._causal_arrived(publisher, incarnation, topic, seq, payload, now)
                else:
                    plain.append(payload)
            if plain:
                self._ctx.emit(fx.DeliverPublications(publisher, topic, plain))
            return
        self._ctx.emit(fx.DeliverPublications(publisher, topic, [p for _, _, p in ready]))

    def _tell_listening(self, now: float) -> None:
        for node_id in self._listening_to:
            member = self._ctx.table.get(node_id)
            if member is not None and member.status.is_live:
                self._tell_listening_to(node_id, member.address, now)
            else:
                self._listen_unanswered[node_id] = now  # told once it is back (see tick)

    def _tell_listening_to(self, node_id: str, address: str, now: float) -> None:
        """Send LISTEN; it is sent again until the publisher answers (LISTENING), since
        where our streams start depends on that answer."""
        ctx = self._ctx
        topics = tuple(sorted(self._topics))
        prefixes: tuple[str, ...] = ()
        if self._prefixes and PREFIX in (ctx.peers.capabilities_of(node_id) or ()):
            prefixes = tuple(self._prefixes)  # earlier releases take topics only
        ctx.send(address, msg.Listen(topics, prefixes))
        self._listen_sent[node_id] = topics
        self._listen_unanswered[node_id] = now + self._ctx.config.listen_retry_s

    def _note_listening(self, node_id: str, incarnation: int) -> None:
        """Remember that we told this publisher incarnation our topics (at most
        members_max_count of them, the longest known first out)."""
        notes = self._listening_to
        notes.pop(node_id, None)
        notes[node_id] = incarnation
        if len(notes) > self._ctx.config.members_max_count:
            self._forget_listening(next(iter(notes)))

    def _forget_listening(self, node_id: str) -> None:
        self._listening_to.pop(node_id, None)
        self._listen_unanswered.pop(node_id, None)
        self._listen_sent.pop(node_id, None)

    def _written_off_by(self, heartbeat: msg.Heartbeat) -> bool:
        """Whether the publisher's heartbeat holds this incarnation of ours down or gone."""
        ctx = self._ctx
        return any(
            r.node_id == ctx.node_id and r.incarnation == ctx.incarnation and not r.status.is_live
            for r in heartbeat.updates
        )
