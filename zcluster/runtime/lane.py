"""The PUB socket, shared by the node's loop and the threads that publish.

Unnumbered (AT_MOST_ONCE) publications carry no protocol state: nothing is
numbered, kept or acknowledged. So they skip the loop and the core: the
caller's thread encodes the header and sends at once, under a lock that
also covers the loop's own PUB traffic (beacons, heartbeats, FLUSH).
Numbered ones need one piece of the core's state, the numbering and
retransmit buffer (``Publications``, which guards itself): under the same
lock the caller's thread numbers, keeps and sends, so that each topic's
numbers leave in order. Without the hop a publication costs about what raw
pyzmq costs; the lock is uncontended unless two threads publish at once.

The PUB does not drop (``XPUB_NODROP``): a publication that finds a
subscriber's queue full (``pubsub_hwm_count``) waits for room, outside the
lock, up to ``publish_block_max_s``; the publisher goes at the pace of its
slowest subscriber instead of losing what it sends. Past that wait the
publication goes to the others and is dropped for the full queue (counted;
a numbered one is fetched again from the retransmit buffer), and the
publications of the next ``publish_block_max_s`` do not wait: a subscriber
that stopped reading slows its publisher once, not at every message. (libzmq
then skips that subscriber, uncounted, until it has read half its queue.)

The loop never waits, and never sends lossy: a lossy send would make libzmq
skip the full subscriber for what follows, every publication included. Its
own messages (beacons, heartbeats, FLUSH) are skipped when a queue is full
(counted); each is sent again on its next round.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from zcluster.application import checked_guarantee, raise_too_large
from zcluster.config import NodeConfig
from zcluster.core.component import SUPPORTED_GUARANTEES
from zcluster.core.publications import Publications
from zcluster.errors import ConfigError, NotRunning, WireError
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.runtime.transport import LAST_FRAME, MORE_FRAMES, SEND
from zcluster.wire import Encoder

_UNNUMBERED = DeliveryGuarantee.AT_MOST_ONCE
#: the first pause while a publication waits for room, and the longest
_ROOM_FIRST_PAUSE_S = 0.0002
_ROOM_MAX_PAUSE_S = 0.01
#: the frames of one message and their flags, to send again once there is room
Frames = tuple[tuple[bytes, int], ...]


class Waiting:
    """A publication that found a subscriber's queue full, in line for room: publications
    leave in the order they were accepted (a topic's numbers in order), so every later
    one queues behind it."""

    __slots__ = ("frames", "numbered", "sent")

    def __init__(self, frames: Frames, numbered: bool) -> None:
        self.frames = frames
        self.numbered = numbered
        self.sent = False


#: the guarantees a numbered publication may carry, as the core checks them
_NUMBERED = frozenset(g for g in SUPPORTED_GUARANTEES if g.is_reliable)


def too_many_topics(max_count: int) -> str:
    return (
        f"at most {max_count} topics can be published with a guarantee (published_topics_max_count)"
    )


class PublicationLane:
    """Sends on one PUB socket from any thread, one whole message at a time."""

    def __init__(
        self,
        node_id: str,
        encoder: Encoder,
        pub: zmq.Socket[bytes],
        serialize: Callable[[Any], bytes],
        config: NodeConfig,
        publications: Publications,
    ) -> None:
        self._node_id = node_id
        self._encoder = encoder
        self._publications = publications
        self._pub: zmq.Socket[bytes] | None = pub
        #: the PUB for users' new publications: None once the node stops (``stop_taking``),
        #: while the loop's own traffic and what already waits in line still go out
        self._users_pub: zmq.Socket[bytes] | None = pub
        self._serialize = serialize
        self._max_message_bytes = config.max_message_bytes
        self._one_frame_max_bytes = config.one_frame_max_bytes
        self._config_topics_max_count = config.published_topics_max_count
        self._block_max_s = config.publish_block_max_s
        # One lock for the PUB socket and the numbering behind it: a thread that publishes
        # with a guarantee numbers and sends under it, and the loop reads the numbering
        # (heartbeats, fetches) under it too, as the Publications' guard.
        self._lock = threading.Lock()
        publications.guard = self._lock
        #: the loop's thread (the lane is built there): it never waits for room
        self._loop_thread = threading.get_ident()
        #: until then, publications do not wait for room (one waited in vain)
        self._no_wait_until = 0.0
        #: publications waiting for room, oldest first (under the lock)
        self._backlog: collections.deque[Waiting] = collections.deque()
        #: whether every member reads one-frame publications (the loop keeps it current)
        self.one_frame = False
        #: publications sent from callers' threads
        self.published = 0
        #: publications a full subscriber queue refused after their wait (dropped for it),
        #: and how many of them were unnumbered (nothing repairs those)
        self.dropped = 0
        self.dropped_unnumbered = 0
        #: the loop's own messages skipped for a full queue (sent again on their next round)
        self.skipped = 0

    # ------------------------------------------------------------ publications

    def publish_unnumbered(self, topic: str, message: Any) -> None:
        """Serialize and send an AT_MOST_ONCE publication now, in the caller's thread,
        waiting for room in a full subscriber queue (see the module).

        Raises ConfigError for a topic the wire cannot carry, SerializationError
        for a message that cannot be sent, NotRunning once the node has stopped.
        """
        waiting = self.try_unnumbered(topic, message)
        if waiting is not None:
            self.wait_for_room(waiting)

    def publish_numbered(self, topic: str, message: Any, guarantee: DeliveryGuarantee) -> None:
        """Serialize, number, keep and send a guaranteed publication now, in the caller's
        thread, waiting for room as ``publish_unnumbered`` does. Raises as that does,
        UnsupportedGuarantee (a ConfigError) for a guarantee publications do not take,
        and ConfigError if the topic would be one numbered topic too many."""
        waiting = self.try_numbered(topic, message, guarantee)
        if waiting is not None:
            self.wait_for_room(waiting)

    def try_unnumbered(self, topic: str, message: Any) -> Waiting | None:
        """``publish_unnumbered`` without the wait: None once sent, else its place in line
        (a subscriber's queue is full, or others wait already): ``offer`` it again."""
        payload = self._serialize(message)  # _encode and _open written out: the hottest path
        if len(payload) > self._max_message_bytes:
            raise_too_large(payload, self._max_message_bytes)
        prefix = self._prefix_of(topic)
        with self._lock:
            pub = self._users_pub
            if pub is None:
                raise NotRunning.of(self._node_id)
            self.published += 1
            if self.one_frame and len(payload) <= self._one_frame_max_bytes and not self._backlog:
                frame = self._encoder.publication_frame(prefix, 0, _UNNUMBERED, payload)
                try:
                    SEND(pub, frame, LAST_FRAME)
                    return None
                except zmq.Again:
                    return self._in_line(((frame, LAST_FRAME),), numbered=False)
            return self._publication(pub, topic, prefix, 0, _UNNUMBERED, payload)

    def try_numbered(
        self, topic: str, message: Any, guarantee: DeliveryGuarantee
    ) -> Waiting | None:
        """``publish_numbered`` without the wait, as ``try_unnumbered``: the publication is
        numbered and kept either way."""
        if type(guarantee) is not DeliveryGuarantee or guarantee not in _NUMBERED:
            guarantee = checked_guarantee(guarantee)  # raises for what no core takes
        return self.try_numbered_payload(topic, self._encode(message), guarantee)[1]

    def try_numbered_payload(
        self, topic: str, payload: bytes, guarantee: DeliveryGuarantee
    ) -> tuple[int, Waiting | None]:
        """``try_numbered`` of a serialized message; returns its number too."""
        prefix = self._prefix_of(topic)  # checks it before numbering
        with self._lock:
            pub = self._users_pub
            if pub is None:
                raise NotRunning.of(self._node_id)
            seq = self._publications.append_held(topic, guarantee, payload)
            if not seq:
                raise ConfigError(too_many_topics(self._config_topics_max_count))
            self.published += 1
            return seq, self._publication(pub, topic, prefix, seq, guarantee, payload)

    def room_pauses(self) -> Iterator[float]:
        """How long to pause before each new ``offer`` of a message that found a queue
        full; once these run out, ``force`` it."""
        now = time.monotonic()
        if now < self._no_wait_until:
            return
        deadline = now + self._block_max_s
        pause = _ROOM_FIRST_PAUSE_S
        while time.monotonic() < deadline:
            yield pause
            pause = min(2 * pause, _ROOM_MAX_PAUSE_S)
        self._no_wait_until = time.monotonic() + self._block_max_s

    def offer(self, waiting: Waiting) -> bool:
        """Send what waits in line, oldest first, while every queue has room; whether
        ``waiting`` has left."""
        with self._lock:
            pub = self._open()
            backlog = self._backlog
            while backlog and self._send_frames(pub, backlog[0].frames):
                backlog.popleft().sent = True
            return waiting.sent

    def force(self, waiting: Waiting) -> None:
        """Send ``waiting``, and what is in line before it, to every subscriber with room;
        dropped for those without."""
        with self._lock:
            pub = self._open()
            backlog = self._backlog
            pub.setsockopt(zmq.XPUB_NODROP, 0)
            try:
                while not waiting.sent and backlog:
                    head = backlog.popleft()
                    for frame, flags in head.frames:
                        SEND(pub, frame, flags)
                    head.sent = True
                    self.dropped += 1
                    if not head.numbered:
                        self.dropped_unnumbered += 1
            finally:
                pub.setsockopt(zmq.XPUB_NODROP, 1)

    def wait_for_room(self, waiting: Waiting) -> None:
        if threading.get_ident() == self._loop_thread:  # it would hold up the subscribers
            self.force(waiting)  # this node's own ones, and the loop
            return
        for pause in self.room_pauses():
            time.sleep(pause)
            if self.offer(waiting):
                return
        self.force(waiting)

    def _in_line(self, frames: Frames, *, numbered: bool) -> Waiting:
        waiting = Waiting(frames, numbered)
        self._backlog.append(waiting)
        return waiting

    def _publication(
        self,
        pub: zmq.Socket[bytes],
        topic: str,
        prefix: bytes,
        seq: int,
        guarantee: DeliveryGuarantee,
        payload: bytes,
    ) -> Waiting | None:
        """A user's publication: sent now, unless others wait for room or a queue is full
        (then in line)."""
        frames = self._publication_frames(topic, prefix, seq, guarantee, payload)
        if not self._backlog and self._send_frames(pub, frames):
            return None
        return self._in_line(frames, numbered=bool(seq))

    # ------------------------------------------------------------ internals

    def _encode(self, message: Any) -> bytes:
        """``Application.encode``, written out: the hottest path of all."""
        payload = self._serialize(message)
        if len(payload) > self._max_message_bytes:
            raise_too_large(payload, self._max_message_bytes)
        return payload

    def _prefix_of(self, topic: str) -> bytes:
        """How a one-frame publication on ``topic`` starts; ConfigError if the wire
        cannot carry the topic."""
        try:
            return self._encoder.one_frame_prefix_of(topic)
        except WireError as exc:
            raise ConfigError(str(exc)) from None

    def _open(self) -> zmq.Socket[bytes]:
        pub = self._pub
        if pub is None:
            raise NotRunning.of(self._node_id)
        return pub

    def publish(self, topic: str | None, message: msg.Message, payload: bytes) -> None:
        """Send a message of the loop's (``topic`` None: membership traffic), numbered
        under the lock so that on this socket a later message has the larger header seq;
        dropped once the lane is closed. The loop never waits for room: a full queue
        skips this message (membership traffic is repeated; a numbered publication is
        fetched again)."""
        with self._lock:
            pub = self._pub
            if pub is None:
                return
            encoder = self._encoder
            if topic is not None and type(message) is msg.Publish:  # not a BEACON
                prefix = encoder.one_frame_prefix_of(topic)
                frames = self._publication_frames(
                    topic, prefix, message.seq, message.guarantee, payload
                )
                sent = self._send_frames(pub, frames)
            elif type(message) is msg.Flush and self._backlog:
                sent = False  # publications still wait for room: it must not overtake them
            else:
                first, header, payload = encoder.published(topic, message, payload)
                frames = ((first, MORE_FRAMES), (header, MORE_FRAMES), (payload, LAST_FRAME))
                sent = self._send_frames(pub, frames)
            if not sent:
                self.skipped += 1

    def _publication_frames(
        self, topic: str, prefix: bytes, seq: int, guarantee: DeliveryGuarantee, payload: bytes
    ) -> Frames:
        """``Publish(seq, guarantee)`` on ``topic`` (whose one-frame form starts with
        ``prefix``): in one frame as a rule, in three while some member does not read
        that form or the payload is too large to join."""
        encoder = self._encoder
        if self.one_frame and len(payload) <= self._one_frame_max_bytes:
            return ((encoder.publication_frame(prefix, seq, guarantee, payload), LAST_FRAME),)
        return (
            (encoder.topic_frame(topic), MORE_FRAMES),
            (encoder.publication_header(seq, guarantee), MORE_FRAMES),
            (payload, LAST_FRAME),
        )

    def _send_frames(self, pub: zmq.Socket[bytes], frames: Frames) -> bool:
        """Send a whole message without waiting: False, nothing sent, if a queue is full
        (only a message's first frame can find it full)."""
        first, flags = frames[0]
        try:
            SEND(pub, first, flags)
        except zmq.Again:
            return False
        for frame, flags in frames[1:]:
            SEND(pub, frame, flags)
        return True

    def stop_taking(self) -> None:
        """The node is stopping: refuse users' new publications (NotRunning), so that what
        its subscribers confirm holding is everything it published."""
        with self._lock:
            self._users_pub = None

    def take_subscriptions(self) -> None:
        """Let the PUB take what its subscribers sent, now. libzmq reads a connection's
        input only while fewer than its high-water mark of messages wait, and the PUB
        takes them (subscriptions applied, anything else dropped) only when it is used:
        taken as they arrive, they hold no memory and a small high-water mark slows no
        subscriber (called when the socket's descriptor signals)."""
        with self._lock:
            if self._pub is not None:
                self._pub.getsockopt(zmq.EVENTS)

    @property
    def lock(self) -> threading.Lock:
        """Held while the PUB is used: by whoever must change the socket itself."""
        return self._lock

    def close(self) -> None:
        """Refuse further publications; the socket itself is closed by its owner."""
        with self._lock:
            self._pub = self._users_pub = None
