"""The PUB socket, shared by the node's loop and the threads that publish.

Unnumbered (AT_MOST_ONCE) publications carry no protocol state: nothing is
numbered, kept or acknowledged. So they skip the loop and the core: the
caller's thread encodes the header and sends at once, under a lock that
also covers the loop's own PUB traffic (beacons, heartbeats, numbered
publications of the asyncio API). Numbered ones need one piece of the
core's state, the numbering and retransmit buffer (``Publications``, which
guards itself): under the same lock the caller's thread numbers, keeps
and sends, so that the blocking API's publications leave each topic's
numbers in order (the asyncio API numbers in the core and sends after:
a node publishes through one API or the other). Without
the hop a publication costs about what raw pyzmq costs; the lock is
uncontended unless two threads publish at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
        self._serialize = serialize
        self._max_message_bytes = config.max_message_bytes
        self._one_frame_max_bytes = config.one_frame_max_bytes
        self._config_topics_max_count = config.published_topics_max_count
        # One lock for the PUB socket and the numbering behind it: a thread that publishes
        # with a guarantee numbers and sends under it, and the loop reads the numbering
        # (heartbeats, fetches) under it too, as the Publications' guard.
        self._lock = threading.Lock()
        publications.guard = self._lock
        #: whether every member reads one-frame publications (the loop keeps it current)
        self.one_frame = False
        #: publications sent from callers' threads
        self.published = 0

    def publish_unnumbered(self, topic: str, message: Any) -> None:
        """Serialize and send an AT_MOST_ONCE publication now, in the caller's thread.

        Raises ConfigError for a topic the wire cannot carry, SerializationError
        for a message that cannot be sent, NotRunning once the node has stopped.
        PUB drops at its high-water mark, so this never blocks.
        """
        payload = self._serialize(message)  # _encode and _open written out: the hottest path
        if len(payload) > self._max_message_bytes:
            raise_too_large(payload, self._max_message_bytes)
        prefix = self._prefix_of(topic)
        with self._lock:
            pub = self._pub
            if pub is None:
                raise NotRunning.of(self._node_id)
            if self.one_frame and len(payload) <= self._one_frame_max_bytes:
                SEND(
                    pub,
                    self._encoder.publication_frame(prefix, 0, _UNNUMBERED, payload),
                    LAST_FRAME,
                )
            else:
                self._send_publication(pub, topic, prefix, 0, _UNNUMBERED, payload)
            self.published += 1

    def publish_numbered(self, topic: str, message: Any, guarantee: DeliveryGuarantee) -> None:
        """Serialize, number, keep and send a guaranteed publication now, in the caller's
        thread. Raises as ``publish_unnumbered`` does, UnsupportedGuarantee (a
        ConfigError) for a guarantee publications do not take, and ConfigError if the
        topic would be one numbered topic too many."""
        if type(guarantee) is not DeliveryGuarantee or guarantee not in _NUMBERED:
            guarantee = checked_guarantee(guarantee)  # raises for what no core takes
        payload = self._encode(message)
        prefix = self._prefix_of(topic)  # checks it before numbering
        with self._lock:
            pub = self._open()
            seq = self._publications.append_held(topic, guarantee, payload)
            if not seq:
                raise ConfigError(too_many_topics(self._config_topics_max_count))
            if self.one_frame and len(payload) <= self._one_frame_max_bytes:
                SEND(
                    pub,
                    self._encoder.publication_frame(prefix, seq, guarantee, payload),
                    LAST_FRAME,
                )
            else:
                self._send_publication(pub, topic, prefix, seq, guarantee, payload)
            self.published += 1

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
        dropped once the lane is closed."""
        with self._lock:
            pub = self._pub
            if pub is not None:
                self._send(pub, topic, message, payload)

    def _send(
        self, pub: zmq.Socket[bytes], topic: str | None, message: msg.Message, payload: bytes
    ) -> None:
        encoder = self._encoder
        if topic is not None and type(message) is msg.Publish:  # not a BEACON
            prefix = encoder.one_frame_prefix_of(topic)
            self._send_publication(pub, topic, prefix, message.seq, message.guarantee, payload)
            return
        first, header, payload = encoder.published(topic, message, payload)
        SEND(pub, first, MORE_FRAMES)
        SEND(pub, header, MORE_FRAMES)
        SEND(pub, payload, LAST_FRAME)

    def _send_publication(
        self,
        pub: zmq.Socket[bytes],
        topic: str,
        prefix: bytes,
        seq: int,
        guarantee: DeliveryGuarantee,
        payload: bytes,
    ) -> None:
        """``Publish(seq, guarantee)`` on ``topic`` (whose one-frame form starts with
        ``prefix``): in one frame as a rule, in three while some member does not read
        that form or the payload is too large to join."""
        encoder = self._encoder
        if self.one_frame and len(payload) <= self._one_frame_max_bytes:
            SEND(pub, encoder.publication_frame(prefix, seq, guarantee, payload), LAST_FRAME)
            return
        SEND(pub, encoder.topic_frame(topic), MORE_FRAMES)
        SEND(pub, encoder.publication_header(seq, guarantee), MORE_FRAMES)
        SEND(pub, payload, LAST_FRAME)

    def close(self) -> None:
        """Refuse further publications; the socket itself is closed by its owner."""
        with self._lock:
            self._pub = None
