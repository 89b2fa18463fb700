"""Who may talk to this node: the one place that decides (docs/security.md).

Pure: the runtime asks, this answers, and the runtime carries the verdict out.
Two questions come from the receiving side:

- a ZeroMQ handshake (through ZAP) on our ROUTER or PUB: may this client connect,
  and under which User-Id (:meth:`AuthenticationHandler.check_handshake`);
- a message read on our ROUTER under that User-Id: may it speak as the node it
  names as its sender (:meth:`AuthenticationHandler.check_speaker`)?

and two from the connecting side: which server key to expect at a member's or a
seed's address, and which token to present. Refusals are counted per reason
(``auth_refused_<reason>``) and logged once per reason.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence

from zmq.utils import z85  # a codec: no sockets

from zcluster.config import NodeConfig
from zcluster.core.limits import PeerBuckets
from zcluster.errors import AuthError, ConfigError
from zcluster.security.config import Credentials, SecurityMode
from zcluster.security.keys import check_curve_key
from zcluster.security.tokens import TokenVerifier, generate_token

log = logging.getLogger("zcluster.security")

#: the tag that carries a node's Curve public key in its member record
KEY_TAG = "zcluster.key"
#: ZAP domains: one per bound socket, so that a verdict knows what it lets in
DIRECT_DOMAIN = "direct"
PUBSUB_DOMAIN = "pubsub"
#: what a member record looks like to the policy: its tags, and whether it is live
MemberLookup = Callable[[str], "tuple[Mapping[str, str], bool] | None"]


@dataclasses.dataclass(frozen=True, slots=True)
class Allow:
    """Let the connection in; its messages carry ``user_id``."""

    user_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Deny:
    reason: str
    detail: str


Verdict = Allow | Deny


class AuthenticationHandler:
    """The security policy of one node, for one set of :class:`Credentials` at a time
    (``replace`` swaps them: rotation without a restart)."""

    def __init__(
        self,
        node_id: str,
        credentials: Credentials,
        config: NodeConfig,
        *,
        cluster: str,
        authorized_nodes: frozenset[str] | None,
        members: MemberLookup,
    ) -> None:
        self.node_id = node_id
        self.mode = credentials.mode
        self._config = config
        #: refusals per reason (``auth_refused_<reason>``), read into the node's stats
        self.counters: Counter[str] = Counter()
        self._cluster = cluster
        self._members = members
        #: refused handshakes per peer address: past the rate, refused unexamined
        self._failures = PeerBuckets(
            config.auth_failures_per_s, config.auth_failures_per_s, config.members_max_count
        )
        #: User-Id -> (node id, token expiry) of connections let in with a token
        self._principals: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._credentials = credentials
        self._authorized_nodes = authorized_nodes
        self._verifier: TokenVerifier | None = None
        #: node id -> its authorized key (curve-mutual)
        self._key_of: dict[str, bytes] = {}
        self.replace(credentials, authorized_nodes)

    def replace(self, credentials: Credentials, authorized_nodes: frozenset[str] | None) -> None:
        """Decide with these from now on: a key or node no longer authorized is refused
        at its next message (the runtime also cuts its subscriptions)."""
        if credentials.mode is not self.mode:
            raise ValueError("the security mode cannot change at run time")
        self._credentials = credentials
        self._authorized_nodes = authorized_nodes
        self._key_of = {node_id: key for key, node_id in credentials.authorized_keys.items()}
        if self.mode is SecurityMode.JWT:
            config = self._config
            if self._verifier is None:
                self._verifier = TokenVerifier(
                    credentials.verification_keys,
                    self._cluster,
                    config.auth_token_leeway_s,
                    authorized_nodes,
                    replay_max_count=config.auth_replay_max_count,
                )
            else:
                self._verifier.replace_keys(credentials.verification_keys)
                self._verifier.replace_authorized_nodes(authorized_nodes)
            self._principals.clear()  # looked up again, against the new keys

    # ------------------------------------------------------------ connecting side

    @property
    def public_key(self) -> bytes | None:
        pair = self._credentials.key_pair
        return pair.public if pair is not None else None

    @property
    def secret_key(self) -> bytes | None:
        pair = self._credentials.key_pair
        return pair.secret if pair is not None else None

    def my_tags(self) -> dict[str, str]:
        """What our own record must carry: our public key, where peers connect with it."""
        key = self.public_key
        return {KEY_TAG: key.decode()} if key is not None else {}

    def seed_key(self, address: str) -> bytes | None:
        return self._credentials.seed_keys.get(address)

    def member_key(self, node_id: str, tags: Mapping[str, str]) -> bytes | None:
        """The server key to expect at a member's sockets; None: not to connect to (its
        key is unknown or not authorized: counted)."""
        if not self.mode.uses_curve:
            return None
        if self.mode is SecurityMode.CURVE_MUTUAL:
            key = self._key_of.get(node_id)
            if key is None:
                self.refused("member_key_unknown", f"no authorized key for member {node_id}")
            return key
        try:
            return check_curve_key(tags.get(KEY_TAG, ""), f"key of member {node_id}")
        except ConfigError:  # a record without a usable key
            self.refused("member_key_missing", f"member {node_id} announced no usable key")
            return None

    def token(self, now: float) -> tuple[bytes, bytes, float]:
        """The PLAIN username and password to present on a new connection, and when the
        token in it expires (jwt)."""
        key = self._credentials.signing_key
        assert key is not None
        ttl_s = self._config.auth_token_ttl_s
        token = generate_token(key, self.node_id, self._cluster, ttl_s, now)
        return self.node_id.encode(), token.encode(), now + ttl_s

    # ------------------------------------------------------------ receiving side

    def check_handshake(
        self,
        domain: str,
        address: str,
        mechanism: str,
        credentials: Sequence[bytes],
        now: float,
    ) -> Verdict:
        """A ZAP request: a client of our ROUTER (``direct``) or PUB (``pubsub``) domain,
        connecting from ``address``."""
        if not self._failures.of(address).has(now):
            return self._deny("handshake_rate", f"too many refused handshakes from {address}")
        verdict = self._verdict(domain, mechanism, credentials, now)
        if isinstance(verdict, Deny):
            self._failures.of(address).take(now)
            return self._deny(verdict.reason, f"{verdict.detail} (from {address}, {domain})")
        return verdict

    def _verdict(
        self, domain: str, mechanism: str, credentials: Sequence[bytes], now: float
    ) -> Verdict:
        if domain not in (DIRECT_DOMAIN, PUBSUB_DOMAIN):
            return Deny("handshake_malformed", f"unknown domain {domain!r}")
        expected = "PLAIN" if self.mode is SecurityMode.JWT else "CURVE"
        if mechanism != expected or self.mode is SecurityMode.NONE:
            return Deny("mechanism", f"{mechanism} handshake, {expected} expected")
        if self.mode is SecurityMode.JWT:
            if len(credentials) != 2:
                return Deny("handshake_malformed", "PLAIN without username and password")
            return self._token_verdict(credentials[0], credentials[1], domain, now)
        if len(credentials) != 1 or len(credentials[0]) != 32:
            return Deny("handshake_malformed", "CURVE without a 32-byte client key")
        key = z85.encode(credentials[0])
        if self.mode is SecurityMode.CURVE_MUTUAL and key not in self._credentials.authorized_keys:
            return Deny("key_unknown", f"key {key.decode()} is not authorized")
        return Allow(key.decode())

    def _token_verdict(self, username: bytes, password: bytes, domain: str, now: float) -> Verdict:
        assert self._verifier is not None
        try:
            claimed = username.decode()
        except UnicodeDecodeError:
            return Deny("handshake_malformed", "username is not UTF-8")
        try:
            verified = self._verifier.verify(password, now, subject=claimed, scope=domain)
        except AuthError as exc:
            return Deny(exc.reason, f"{claimed!r}: {exc.detail}")
        user_id = f"{verified.subject} {verified.expires_at!r}"
        self._remember(user_id, verified.subject, verified.expires_at)
        return Allow(user_id)

    def _remember(self, user_id: str, node_id: str, expires_at: float) -> None:
        principals = self._principals
        principals[user_id] = (node_id, expires_at)
        principals.move_to_end(user_id)
        while len(principals) > self._config.members_max_count * 4:
            principals.popitem(last=False)

    def check_speaker(self, user_id: str, sender: str, now: float) -> str | None:
        """Whether a message read on our ROUTER from a connection let in as ``user_id``
        may speak as ``sender``: None if so, else the reason (counted, logged once)."""
        mode = self.mode
        if mode is SecurityMode.JWT:
            principal = self._principals.get(user_id)
            if principal is None:  # forgotten (bounded) or keys replaced: read it again
                principal = _principal_of(user_id)
            node_id, expires_at = principal
            if node_id != sender:
                return self.refused("identity", f"{node_id} sent a message as {sender}")
            if now > expires_at + self._config.auth_token_leeway_s:
                return self.refused("token_expired", f"{node_id}'s connection token expired")
            nodes = self._authorized_nodes
            if nodes is not None and node_id not in nodes:
                return self.refused("token_not_authorized", f"{node_id} is no longer authorized")
            return None
        key = user_id.encode()
        if mode is SecurityMode.CURVE_MUTUAL:
            holder = self._credentials.authorized_keys.get(key)
            if holder is None:
                return self.refused("key_unknown", f"key {user_id} is no longer authorized")
            if holder != sender:
                return self.refused("identity", f"the key of {holder} sent a message as {sender}")
            return None
        # curve: any key may join under a name nobody live holds; a live member's name
        # is spoken only with the key its record announced.
        member = self._members(sender)
        if member is not None:
            tags, live = member
            if live and tags.get(KEY_TAG) != user_id:
                return self.refused("identity", f"a key other than {sender}'s spoke as {sender}")
        return None

    def refused(self, reason: str, detail: str) -> str:
        """Count a refusal (``auth_refused_<reason>``), log its first of each reason."""
        return self._deny(reason, detail).reason

    def _deny(self, reason: str, detail: str) -> Deny:
        name = f"auth_refused_{reason}"
        self.counters[name] += 1
        if self.counters[name] == 1:
            log.warning("node %s refused: %s (counted as %s)", self.node_id, detail, name)
        return Deny(reason, detail)


def _principal_of(user_id: str) -> tuple[str, float]:
    """The node id and token expiry a User-Id of ours names ("NODE EXPIRY")."""
    node_id, _, expires_at = user_id.rpartition(" ")
    try:
        return node_id, float(expires_at)
    except ValueError:
        return "", 0.0
