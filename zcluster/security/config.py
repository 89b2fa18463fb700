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
    NodeCertificate,
    check_curve_key,
    generate_curve_key_pair,
    load_authorized_keys,
    load_ca_public_keys,
    load_curve_key_pair,
)
from zcluster.security.tokens import (
    SigningKey,
    VerificationKey,
    load_signing_key,
    load_verification_key,
    token_expiry,
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
    #: CurveZMQ, and clients authorized by a directory of public keys or a certificate
    #: signed by the cluster's CA (mutual TLS)
    CURVE_MUTUAL = "curve-mutual"
    #: a JWT presented on every connection: authenticated, not encrypted
    JWT = "jwt"
    #: CurveZMQ for confidentiality and server authentication, a JWT for the client
    CURVE_JWT = "curve+jwt"

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
        return self in (SecurityMode.CURVE, SecurityMode.CURVE_MUTUAL, SecurityMode.CURVE_JWT)

    @property
    def uses_tokens(self) -> bool:
        return self in (SecurityMode.JWT, SecurityMode.CURVE_JWT)


@dataclasses.dataclass(frozen=True)
class SecurityConfig:
    """The security settings of one node; docs/security.md has a setup per mode.

    Paths may be given as text. What each mode needs:

    - ``curve``: ``key`` (this node's ``.key_secret`` file; a fresh key pair is made for
      each run when omitted, fine for a node nobody uses as a seed) and the seeds'
      public keys (``seed_keys`` or ``known_hosts``).
    - ``curve-mutual``: as ``curve`` with ``key`` required, and who may connect: a
      directory of ``NAME.key`` certificates (``authorized_keys``, ``zmq.auth`` format;
      NAME is the node id the key speaks for), or the cluster CA's public key (``ca``)
      with this node's ``certificate`` signed by it, or both.
    - ``jwt``: the key this node signs its tokens with (``jwt_key``, with
      ``jwt_algorithm``), or a token issued for it (``jwt_token``); the keys that
      verify others' tokens (``jwt_verify_keys``, default ``jwt_key``);
      optionally ``authorized_nodes``.
    - ``curve+jwt``: both ``curve``'s and ``jwt``'s.
    """

    mode: SecurityMode | str = SecurityMode.NONE
    #: this node's Curve key pair (a ``zmq.auth`` ``.key_secret`` file)
    key: Path | str | None = None
    #: seeds' public keys: "HOST:PORT" -> z85 key, or the path of its ``.key`` file
    seed_keys: Mapping[str, str | Path] = dataclasses.field(default_factory=dict)
    #: a file of "HOST:PORT KEY" lines, one seed per line (a line starting "#" is a comment)
    known_hosts: Path | str | None = None
    #: curve-mutual: a directory of authorized public-key certificates
    authorized_keys: Path | str | None = None
    #: curve-mutual: the public keys of the cluster CA (several while it is rotated)
    ca: tuple[Path | str, ...] = ()
    #: curve-mutual: this node's certificate, signed by the CA (``zcluster keygen --sign``)
    certificate: Path | str | None = None
    #: jwt: the key this node signs its tokens with
    jwt_key: Path | str | None = None
    #: jwt: a token issued for this node (``zcluster token issue``), instead of jwt_key
    jwt_token: Path | str | None = None
    jwt_algorithm: str = "HS256"
    #: jwt: the key id written in tokens' headers (and matched when verifying)
    jwt_kid: str | None = None
    #: jwt: keys that verify peers' tokens (default: jwt_key)
    jwt_verify_keys: tuple[Path | str, ...] = ()
    #: the node ids that may connect (None: any that passes the mode's checks)
    authorized_nodes: frozenset[str] | None = None
    #: the cluster's name: every token's audience, every certificate's cluster
    cluster: str = DEFAULT_CLUSTER

    def __post_init__(self) -> None:
        mode = SecurityMode.parse(self.mode)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "ca", tuple(self.ca))
        object.__setattr__(self, "jwt_verify_keys", tuple(self.jwt_verify_keys))
        if self.authorized_nodes is not None:
            object.__setattr__(self, "authorized_nodes", frozenset(self.authorized_nodes))
        for problem in self._problems(mode):
            raise ConfigError(problem)
        try:
            check_name(self.cluster, "cluster name")
            for node_id in self.authorized_nodes or ():
                check_name(node_id, "authorized node id")
        except WireError as exc:
            raise ConfigError(str(exc)) from None

    def _problems(self, mode: SecurityMode) -> list[str]:
        """What is missing or out of place for ``mode``, each said in a sentence."""
        name = f"security mode {mode.value}"
        problems = []
        if not mode.uses_curve and (self.key or self.seed_keys or self.known_hosts):
            problems.append(f"{name} uses no Curve keys (key, seed_keys, known_hosts)")
        if mode is SecurityMode.CURVE_MUTUAL:
            if self.key is None:
                problems.append(f"{name} needs this node's key file (key)")
            if self.authorized_keys is None and not self.ca:
                problems.append(
                    f"{name} needs who may connect: a directory of authorized public keys "
                    "(authorized_keys), or the cluster CA's public key (ca)"
                )
            if self.ca and self.certificate is None:
                problems.append(f"{name} with a CA needs this node's certificate (certificate)")
        elif self.authorized_keys is not None or self.ca or self.certificate is not None:
            problems.append("authorized_keys, ca and certificate are for mode curve-mutual")
        if mode.uses_tokens:
            if (self.jwt_key is None) == (self.jwt_token is None):
                problems.append(
                    f"{name} needs one of: the key this node signs its tokens with "
                    "(jwt_key), or a token issued for it (jwt_token)"
                )
            if self.jwt_key is None and not self.jwt_verify_keys:
                problems.append(f"{name} needs the keys that verify tokens (jwt_verify_keys)")
        elif self.jwt_key or self.jwt_token or self.jwt_verify_keys:
            problems.append(f"{name} uses no JWT keys or tokens")
        return problems

    def files(self) -> tuple[Path | str, ...]:
        """Every file these settings name (not the authorized keys directory)."""
        named = (self.key, self.known_hosts, self.certificate, self.jwt_key, self.jwt_token)
        return (
            *(path for path in named if path is not None),
            *self.ca,
            *self.jwt_verify_keys,
        )

    @property
    def security_mode(self) -> SecurityMode:
        assert isinstance(self.mode, SecurityMode)
        return self.mode

    def load(self) -> Credentials:
        """Read every file this mode names; ConfigError names the first bad one."""
        mode = self.security_mode
        pair: CurveKeyPair | None = None
        seeds: dict[str, bytes] = {}
        if mode.uses_curve:
            pair = (
                load_curve_key_pair(Path(self.key), secret_required=True)
                if self.key is not None
                else generate_curve_key_pair()
            )
            if self.known_hosts is not None:
                seeds.update(read_known_hosts(Path(self.known_hosts)))
            for address, key in self.seed_keys.items():
                parse_address(address)
                seeds[address] = _seed_key(address, key)
        authorized: dict[bytes, str] = {}
        if self.authorized_keys is not None:
            authorized = load_authorized_keys(Path(self.authorized_keys))
        ca_keys = load_ca_public_keys([Path(path) for path in self.ca])
        certificate = None
        if self.certificate is not None:
            certificate = NodeCertificate.read(Path(self.certificate))
        signing: SigningKey | None = None
        verifying: tuple[VerificationKey, ...] = ()
        token: str | None = None
        if mode.uses_tokens:
            algorithm, kid = self.jwt_algorithm, self.jwt_kid
            if self.jwt_key is not None:
                signing = load_signing_key(Path(self.jwt_key), algorithm, kid)
            else:
                token = _read_token(Path(str(self.jwt_token)))
            paths = self.jwt_verify_keys or (str(self.jwt_key),)
            verifying = tuple(load_verification_key(Path(path), algorithm, kid) for path in paths)
        return Credentials(
            mode, pair, seeds, authorized, ca_keys, certificate, signing, token, verifying
        )


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
    #: the cluster CA's public keys (curve-mutual)
    ca_keys: tuple[bytes, ...]
    #: this node's certificate, signed by the CA (curve-mutual)
    certificate: NodeCertificate | None
    #: the key this node signs its tokens with (jwt modes)
    signing_key: SigningKey | None
    #: or the token issued for it
    token: str | None
    #: keys that verify peers' tokens (jwt modes)
    verification_keys: tuple[VerificationKey, ...]

    @property
    def binds_in_band(self) -> bool:
        """Whether a connection says who it is in its first message (AUTH), with a token
        or a certificate, rather than by the key it connected with alone."""
        return self.mode.uses_tokens or bool(self.ca_keys)


def _seed_key(address: str, key: str | Path) -> bytes:
    """A seed's public key given as z85 text, or as the path of its ``.key`` file."""
    if isinstance(key, str) and len(key) == 40 and not Path(key).exists():
        return check_curve_key(key, f"public key of seed {address}")
    return load_curve_key_pair(Path(key)).public


def _read_token(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc}") from None
    if not text or len(text.split()) != 1:
        raise ConfigError(f"the token file {path} must hold one token (zcluster token issue)")
    try:
        token_expiry(text)  # a token we could not present must not replace a good one
    except ConfigError as exc:
        raise ConfigError(f"the token file {path}: {exc}") from None
    return text


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
