"""Who may talk to this node: the one place that decides (docs/security.md).

Pure: the runtime asks, this answers, and the runtime carries the verdict out.

Every connection made to our ROUTER or PUB is first a ZeroMQ handshake, which
libzmq hands to our ZAP handler; :meth:`AuthenticationHandler.check_handshake`
answers it with a verdict and the connection's *principal* (its User-Id): the
client's Curve public key, or in mode ``jwt`` the node id and session secret it
gave as its PLAIN username and password. Some modes know from that alone who the
client is (``curve-mutual`` with an authorized keys directory); the others let a
connection to the ROUTER in and wait for its first message, AUTH, to bind the
principal to a node id with a token or a CA certificate
(:meth:`AuthenticationHandler.authenticate`); a connection to the PUB waits for
that binding (``Defer``). Every message read on the ROUTER is then checked
against the principal it came from (:meth:`AuthenticationHandler.check_speaker`).

Refusals are counted per reason (``auth_refused_<reason>``), the first of each
logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence

from zmq.utils import z85  # a codec: no sockets

from zcluster.config import NodeConfig
from zcluster.core.limits import PeerBuckets
from zcluster.errors import AuthError, ConfigError, WireError
from zcluster.security.config import Credentials, SecurityMode
from zcluster.security.keys import NodeCertificate, check_curve_key, verify_certificate
from zcluster.security.tokens import TokenVerifier, generate_token, token_expiry
from zcluster.wire import check_name

log = logging.getLogger("zcluster.security")

#: the tags that carry a node's Curve public key and its CA signature in its record
KEY_TAG = "zcluster.key"
CERTIFICATE_TAG = "zcluster.cert"
#: ZAP domains: one per bound socket, so that a verdict knows what it lets in
DIRECT_DOMAIN = "direct"
PUBSUB_DOMAIN = "pubsub"
#: private claims that bind a token to one connection: the client's Curve key, or the
#: address of the server it is for
KEY_CLAIM = "zcluster_key"
TO_CLAIM = "zcluster_to"
#: AUTH schemes
JWT_SCHEME = "jwt"
CERTIFICATE_SCHEME = "certificate"
#: the replay scope of tokens presented in AUTH
_AUTH_SCOPE = "auth"
#: what a member record tells the policy: the key it announced, and whether it is live
MemberLookup = Callable[[str], "tuple[str | None, bool] | None"]


@dataclasses.dataclass(frozen=True, slots=True)
class Allow:
    """Let the connection in; its messages carry ``user_id`` (its principal)."""

    user_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Deny:
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ignore:
    """Give no answer: libzmq ends the handshake after auth_handshake_timeout_s, and its
    client tries again then (a refusal would stop it for good: not for a client that
    only shares an address with a flood)."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Defer:
    """Hold the handshake until ``user_id`` is bound by an AUTH (then allow it), or
    until the handshake times out (then its client tries again)."""

    user_id: str


Verdict = Allow | Deny | Defer | Ignore


@dataclasses.dataclass(frozen=True, slots=True)
class _Binding:
    node_id: str
    expires_at: float
    #: the AUTH's scheme and credential
    credential: tuple[str, bytes]


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
        self._cluster = cluster
        self._members = members
        #: refusals per reason (``auth_refused_<reason>``), read into the node's stats
        self.counters: Counter[str] = Counter()
        #: refused handshakes per peer address: past the rate, refused unexamined
        self._failures = PeerBuckets(
            config.auth_failures_per_s, config.auth_failures_per_s, config.members_max_count
        )
        #: principal -> what an AUTH bound it to, and with what (to check it again when
        #: the keys are replaced)
        self._bound: OrderedDict[str, _Binding] = OrderedDict()
        #: this run's secret, from which its PLAIN password to each server is made (jwt)
        self.session_secret = secrets.token_hex(16)
        #: the addresses peers reach this node at (set once bound): a token made for a
        #: connection to another address is refused
        self.addresses: set[str] = set()
        self._credentials = credentials
        self._authorized_nodes = authorized_nodes
        #: node id -> its authorized key (curve-mutual)
        self._key_of = {node_id: key for key, node_id in credentials.authorized_keys.items()}
        self._verifier: TokenVerifier | None = None
        if self.mode.uses_tokens:
            self._verifier = TokenVerifier(
                credentials.verification_keys,
                cluster,
                config.auth_token_leeway_s,
                authorized_nodes,
                replay_max_count=config.auth_replay_max_count,
            )

    def replace(
        self, credentials: Credentials, authorized_nodes: frozenset[str] | None, now: float
    ) -> bool:
        """Decide with these from now on. A key or node no longer authorized is refused
        at its next message, and a connection bound by a credential that no longer holds
        is unbound (counted ``auth_revoked``). True if anything allowed before may be
        refused now: the runtime then cuts the connections to our PUB, to admit again
        only those still allowed."""
        if credentials.mode is not self.mode:
            raise ConfigError("the security mode cannot change while the node runs")
        old, old_nodes = self._credentials, self._authorized_nodes
        if credentials.key_pair != old.key_pair:
            # Our record announces our key for the whole run: a new one is for the next.
            log.warning("node %s: its own new key pair takes effect at restart", self.node_id)
            credentials = dataclasses.replace(credentials, key_pair=old.key_pair)
        self._credentials = credentials
        self._authorized_nodes = authorized_nodes
        self._key_of = {node_id: key for key, node_id in credentials.authorized_keys.items()}
        if self._verifier is not None:
            self._verifier.replace_keys(credentials.verification_keys)
            self._verifier.replace_authorized_nodes(authorized_nodes)
        self.prune(now)
        revoked = 0
        for user_id, binding in list(self._bound.items()):
            try:
                self._check_credential(user_id, binding.node_id, *binding.credential, now, None)
            except AuthError:
                del self._bound[user_id]
                revoked += 1
        if revoked:
            self.counters["auth_revoked"] += revoked
            log.warning("node %s: %d connection(s) no longer authorized", self.node_id, revoked)
        narrowed = (
            not set(old.authorized_keys) <= set(credentials.authorized_keys)
            or not set(old.ca_keys) <= set(credentials.ca_keys)
            or any(key not in credentials.verification_keys for key in old.verification_keys)
            or (authorized_nodes is not None and not (old_nodes or set()) <= authorized_nodes)
        )
        return bool(revoked) or narrowed

    def prune(self, now: float) -> None:
        """Forget the bindings whose credential expired (their node did not renew them:
        gone, or refused its renewal)."""
        leeway = self._config.auth_token_leeway_s
        for user_id, binding in list(self._bound.items()):
            if now > binding.expires_at + leeway:
                del self._bound[user_id]

    @property
    def binds_in_band(self) -> bool:
        return self._credentials.binds_in_band

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
        """What our own record must carry: our public key, and the CA's signature of it,
        with which peers check whom they connect to."""
        tags = {}
        key = self.public_key
        if key is not None:
            tags[KEY_TAG] = key.decode()
        certificate = self._credentials.certificate
        if certificate is not None:
            tags[CERTIFICATE_TAG] = certificate.signature_text()
        return tags

    def seed_key(self, address: str) -> bytes | None:
        return self._credentials.seed_keys.get(address)

    def member_key(self, node_id: str, tags: Mapping[str, str], now: float) -> bytes | None:
        """The server key to expect at a member's sockets; None: not to connect to (its
        key is unknown, not authorized, or its certificate does not hold: counted)."""
        if not self.mode.uses_curve:
            return None
        nodes = self._authorized_nodes
        if nodes is not None and node_id not in nodes:
            self.refused("not_authorized", f"member {node_id} is not an authorized node")
            return None
        key = self._key_of.get(node_id)
        if key is not None:
            return key
        try:
            key = check_curve_key(tags.get(KEY_TAG, ""), f"key of member {node_id}")
        except ConfigError:
            self.refused("member_key_missing", f"member {node_id} announced no usable key")
            return None
        if self.mode is not SecurityMode.CURVE_MUTUAL:
            return key
        if not self._credentials.ca_keys:
            self.refused("member_key_unknown", f"no authorized key for member {node_id}")
            return None
        try:
            self._check_certificate(node_id, key, tags.get(CERTIFICATE_TAG, ""), now)
        except AuthError as exc:
            self.refused(exc.reason, f"member {node_id}: {exc.detail}")
            return None
        return key

    def plain_credentials(self, address: str) -> tuple[bytes, bytes]:
        """The PLAIN username and password our connections to ``address`` present (mode
        jwt): a secret of this run for that server alone, so that a server cannot
        present it to another in our name."""
        mac = hmac.new(self.session_secret.encode(), address.encode(), hashlib.sha256)
        return self.node_id.encode(), mac.hexdigest()[:32].encode()

    def generate_token(
        self, node_id: str | None = None, *, now: float, ttl_s: float | None = None
    ) -> str:
        """A token for ``node_id`` (default: this node), signed with this node's key,
        valid for ``ttl_s`` (default ``auth_token_ttl_s``) from ``now`` (unix time).
        ConfigError if this node holds no signing key."""
        key = self._credentials.signing_key
        if key is None:
            raise ConfigError(f"node {self.node_id} holds no JWT signing key (jwt_key)")
        ttl_s = self._config.auth_token_ttl_s if ttl_s is None else ttl_s
        return generate_token(key, node_id or self.node_id, self._cluster, ttl_s, now)

    def credential(self, now: float, address: str) -> tuple[str, bytes, float] | None:
        """What our connection to ``address`` says in AUTH: the scheme, the credential,
        and until when it holds (wall clock). None when the mode binds no connection in
        band. A token we make is for that connection alone: bound to our Curve key
        (curve+jwt) or to the server's address (jwt), so that the server cannot present
        it to another in our name."""
        credentials = self._credentials
        if self.mode.uses_tokens:
            key = credentials.signing_key
            if key is None:  # a token issued for us: a bearer token
                token = credentials.token or ""
                return JWT_SCHEME, token.encode(), token_expiry(token)
            public = self.public_key
            bound = {KEY_CLAIM: public.decode()} if public else {TO_CLAIM: address}
            ttl_s = self._config.auth_token_ttl_s
            token = generate_token(
                key, self.node_id, self._cluster, ttl_s, now, one_time=True, extra=bound
            )
            return JWT_SCHEME, token.encode(), now + ttl_s
        certificate = credentials.certificate
        if certificate is not None:
            text = certificate.signature_text().encode()
            return CERTIFICATE_SCHEME, text, float(certificate.not_after)
        return None

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
            reason = self.refused("handshake_rate", f"too many refused handshakes from {address}")
            return Ignore(reason)
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
        expected = "CURVE" if self.mode.uses_curve else "PLAIN"
        if mechanism != expected or self.mode is SecurityMode.NONE:
            return Deny("mechanism", f"{mechanism} handshake, {expected} expected")
        principal = _principal(self.mode, credentials)
        if principal is None:
            return Deny("handshake_malformed", f"{mechanism} credentials of the wrong shape")
        if self.mode is SecurityMode.CURVE:
            return Allow(principal)
        holder = self._credentials.authorized_keys.get(principal.encode())
        if holder is not None:
            nodes = self._authorized_nodes
            if nodes is not None and holder not in nodes:
                return Deny("not_authorized", f"{holder} is not an authorized node")
            return Allow(principal)
        if not self.binds_in_band:
            return Deny("key_unknown", f"key {principal} is not authorized")
        # Said in the connection's first message (AUTH) on the ROUTER; the PUB waits.
        if domain == DIRECT_DOMAIN or self._binding(principal, now) is not None:
            return Allow(principal)
        return Defer(principal)

    def authenticate(
        self, user_id: str, sender: str, scheme: str, credential: bytes, now: float
    ) -> str | None:
        """An AUTH read on the ROUTER from the connection let in as ``user_id``: bind it
        to ``sender`` until the credential expires. None if bound, else the reason
        (counted)."""
        try:
            expires_at = self._check_credential(user_id, sender, scheme, credential, now)
        except AuthError as exc:
            return self.refused(exc.reason, f"AUTH as {sender}: {exc.detail}")
        bound = self._bound
        bound[user_id] = _Binding(sender, expires_at, (scheme, credential))
        bound.move_to_end(user_id)
        while len(bound) > self._config.auth_bindings_max_count:
            bound.popitem(last=False)
        return None

    def _check_credential(
        self,
        user_id: str,
        sender: str,
        scheme: str,
        credential: bytes,
        now: float,
        scope: str | None = _AUTH_SCOPE,
    ) -> float:
        """Until when ``credential`` binds the principal ``user_id`` to ``sender``
        (``scope`` None: checking again one accepted before)."""
        if not self.binds_in_band:
            raise AuthError("unexpected", "this node takes no AUTH in its mode")
        if self.mode is SecurityMode.JWT and user_id.partition(" ")[0] != sender:
            raise AuthError("identity", f"a connection of {user_id.partition(' ')[0]}")
        if scheme == JWT_SCHEME and self._verifier is not None:
            token = self._verifier.verify(credential, now, subject=sender, scope=scope)
            self._check_bound_to_us(token.claims, user_id)
            return token.expires_at
        if scheme == CERTIFICATE_SCHEME and self._credentials.ca_keys:
            try:
                text = credential.decode("ascii")
            except UnicodeDecodeError:
                raise AuthError("certificate_malformed", "not ASCII") from None
            return self._check_certificate(sender, user_id.encode(), text, now)
        raise AuthError("scheme", f"scheme {scheme[:40]!r} is not this node's")

    def _check_bound_to_us(self, claims: Mapping[str, object], user_id: str) -> None:
        """A token bound to a connection (see ``credential``) must be bound to this one."""
        key = claims.get(KEY_CLAIM)
        if key is not None and (not self.mode.uses_curve or key != user_id):
            raise AuthError("token_audience", "the token is bound to another Curve key")
        to = claims.get(TO_CLAIM)
        if to is not None and to not in self.addresses:
            raise AuthError("token_audience", f"the token is for the node at {str(to)[:80]}")

    def _check_certificate(self, node_id: str, key: bytes, text: str, now: float) -> float:
        certificate = NodeCertificate.from_signature_text(self._cluster, node_id, key, text)
        ca_keys = self._credentials.ca_keys
        verify_certificate(certificate, ca_keys, self._cluster, node_id, key, now)
        nodes = self._authorized_nodes
        if nodes is not None and node_id not in nodes:
            raise AuthError("not_authorized", f"{node_id} is not an authorized node")
        return float(certificate.not_after)

    def _binding(self, user_id: str, now: float) -> str | None:
        """The node id ``user_id`` is bound to now (None: unbound, or expired)."""
        binding = self._bound.get(user_id)
        if binding is None or now > binding.expires_at + self._config.auth_token_leeway_s:
            return None
        return binding.node_id

    def check_speaker(self, user_id: str, sender: str, now: float) -> str | None:
        """Whether a message read on our ROUTER from a connection let in as ``user_id``
        may speak as ``sender``: None if so, else the reason (counted, logged once)."""
        if self.mode is SecurityMode.CURVE:
            # Any key may join under a name nobody live holds; a live member's name is
            # spoken only with the key its record announced.
            member = self._members(sender)
            if member is not None:
                key, live = member
                if live and key != user_id:
                    return self.refused("identity", f"a key other than {sender}'s spoke as it")
            return None
        holder = self._credentials.authorized_keys.get(user_id.encode())
        if holder is None:
            holder = self._binding(user_id, now)
            if holder is None and not self.binds_in_band:
                return self.refused(
                    "key_unknown", f"{sender}'s key is not (or no longer) authorized"
                )
            if holder is None:
                detail = f"{sender}'s credential is expired, revoked or was never given"
                return self.refused("unauthenticated", detail)
        if holder != sender:
            return self.refused("identity", f"the connection of {holder} spoke as {sender}")
        nodes = self._authorized_nodes
        if nodes is not None and holder not in nodes:
            return self.refused("not_authorized", f"{holder} is no longer authorized")
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


def _principal(mode: SecurityMode, credentials: Sequence[bytes]) -> str | None:
    """Who a handshake's credentials say the client is: its Curve key (z85), or (mode
    jwt) "NODE SECRET" from its PLAIN username and password; None if malformed."""
    if mode.uses_curve:
        if len(credentials) != 1 or len(credentials[0]) != 32:
            return None
        return z85.encode(credentials[0]).decode()
    if len(credentials) != 2 or not 16 <= len(credentials[1]) <= 64:
        return None
    try:
        node_id = check_name(credentials[0].decode(), "node id")
        secret = credentials[1].decode("ascii")
    except (UnicodeDecodeError, WireError):
        return None
    return f"{node_id} {secret}" if secret.isalnum() else None
