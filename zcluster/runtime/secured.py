"""Carries out the security policy on a running node (docs/security.md).

Holds what the policy needs from the running node and the sockets need from the
policy: which server key to expect at each address (members' from their records,
seeds' from the configuration, a stranger's from the key it spoke with), what our
connections say first (AUTH), the ZAP handler, and the check of every message read
on the ROUTER against the connection it came on.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import zmq

from zcluster.config import NodeConfig
from zcluster.core import events as ev
from zcluster.errors import ConfigError
from zcluster.protocol import messages as msg
from zcluster.runtime.transport import NOWAIT, RECV
from zcluster.runtime.zap import ZapResponder
from zcluster.security.config import SecurityConfig, SecurityMode
from zcluster.security.policy import AuthenticationHandler
from zcluster.wire import Encoder

log = logging.getLogger("zcluster.security")


class SecuredConnections:
    """A node's security, as the transport and the driver use it."""

    def __init__(
        self, policy: AuthenticationHandler, config: NodeConfig, settings: SecurityConfig
    ) -> None:
        self.policy = policy
        self.mode: SecurityMode = policy.mode
        self._config = config
        self._settings = settings
        #: what the settings' files looked like when last read, and at the last check
        self._fingerprint = fingerprint(settings)
        self._last_seen = self._fingerprint
        self._next_check = 0.0
        #: cuts the connections to our PUB; connects to and disconnects from a member
        #: (set by the driver)
        self._cut_subscribers: Callable[[], None] = _nothing
        self._reconnect: Callable[[str, str, str, bool], None] = _nothing
        #: address -> key of the member there (from its record, as the policy allows)
        self._member_keys: dict[str, bytes] = {}
        #: connected members by address: (node id, PUB address, tags), to check again
        #: when the keys are replaced
        self._members: dict[str, tuple[str, str, Mapping[str, str]]] = {}
        #: members not connected to because their key is not authorized (now), by address
        self._cut: set[str] = set()
        #: members whose address another member held with another key, by address
        self._waiting: dict[str, tuple[str, str, Mapping[str, str]]] = {}
        #: reply address -> the key of the stranger that named it (curve: whoever we
        #: answer at an address must hold the key that asked; no reflection to others)
        self._stranger_keys: OrderedDict[str, bytes] = OrderedDict()
        self._zap: ZapResponder | None = None
        self._encoder: Encoder | None = None

    def use_zap(self, zap: ZapResponder) -> None:
        """Let in the handshakes that wait for a principal's AUTH through ``zap``."""
        self._zap = zap

    def use_encoder(self, encoder: Encoder) -> None:
        """Number AUTH with the node's other messages (one ``seq`` per sender)."""
        self._encoder = encoder

    def on_revocation(
        self,
        cut_subscribers: Callable[[], None],
        reconnect: Callable[[str, str, str, bool], None],
    ) -> None:
        """``cut_subscribers()`` closes the connections to our PUB; ``reconnect(node_id,
        address, pub_address, connect)`` opens or closes ours to a member."""
        self._cut_subscribers = cut_subscribers
        self._reconnect = reconnect

    def reload(self) -> bool:
        """Read the settings' files again and decide with them from now on; False (the
        old ones kept, counted ``auth_reload_failed``) if one is bad."""
        self._fingerprint = fingerprint(self._settings)
        try:
            credentials = self._settings.load()
        except ConfigError as exc:
            self.policy.counters["auth_reload_failed"] += 1
            log.error("node %s: security files not reloaded: %s", self.policy.node_id, exc)
            return False
        now = time.time()
        if self.policy.replace(credentials, self._settings.authorized_nodes, now):
            self._cut_subscribers()
        self._check_members(now)
        self.policy.counters["auth_reloads"] += 1
        log.info("node %s: security files reloaded", self.policy.node_id)
        return True

    def _check_members(self, now: float) -> None:
        """Close our connections to members whose key is no longer authorized (their
        heartbeats no longer reach us: they are soon suspected), and open them again
        to those authorized again."""
        for address, (node_id, pub_address, tags) in self._members.items():
            key = self.policy.member_key(node_id, tags, now)
            allowed = key is not None
            if key is not None:
                self._member_keys[address] = key
            else:
                self._member_keys.pop(address, None)
            if allowed == (address in self._cut):
                if allowed:
                    self._cut.discard(address)
                else:
                    self._cut.add(address)
                self._reconnect(node_id, address, pub_address, allowed)

    def check_files(self, now: float) -> None:
        """Reload when a file changed and has settled, and forget expired bindings
        (checked every auth_reload_interval_s)."""
        if now < self._next_check:
            return
        self._next_check = now + self._config.auth_reload_interval_s
        self.policy.prune(time.time())
        seen = fingerprint(self._settings)
        # Read only what stayed unchanged since the last check: a file caught while
        # it is being written (truncated, half copied) is not taken for a bad one.
        settled = seen == self._last_seen
        self._last_seen = seen
        if settled and seen != self._fingerprint:
            self.reload()

    # ------------------------------------------------------------ for the transport

    @property
    def public_key(self) -> bytes | None:
        return self.policy.public_key

    @property
    def secret_key(self) -> bytes | None:
        return self.policy.secret_key

    def server_key(self, address: str) -> bytes | None:
        key = self._member_keys.get(address) or self.policy.seed_key(address)
        return key or self._stranger_keys.get(address)

    def plain_credentials(self, address: str) -> tuple[bytes, bytes]:
        return self.policy.plain_credentials(address)

    def greeting(self, address: str) -> tuple[tuple[bytes, bytes], float] | None:
        """What a new connection says first (AUTH), and in how many seconds to say it
        again: at half the credential's life, and at least every auth_resend_interval_s.
        None when the mode binds no connection in band."""
        now = time.time()
        credential = self.policy.credential(now, address)
        if credential is None or self._encoder is None:
            return None
        scheme, secret, expires_at = credential
        again_s = min((expires_at - now) / 2, self._config.auth_resend_interval_s)
        return self._encoder.direct(msg.Auth(scheme), secret), max(again_s, 1.0)

    # ------------------------------------------------------------ for the driver

    def member_connected(
        self, node_id: str, address: str, pub_address: str, tags: Mapping[str, str]
    ) -> bool:
        """A member to connect to; False if not now: its key is not one to connect
        with, or another member holds its address with another key (its own record
        may say any address: it must not take another's connections)."""
        if not self.mode.uses_curve:
            return True  # no key to connect with: the server is not authenticated (jwt)
        key = self.policy.member_key(node_id, tags, time.time())
        holder = self._members.get(address)
        if holder is not None and holder[0] != node_id and key != self._member_keys.get(address):
            self.policy.refused("address_taken", f"{node_id} claims {holder[0]}'s address")
            self._waiting[address] = (node_id, pub_address, tags)
            return False
        self._members[address] = (node_id, pub_address, tags)
        if key is None:
            self._member_keys.pop(address, None)
            self._cut.add(address)  # connected once its key is authorized (a reload)
            return False
        self._member_keys[address] = key
        self._cut.discard(address)
        return True

    def member_disconnected(self, node_id: str, address: str) -> None:
        waiting = self._waiting.get(address)
        if waiting is not None and waiting[0] == node_id:
            del self._waiting[address]
            return
        holder = self._members.get(address)
        if holder is None or holder[0] != node_id:
            return
        del self._members[address]
        self._member_keys.pop(address, None)
        self._cut.discard(address)
        waiting = self._waiting.pop(address, None)
        if waiting is not None:  # the address is free now: its other claimant's turn
            claimant, pub_address, tags = waiting
            if self.member_connected(claimant, address, pub_address, tags):
                self._reconnect(claimant, address, pub_address, True)

    def admits(self, user_id: bytes, event: ev.EnvelopeReceived) -> bool:
        """Whether a message read on the ROUTER from a connection let in as ``user_id``
        goes on to the core. AUTH never does: it binds the connection, here."""
        text = user_id.decode("ascii", "replace")
        envelope = event.envelope
        message = envelope.message
        if type(message) is msg.Auth:
            refusal = self.policy.authenticate(
                text, envelope.sender, message.scheme, event.payload, time.time()
            )
            if refusal is None and self._zap is not None:
                self._zap.release(text)
            return False
        if self.policy.check_speaker(text, envelope.sender, time.time()) is not None:
            return False
        if self.mode.uses_curve:
            named = getattr(message, "reply_address", None)
            if named is not None and named not in self._member_keys:  # members: known
                self._remember_stranger(named, user_id)
        return True

    def _remember_stranger(self, address: str, key: bytes) -> None:
        keys = self._stranger_keys
        keys[address] = key
        keys.move_to_end(address)
        if len(keys) > self._config.non_member_connections_max_count:
            keys.popitem(last=False)


def receive_with_user_id(sock: zmq.Socket[bytes]) -> list[bytes]:
    """Read one waiting message from a secured ROUTER; its first frame (the routing id,
    which decoding skips) replaced by the User-Id its connection was let in with."""
    RECV(sock, NOWAIT, False)  # the routing id
    frame = RECV(sock, NOWAIT, False)  # libzmq gives the peer's properties to its frames
    user_id = str(frame.get("User-Id") or "").encode()
    parts = [user_id, frame.bytes]
    while frame.more:
        frame = RECV(sock, NOWAIT, False)
        parts.append(frame.bytes)
    return parts


def fingerprint(settings: SecurityConfig) -> tuple[tuple[str, int, int], ...]:
    """The files ``settings`` names (a directory's ``*.key`` files), as (path, change
    time, size): a change to any of them is a reason to read them again."""
    paths = [Path(p) for p in settings.files()]
    if settings.authorized_keys is not None:
        directory = Path(settings.authorized_keys)
        paths += sorted(directory.glob("*.key")) if directory.is_dir() else [directory]
    seen = []
    for path in paths:
        try:
            stat = os.stat(path)
            seen.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:
            seen.append((str(path), -1, -1))
    return tuple(seen)


def _nothing(*_: object) -> None:
    pass
