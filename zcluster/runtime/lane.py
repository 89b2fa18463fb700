"""The PUB socket, shared by the node's loop and the threads that publish.

Unnumbered (AT_MOST_ONCE) publications carry no protocol state: nothing is
numbered, kept or acknowledged. So they skip the loop and the core: the
caller's thread encodes the header and sends the three frames at once,
under a lock that also covers the loop's own PUB traffic (heartbeats and
numbered publications). Without the hop a publication costs about what raw
pyzmq costs; the lock is uncontended unless two threads publish at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import zmq

from zcluster.application import raise_too_large
from zcluster.config import NodeConfig
from zcluster.errors import ConfigError, NotRunning, WireError
from zcluster.protocol import messages as msg
from zcluster.runtime.transport import LAST_FRAME, MORE_FRAMES, SEND
from zcluster.wire import MAX_ONE_FRAME_HEADER_BYTES, Encoder


class PublicationLane:
    """Sends on one PUB socket from any thread, one whole message at a time."""

    def __init__(
        self,
        node_id: str,
        encoder: Encoder,
        pub: zmq.Socket[bytes],
        serialize: Callable[[Any], bytes],
        config: NodeConfig,
    ) -> None:
        self._node_id = node_id
        self._encoder = encoder
        self._pub: zmq.Socket[bytes] | None = pub
        self._serialize = serialize
        self._max_message_bytes = config.max_message_bytes
        self._one_frame_max_bytes = config.one_frame_max_bytes
        self._lock = threading.Lock()
        #: whether every member reads one-frame publications (the loop keeps it current)
        self.one_frame = False
        #: unnumbered publications sent through the lane
        self.published = 0

    def publish_unnumbered(self, topic: str, message: Any) -> None:
        """Serialize and send an AT_MOST_ONCE publication now, in the caller's thread.

        Raises ConfigError for a topic the wire cannot carry, SerializationError
        for a message that cannot be sent, NotRunning once the node has stopped.
        PUB drops at its high-water mark, so this never blocks. (The hottest
        path of all: what ``Application.encode`` does is written out here.)
        """
        payload = self._serialize(message)
        size = len(payload)
        if size > self._max_message_bytes:
            raise_too_large(payload, self._max_message_bytes)
        encoder = self._encoder
        try:
            if self.one_frame and size <= self._one_frame_max_bytes:
                with self._lock:
                    SEND(self._open(), encoder.unnumbered_frame(topic, payload), LAST_FRAME)
                    self.published += 1
                return
            first = encoder.topic_frame(topic)
        except WireError as exc:
            raise ConfigError(str(exc)) from None
        with self._lock:
            pub = self._open()
            SEND(pub, first, MORE_FRAMES)
            SEND(pub, encoder.unnumbered_header(), MORE_FRAMES)
            SEND(pub, payload, LAST_FRAME)
            self.published += 1

    def _open(self) -> zmq.Socket[bytes]:
        pub = self._pub
        if pub is None:
            raise NotRunning(f"node {self._node_id} is not running")
        return pub

    def publish(self, topic: str | None, message: msg.Message, payload: bytes) -> None:
        """Send a message of the loop's (``topic`` None: membership traffic), numbered
        under the lock so that on this socket a later message has the larger header seq;
        dropped once the lane is closed."""
        encoder = self._encoder
        with self._lock:
            pub = self._pub
            if pub is None:
                return
            first, header, payload = encoder.published(topic, message, payload)
            if (
                topic is not None
                and type(message) is msg.Publish  # not a BEACON: only PUBLISH takes this form
                and self.one_frame
                and len(payload) <= self._one_frame_max_bytes
                and len(header) <= MAX_ONE_FRAME_HEADER_BYTES
            ):
                SEND(pub, encoder.one_frame(topic, header, payload), LAST_FRAME)
                return
            SEND(pub, first, MORE_FRAMES)
            SEND(pub, header, MORE_FRAMES)
            SEND(pub, payload, LAST_FRAME)

    def close(self) -> None:
        """Refuse further publications; the socket itself is closed by its owner."""
        with self._lock:
            self._pub = None
