"""JWTs for the "jwt" security mode: keys, issuing, and verification (docs/security.md).

A connecting node presents a token naming itself (``sub``); the receiving node checks it
with a :class:`TokenVerifier` before accepting any message. Every token operation is done
by PyJWT and every key is loaded by ``cryptography``: nothing here parses or signs by hand.
Pure: the caller passes the current time, so verification is deterministic and testable.
"""

from __future__ import annotations

import heapq
import math
import re
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt import exceptions as jwt_errors

from zcluster.errors import AuthError, ConfigError

#: the only algorithms accepted; ``none`` and everything else is refused
SUPPORTED_ALGORITHMS: Final = ("HS256", "RS256", "ES256")
#: the shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size)
MIN_SECRET_BYTES: Final = 32
MIN_RSA_BITS: Final = 2048
#: every ``AuthError.reason`` that :meth:`TokenVerifier.verify` raises
REASONS: Final = frozenset(
    {"token_malformed", "token_algorithm", "token_signature", "token_expired"}
    | {"token_not_yet_valid", "token_audience", "token_subject", "token_not_authorized"}
    | {"token_replayed", "token_replay_memory_full"}
)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_Key = TypeVar("_Key", "SigningKey", "VerificationKey")

# compact serialization: three unpadded base64url parts (the signature is empty only for
# "none", which is let through here so that it is refused as an algorithm, not as garbage)
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# which PyJWT exception means which refusal (subclasses first: InvalidSignatureError
# is a DecodeError)
_REASON_OF: Final[tuple[tuple[type[Exception], str], ...]] = (
    (jwt_errors.InvalidSignatureError, "token_signature"),
    (jwt_errors.InvalidAlgorithmError, "token_algorithm"),
    (jwt_errors.InvalidKeyError, "token_algorithm"),
    (jwt_errors.ExpiredSignatureError, "token_expired"),
    (jwt_errors.ImmatureSignatureError, "token_not_yet_valid"),
    (jwt_errors.InvalidAudienceError, "token_audience"),
)
_MISSING: Final = {"exp": "token_expired", "aud": "token_audience", "sub": "token_subject"}

# exp/nbf/iat are checked here against the caller's `now` (PyJWT would read the clock);
# sub and jti here too, alike on every PyJWT 2.x
_DECODE_OPTIONS: Final[jwt.types.Options] = {
    "require": ["exp", "aud", "sub"],
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_sub": False,
    "verify_jti": False,
    "enforce_minimum_key_length": True,
}


@dataclass(frozen=True)
class SigningKey:
    """What signs tokens: an HS256 secret, or an RS256/ES256 private key as PEM bytes."""

    algorithm: str
    key: bytes = field(repr=False)
    kid: str | None = None

    def __post_init__(self) -> None:
        _check_names(self.algorithm, self.kid)
        if not isinstance(self.key, bytes):
            raise ConfigError("a signing key is bytes (an HS256 secret or a PEM private key)")
        if self.algorithm == "HS256":
            _check_secret(self.key)
        else:
            _check_public(_private_key(self.key).public_key(), self.algorithm, "signing")


@dataclass(frozen=True)
class VerificationKey:
    """What checks tokens of exactly one algorithm: an HS256 secret, or an RS256/ES256
    public key (an object, or PEM bytes of a public or private key: made an object here)."""

    algorithm: str
    key: bytes | PublicKey = field(repr=False)
    kid: str | None = None

    def __post_init__(self) -> None:
        _check_names(self.algorithm, self.kid)
        if self.algorithm == "HS256":
            if not isinstance(self.key, bytes):
                raise ConfigError("an HS256 verification key is the secret, as bytes")
            _check_secret(self.key)
            return
        key = _public_key(self.key) if isinstance(self.key, bytes) else self.key
        _check_public(key, self.algorithm, "verifying")
        object.__setattr__(self, "key", key)  # parsed once, not on every token


@dataclass(frozen=True)
class VerifiedToken:
    """What a token that passed every check says."""

    subject: str
    expires_at: float
    #: the ``jti`` of a one-time token; None for a bearer token
    token_id: str | None
    #: every claim, as the token has them (a caller's own claims: see generate_token)
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False)


def load_signing_key(path: Path, algorithm: str, kid: str | None = None) -> SigningKey:
    """The key in ``path``: an HS256 secret (at least 32 bytes; a trailing newline is
    not part of it), an RSA private key PEM of 2048+ bits for RS256, or an EC P-256
    private key PEM for ES256. ConfigError, naming the file, if it is not that."""
    return _load(SigningKey, path, algorithm, kid)


def load_verification_key(path: Path, algorithm: str, kid: str | None = None) -> VerificationKey:
    """The key in ``path``: an HS256 secret, or a public key PEM for RS256/ES256 (a
    private key PEM is accepted too, and only its public half kept)."""
    return _load(VerificationKey, path, algorithm, kid)


def generate_token(
    key: SigningKey,
    node_id: str,
    audience: str,
    ttl_s: float,
    now: float,
    *,
    one_time: bool = False,
    extra: Mapping[str, str] | None = None,
) -> str:
    """A token for node ``node_id`` valid from ``now`` for ``ttl_s`` seconds, for
    ``audience``. ``one_time`` adds a random ``jti``: a verifier accepts it once per scope.
    ``extra``: more claims (private ones, which bind the token to one connection)."""
    if not isinstance(node_id, str) or not node_id:
        raise ConfigError(f"a token's node id must be a non-empty string, got {node_id!r}")
    if not isinstance(audience, str) or not audience:
        raise ConfigError(f"a token's audience must be a non-empty string, got {audience!r}")
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ConfigError(f"a token's ttl must be a positive number of seconds, got {ttl_s!r}")
    issued = math.floor(now)
    claims: dict[str, Any] = {
        "sub": node_id,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": math.ceil(now + ttl_s),
    }
    if one_time:
        claims["jti"] = secrets.token_urlsafe(16)
    claims.update(extra or {})
    headers = None if key.kid is None else {"kid": key.kid}
    return jwt.encode(claims, key.key, algorithm=key.algorithm, headers=headers)


def token_expiry(token: str) -> float:
    """When a token of our own says it expires (unverified: it is ours to present, not
    to trust), to present a fresh one before then; ConfigError if it says nothing."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        expiry = _instant(claims, "exp")
    except (jwt_errors.PyJWTError, AuthError) as exc:
        raise ConfigError(f"the token given to this node is malformed: {exc}") from None
    if expiry is None:
        raise ConfigError("the token given to this node has no expiry (exp)")
    return expiry


class TokenVerifier:
    """Checks tokens: form, algorithm, signature, time, audience, subject, authorization
    and, for one-time tokens, replay.

    A token without ``jti`` is a bearer token: accepted every time until it expires, so
    whoever sees it can replay it. A token with a ``jti`` (one-time) is accepted once per
    ``scope``; its id is remembered until the token expires. ``now`` is expected not to
    go backwards. Every refusal is an :class:`AuthError` whose reason is in :data:`REASONS`.
    """

    def __init__(
        self,
        keys: Sequence[VerificationKey],
        audience: str,
        leeway_s: float,
        authorized_nodes: frozenset[str] | None,
        max_token_bytes: int = 8192,
        replay_max_count: int = 100_000,
    ) -> None:
        if not isinstance(audience, str) or not audience:
            raise ConfigError(f"the token audience must be a non-empty string, got {audience!r}")
        if not math.isfinite(leeway_s) or leeway_s < 0:
            raise ConfigError(f"the token leeway must be >= 0 seconds, got {leeway_s!r}")
        if max_token_bytes < 1 or replay_max_count < 1:
            raise ConfigError("max_token_bytes and replay_max_count must be at least 1")
        self._audience = audience
        self._leeway = float(leeway_s)
        self._max_bytes = max_token_bytes
        self._replay_max = replay_max_count
        self._keys: tuple[VerificationKey, ...] = ()
        self._authorized: frozenset[str] | None = None
        self.replace_keys(keys)
        self.replace_authorized_nodes(authorized_nodes)
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}  # (scope, jti) -> when to forget it
        self._forget: list[tuple[float, str, str]] = []  # heap of (forget_at, scope, jti)

    def replace_keys(self, keys: Iterable[VerificationKey]) -> None:
        """Verify with these keys from now on (key rotation)."""
        checked = tuple(keys)
        if not checked or not all(isinstance(k, VerificationKey) for k in checked):
            raise ConfigError("a token verifier needs one or more VerificationKey")
        self._keys = checked

    def replace_authorized_nodes(self, nodes: Iterable[str] | None) -> None:
        """Accept tokens of these node ids only from now on (None: of any node)."""
        self._authorized = None if nodes is None else frozenset(nodes)

    @property
    def remembered_token_ids(self) -> int:
        """How many one-time token ids the replay memory holds."""
        return len(self._seen)

    def verify(
        self,
        token: str | bytes,
        now: float,
        *,
        subject: str | None = None,
        scope: str | None = "",
    ) -> VerifiedToken:
        """The verified claims of ``token`` at time ``now``, if it is issued to
        ``subject`` (when given); AuthError otherwise, whatever ``token`` is. A one-time
        token is accepted once per ``scope``; ``scope`` None checks again a token already
        accepted (keys were replaced), without counting it as a use."""
        text = self._text(token)
        try:
            header = jwt.get_unverified_header(text)
        except (jwt_errors.PyJWTError, ValueError, TypeError, RecursionError) as exc:
            raise AuthError("token_malformed", f"token header: {_shown(str(exc))}") from None
        claims = self._decoded(text, self._candidates(header))
        expires_at = self._check_times(claims, now)
        node = self._check_subject(claims, subject)
        token_id = claims.get("jti")
        if token_id is None:
            return VerifiedToken(node, expires_at, None, claims)
        if not isinstance(token_id, str):
            raise AuthError("token_malformed", "token 'jti' claim is not a string")
        if scope is not None:
            self._remember(scope, token_id, expires_at + self._leeway, now)
        return VerifiedToken(node, expires_at, token_id, claims)

    def _text(self, token: object) -> str:
        if not isinstance(token, str | bytes):
            raise AuthError("token_malformed", f"a token is str or bytes, not {type(token)}")
        if len(token) > self._max_bytes:
            raise AuthError("token_malformed", f"token is longer than {self._max_bytes} bytes")
        # a non-ASCII byte becomes U+FFFD, which the pattern refuses
        text = token if isinstance(token, str) else token.decode("ascii", "replace")
        if _COMPACT.fullmatch(text) is None:
            raise AuthError("token_malformed", "token is not 3 ASCII base64url parts joined by '.'")
        return text

    def _candidates(self, header: dict[str, Any]) -> list[VerificationKey]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
            raise AuthError(
                "token_algorithm",
                f"token algorithm {_shown(alg)} is refused: only HS256, "
                "RS256 and ES256 are accepted",
            )
        kid = header.get("kid")  # PyJWT has checked it is a string when present
        # the key pins the algorithm: an HS256 token never meets an RSA/EC key
        keys = [k for k in self._keys if k.algorithm == alg and (kid is None or k.kid == kid)]
        if not keys:
            named = "" if kid is None else f" with key id {_shown(kid)}"
            raise AuthError("token_algorithm", f"no {alg} verification key{named} is configured")
        return keys

    def _decoded(self, text: str, keys: list[VerificationKey]) -> dict[str, Any]:
        for key in keys:
            try:
                return jwt.decode(
                    text,
                    key.key,
                    algorithms=[key.algorithm],
                    audience=self._audience,
                    options=_DECODE_OPTIONS,
                )
            except jwt_errors.InvalidSignatureError:
                continue  # maybe the next key of a rotation signed it
            except (jwt_errors.PyJWTError, ValueError, TypeError, RecursionError) as exc:
                raise _refusal(exc) from None
        raise AuthError(
            "token_signature", f"token signature matches none of the {len(keys)} candidate keys"
        )

    def _check_times(self, claims: dict[str, Any], now: float) -> float:
        exp = _instant(claims, "exp")
        if exp is None or exp <= now - self._leeway:
            when = "has no expiry" if exp is None else f"expired {now - exp:g}s ago"
            raise AuthError("token_expired", f"token {when} (leeway {self._leeway:g}s)")
        for name in ("nbf", "iat"):
            instant = _instant(claims, name)
            if instant is not None and instant > now + self._leeway:
                raise AuthError(
                    "token_not_yet_valid",
                    f"token '{name}' is {instant - now:g}s in the future "
                    f"(leeway {self._leeway:g}s)",
                )
        return exp

    def _check_subject(self, claims: dict[str, Any], subject: str | None) -> str:
        node = claims.get("sub")
        if not isinstance(node, str) or not node:
            raise AuthError("token_subject", "token 'sub' claim is not a node id")
        if subject is not None and node != subject:
            raise AuthError(
                "token_subject", f"token is for node {_shown(node)}, not {_shown(subject)}"
            )
        if self._authorized is not None and node not in self._authorized:
            raise AuthError("token_not_authorized", f"node {_shown(node)} is not authorized")
        return node

    def _remember(self, scope: str, token_id: str, forget_at: float, now: float) -> None:
        with self._lock:
            # forget ids whose tokens can no longer be accepted anyway, soonest first
            while self._forget and self._forget[0][0] <= now:
                _, old_scope, old_id = heapq.heappop(self._forget)
                self._seen.pop((old_scope, old_id), None)
            if (scope, token_id) in self._seen:
                raise AuthError(
                    "token_replayed", f"one-time token {_shown(token_id)} was already used"
                )
            if len(self._seen) >= self._replay_max:
                # Evicting a live id would let its token be replayed: fail closed instead,
                # refusing new one-time tokens until remembered ones expire.
                raise AuthError(
                    "token_replay_memory_full",
                    f"{self._replay_max} unexpired one-time tokens are remembered already",
                )
            self._seen[scope, token_id] = forget_at
            heapq.heappush(self._forget, (forget_at, scope, token_id))


def _refusal(exc: Exception) -> AuthError:
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        reason = _MISSING.get(exc.claim, "token_malformed")
        return AuthError(reason, f"token has no {_shown(exc.claim)} claim")
    for kind, reason in _REASON_OF:
        if isinstance(exc, kind):
            return AuthError(reason, f"token refused by PyJWT: {_shown(str(exc))}")
    return AuthError("token_malformed", f"token is malformed: {_shown(str(exc))}")


def _instant(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError("token_malformed", f"token '{name}' claim is not a number")
    try:
        instant = float(value)
    except OverflowError:
        instant = math.inf
    if not math.isfinite(instant):
        raise AuthError("token_malformed", f"token '{name}' claim is not a finite number")
    return instant


def _shown(value: object) -> str:
    """A token's value in a message, cut short: tokens come from strangers."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _load(kind: type[_Key], path: Path, algorithm: str, kid: str | None) -> _Key:
    _check_names(algorithm, kid)
    what = f"{algorithm} {'signing' if kind is SigningKey else 'verification'} key"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if algorithm == "HS256":
        data = data.rstrip(b"\r\n")  # the newline an editor or `echo` adds is not secret
    try:
        return kind(algorithm, data, kid)
    except ConfigError as exc:
        raise ConfigError(f"{path} ({what}): {exc}") from None


def _check_names(algorithm: object, kid: object) -> None:
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise ConfigError(
            f"unsupported JWT algorithm {algorithm!r}: use one of {', '.join(SUPPORTED_ALGORITHMS)}"
        )
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise ConfigError(f"a key id must be a non-empty string or None, got {kid!r}")


def _check_secret(secret: bytes) -> None:
    # PyJWT refuses these as HMAC secrets too; say so at load time, plainly
    if b"-----BEGIN" in secret or secret.startswith((b"ssh-", b"ecdsa-")):
        raise ConfigError("this is a PEM/SSH key, not an HS256 secret (use RS256 or ES256)")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"an HS256 secret must be at least {MIN_SECRET_BYTES} bytes, this one has {len(secret)}"
        )


def _private_key(data: bytes) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError("the private key is encrypted; give an unencrypted PEM") from None
    except (ValueError, UnsupportedAlgorithm):
        public = b"PUBLIC KEY-----" in data
        raise ConfigError(
            "this is a public key; signing needs the private key"
            if public
            else "this is not a PEM private key"
        ) from None


def _public_key(data: bytes) -> object:
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        if b"PRIVATE KEY-----" not in data:
            raise ConfigError("this is neither a PEM public key nor a PEM private key") from None
    return _private_key(data).public_key()


def _check_public(key: object, algorithm: str, use: str) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        have, fits = f"an RSA {key.key_size}-bit key", key.key_size >= MIN_RSA_BITS
    elif isinstance(key, ec.EllipticCurvePublicKey):
        have, fits = f"an EC {key.curve.name} key", isinstance(key.curve, ec.SECP256R1)
    else:
        have, fits = f"a {type(key).__name__} key", False
    if not fits or algorithm != ("RS256" if isinstance(key, rsa.RSAPublicKey) else "ES256"):
        need = f"an RSA key of {MIN_RSA_BITS}+ bits" if algorithm == "RS256" else "an EC P-256 key"
        raise ConfigError(f"this is {have}, but {use} {algorithm} tokens needs {need}")
