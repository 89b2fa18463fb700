"""What a node needs to know to secure its connections: the mode and the files behind it.

A :class:`SecurityConfig` names files; :meth:`SecurityConfig.load` reads them into
:class:`Credentials` (the only I/O here), which the policy decides with. Loading again
is how keys rotate without a restart (docs/security.md, "Rotating keys").
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from pathlib import Path

from zcluster.address import parse_address
from zcluster.errors import ConfigError, WireError
from zcluster.security.keys import (
    CurveKeyPair,
    check_curve_key,
    generate_curve_key_pair,
    load_authorized_keys,
    load_curve_key_pair,
)
from zcluster.security.tokens import (
    SigningKey,
    VerificationKey,
    load_signing_key,
    load_verification_key,
)
from zcluster.wire import check_name

DEFAULT_CLUSTER = "zcluster"


class SecurityMode(enum.Enum):
    """How a node secures its connections (the seed's ``None``/``Tls``/``MutualTls``/``Jwt``)."""

    #: plaintext, anyone who can reach the ports is trusted (loopback, trusted networks)
    NONE = "none"
    #: CurveZMQ on every socket: encrypted, servers authenticated by their public key;
    #: any client may connect (TLS without client certificates)
    CURVE = "curve"
    #: CurveZMQ, and clients authorized by a directory of public keys (mutual TLS)
    CURVE_MUTUAL = "curve-mutual"
    #: a JWT presented on every connection (ZeroMQ PLAIN): authenticated, not encrypted
    JWT = "jwt"

    @classmethod
    def parse(cls, value: str | SecurityMode) -> SecurityMode:
        if isinstance(value, SecurityMode):
            return value
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(mode.value for mode in cls)
            raise ConfigError(f"unknown security mode {value!r} (one of: {known})") from None

    @property
    def uses_curve(self) -> bool:
        return self in (SecurityMode.CURVE, SecurityMode.CURVE_MUTUAL)


@dataclasses.dataclass(frozen=True)
class SecurityConfig:
    """The security settings of one node; see docs/security.md for a setup per mode.

    Paths may be given as text. Which ones a mode needs:

    - ``curve``: ``key`` (this node's ``.key_secret`` file; a fresh key pair is made for
      each run when omitted, fine for nodes nobody uses as a seed) and the seeds' public
      keys (``seed_keys`` or ``known_hosts``).
    - ``curve-mutual``: as ``curve`` with ``key`` required, plus ``authorized_keys``: a
      directory of ``NAME.key`` certificates (``zmq.auth`` format), NAME being the node
      id the key may speak for. Seeds' keys come from there too when not given.
    - ``jwt``: ``jwt_key`` (the key this node signs its tokens with), ``jwt_algorithm``,
      and ``jwt_verify_keys`` (default: ``jwt_key``, right for HS256); optionally
      ``authorized_nodes``.
    """

    mode: SecurityMode | str = SecurityMode.NONE
    #: this node's Curve key pair (a ``zmq.auth`` ``.key_secret`` file)
    key: Path | str | None = None
    #: seeds' public keys: "HOST:PORT" -> z85 key
    seed_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: a file of "HOST:PORT KEY" lines, one seed per line (a line starting "#" is a comment)
    known_hosts: Path | str | None = None
    #: curve-mutual: a directory of authorized public-key certificates
    authorized_keys: Path | str | None = None
    #: jwt: the key this node signs its handshake tokens with
    jwt_key: Path | str | None = None
    jwt_algorithm: str = "HS256"
    #: jwt: the key id written in tokens' headers (and matched when verifying)
    jwt_kid: str | None = None
    #: jwt: keys that verify peers' tokens (default: jwt_key)
    jwt_verify_keys: tuple[Path | str, ...] = ()
    #: jwt: the node ids that may connect (None: any holder of a valid token)
    authorized_nodes: frozenset[str] | None = None
    #: the cluster's name: every token's audience
    cluster: str = DEFAULT_CLUSTER

    def __post_init__(self) -> None:
        mode = SecurityMode.parse(self.mode)
        object.__setattr__(self, "mode", mode)
        if mode is SecurityMode.CURVE_MUTUAL:
            if self.key is None:
                raise ConfigError("security mode curve-mutual needs this node's key file (key)")
            if self.authorized_keys is None:
                raise ConfigError(
                    "security mode curve-mutual needs a directory of authorized public keys "
                    "(authorized_keys)"
                )
        if mode is SecurityMode.JWT and self.jwt_key is None:
            raise ConfigError(
                "security mode jwt needs the key this node signs tokens with (jwt_key)"
            )
        if not mode.uses_curve and (self.key or self.seed_keys or self.known_hosts):
            raise ConfigError(f"security mode {mode.value} uses no Curve keys (key, seed keys)")
        if mode is not SecurityMode.JWT and (self.jwt_key or self.jwt_verify_keys):
            raise ConfigError(f"security mode {mode.value} uses no JWT keys")
        if mode is not SecurityMode.CURVE_MUTUAL and self.authorized_keys is not None:
            raise ConfigError("authorized_keys is for security mode curve-mutual")
        try:
            check_name(self.cluster, "cluster name")
            for node_id in self.authorized_nodes or ():
                check_name(node_id, "authorized node id")
        except WireError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def security_mode(self) -> SecurityMode:
        assert isinstance(self.mode, SecurityMode)
        return self.mode

    def load(self) -> Credentials:
        """Read every file this mode names; ConfigError names the first bad one."""
        mode = self.security_mode
        pair: CurveKeyPair | None = None
        authorized: dict[bytes, str] = {}
        seeds: dict[str, bytes] = {}
        if mode.uses_curve:
            pair = (
                load_curve_key_pair(Path(self.key), secret_required=True)
                if self.key is not None
                else generate_curve_key_pair()
            )
            if self.authorized_keys is not None:
                authorized = load_authorized_keys(Path(self.authorized_keys))
            if self.known_hosts is not None:
                seeds.update(read_known_hosts(Path(self.known_hosts)))
            for address, key in self.seed_keys.items():
                parse_address(address)
                seeds[address] = check_curve_key(key, f"public key of seed {address}")
        signing: SigningKey | None = None
        verifying: tuple[VerificationKey, ...] = ()
        if mode is SecurityMode.JWT:
            assert self.jwt_key is not None
            signing = load_signing_key(Path(self.jwt_key), self.jwt_algorithm, self.jwt_kid)
            paths = self.jwt_verify_keys or (self.jwt_key,)
            verifying = tuple(
                load_verification_key(Path(path), self.jwt_algorithm, self.jwt_kid)
                for path in paths
            )
        return Credentials(mode, pair, seeds, authorized, signing, verifying)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What the files of a :class:`SecurityConfig` hold, read at one moment."""

    mode: SecurityMode
    #: this node's Curve key pair (curve modes)
    key_pair: CurveKeyPair | None
    #: seed address -> its public key
    seed_keys: Mapping[str, bytes]
    #: authorized public key -> the node id it may speak for (curve-mutual)
    authorized_keys: Mapping[bytes, str]
    #: the key this node signs its tokens with (jwt)
    signing_key: SigningKey | None
    #: keys that verify peers' tokens (jwt)
    verification_keys: tuple[VerificationKey, ...]


def read_known_hosts(path: Path) -> dict[str, bytes]:
    """Seed address -> public key, from "HOST:PORT KEY" lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read known hosts file {path}: {exc}") from None
    keys: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):  # whole lines only: "#" is a z85 digit
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(f"{path}:{number}: expected 'HOST:PORT KEY', got {line!r}")
        address, key = parts
        parse_address(address)
        keys[address] = check_curve_key(key, f"{path}:{number}: public key of {address}")
    return keys
