"""Curve key pairs, authorized-key directories, and the cluster CA's node certificates.

Curve keys live in pyzmq's ``zmq.auth`` certificate files (``NAME.key`` public,
``NAME.key_secret`` both), read and written only through ``zmq.auth``. A cluster CA is an
Ed25519 key (PyNaCl); it signs a node certificate binding cluster, node id, Curve public
key and expiry, so a new node joins without handing its key to every member.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nacl.signing
import zmq
import zmq.auth
from nacl.exceptions import BadSignatureError
from zmq.utils import z85

from zcluster.errors import AuthError, ConfigError, WireError
from zcluster.wire import check_name

CERTIFICATE_CONTEXT = b"zcluster-node-certificate-v1\0"
MAX_NOT_AFTER = 2**63 - 1
MAX_SIGNATURE_TEXT = 256
_MAX_FILE_BYTES = 65536
_PUBLIC_LABEL, _SECRET_LABEL = "ed25519-public-key", "ed25519-secret-key"
_CA_LINE = re.compile(r"(ed25519-(?:public|secret)-key)\s*=\s*([A-Za-z0-9+/]{43}=)")
# one text per certificate: ASCII digits without leading zeros; 86 base64url characters,
# the last with its 4 unused bits zero
_SIGNATURE_TEXT = re.compile(r"(0|[1-9][0-9]{0,18})\.([A-Za-z0-9_-]{85}[AQgw])")


@dataclass(frozen=True)
class CurveKeyPair:
    """A Curve key pair, z85-encoded; ``secret`` is None when only the public part is known."""

    public: bytes
    secret: bytes | None


def generate_curve_key_pair() -> CurveKeyPair:
    public, secret = zmq.curve_keypair()
    return CurveKeyPair(public, secret)


def check_curve_key(value: str | bytes, what: str = "public key") -> bytes:
    """``value`` as 40 bytes of z85 if it encodes a 32-byte Curve key; ConfigError if not."""
    try:
        raw = value.encode("ascii") if isinstance(value, str) else value
        ok = isinstance(raw, bytes) and len(raw) == 40 and z85.encode(z85.decode(raw)) == raw
    except (ValueError, KeyError, struct.error):  # not ASCII, bad character, 32-bit overflow
        ok = False
    if not ok:
        raise ConfigError(f"{what} must be a Curve key: 40 characters of z85, got {value!r:.60}")
    return bytes(raw)


def write_curve_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0o600) in ``directory``; never
    replaces a file. Returns (public file, secret file)."""
    _check_file_name(name, "key name")
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    # zmq.auth writes the files in a scratch directory only we can read (0o700); they are
    # copied, with O_EXCL and their final mode, to where they belong
    try:
        with tempfile.TemporaryDirectory(prefix="zcluster-keygen-") as scratch:
            made_public, made_secret = zmq.auth.create_certificates(scratch, name)
            public_text = Path(made_public).read_bytes()
            secret_text = Path(made_secret).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot generate a Curve key pair: {exc}") from None
    _create_files([(secret_path, secret_text, 0o600), (public_path, public_text, 0o644)])
    return public_path, secret_path


def load_curve_key_pair(path: Path, secret_required: bool = False) -> CurveKeyPair:
    """Read a ``NAME.key`` or ``NAME.key_secret`` file; ConfigError saying what is wrong."""
    if not path.is_file():
        raise ConfigError(
            f"Curve key file {path} does not exist (or is not a file): create a key pair "
            "with 'zcluster keygen --dir DIR --name NAME'"
        )
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError(f"{path} is not a readable Curve certificate file: {exc}") from None
    public = check_curve_key(public, f"the public key in {path}")
    if secret is not None:
        secret = check_curve_key(secret, f"the secret key in {path}")
        if zmq.curve_public(secret) != public:
            raise ConfigError(f"{path} is corrupt: its secret key does not match its public key")
    elif secret_required:
        raise ConfigError(
            f"{path} holds only a public key, and a secret key is needed: give the "
            f"{path.stem}.key_secret file instead"
        )
    return CurveKeyPair(public, secret)


def load_authorized_keys(directory: Path) -> dict[bytes, str]:
    """Public key (z85) -> node id, for every ``NODE_ID.key`` file in ``directory``."""
    if not directory.is_dir():
        raise ConfigError(f"authorized keys directory {directory} does not exist")
    found: dict[bytes, Path] = {}
    for path in sorted(directory.iterdir()):
        if not path.name.endswith(".key") or path.is_dir():
            continue  # NAME.key_secret files and anything else are not authorizations
        stem = path.name[: -len(".key")]
        _check_file_name(stem, f"node id {stem!r} (file {path})", ": rename the file")
        pair = load_curve_key_pair(path)
        if pair.secret is not None:
            raise ConfigError(
                f"{path} holds a secret key: put only public NAME.key files in an authorized "
                "keys directory, and keep the secret one on its node"
            )
        if pair.public in found:
            raise ConfigError(
                f"{found[pair.public]} and {path} hold the same public key: a key speaks for "
                "one node id; remove one of them"
            )
        found[pair.public] = path
    return {key: path.name[: -len(".key")] for key, path in found.items()}


@dataclass(frozen=True)
class NodeCertificate:
    """A CA's word that ``curve_public`` (z85) speaks for ``node_id`` in ``cluster``
    until ``not_after`` (unix seconds, inclusive)."""

    cluster: str
    node_id: str
    curve_public: bytes
    not_after: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_fields(self.cluster, self.node_id, self.curve_public, self.not_after)
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise ConfigError("a node certificate's signature must be 64 bytes")

    def signed_bytes(self) -> bytes:
        return _signed_bytes(self.cluster, self.node_id, self.curve_public, self.not_after)

    def signature_text(self) -> str:
        """NOT_AFTER.SIGNATURE (base64url, at most 256 characters): this certificate for a
        peer that knows its cluster, node id and key (a gossiped tag value)."""
        return f"{self.not_after}.{base64.urlsafe_b64encode(self.signature).decode()[:86]}"

    @classmethod
    def from_signature_text(
        cls, cluster: str, node_id: str, curve_public: bytes, text: str
    ) -> NodeCertificate:
        """Rebuild a certificate from a peer's values; AuthError("certificate_malformed")."""
        ok = isinstance(text, str) and len(text) <= MAX_SIGNATURE_TEXT
        match = _SIGNATURE_TEXT.fullmatch(text) if ok else None
        if match is None:
            raise AuthError("certificate_malformed", "certificate text is not NOT_AFTER.SIG")
        signature = base64.urlsafe_b64decode(match[2] + "==")
        try:  # __post_init__ bounds not_after and checks cluster, node id and key
            return cls(cluster, node_id, curve_public, int(match[1]), signature)
        except ConfigError as exc:
            raise AuthError("certificate_malformed", str(exc)) from None

    def write(self, path: Path) -> None:
        """Write the certificate as JSON, replacing any file at ``path`` (a renewal)."""
        fields = {
            "cluster": self.cluster,
            "node_id": self.node_id,
            "curve_public": self.curve_public.decode(),
            "not_after": self.not_after,
            "signature": base64.b64encode(self.signature).decode(),
        }
        try:
            path.write_text(json.dumps(fields, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write node certificate {path}: {exc}") from None

    @classmethod
    def read(cls, path: Path) -> NodeCertificate:
        text = _read_small(path, "node certificate file")
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict) or set(fields) != _CERT_KEYS:
                raise ValueError(f"expected a JSON object with keys {sorted(_CERT_KEYS)}")
            key, signature = fields["curve_public"], fields["signature"]
            if not isinstance(key, str) or not isinstance(signature, str):
                raise ValueError("curve_public and signature must be strings")
            raw = base64.b64decode(signature, validate=True)
            return cls(fields["cluster"], fields["node_id"], key.encode(), fields["not_after"], raw)
        except (ValueError, RecursionError) as exc:  # binascii.Error, ConfigError too
            raise ConfigError(
                f"{path} is not a valid node certificate ({exc}): issue a new one with "
                "'zcluster keygen --sign'"
            ) from None


_CERT_KEYS = {"cluster", "node_id", "curve_public", "not_after", "signature"}


class CertificateAuthority:
    """A cluster CA: an Ed25519 signing key that issues node certificates."""

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._key = signing_key

    @classmethod
    def generate(cls) -> CertificateAuthority:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def load(cls, path: Path) -> CertificateAuthority:
        """Read a ``NAME.ca_secret`` file written by :meth:`save`."""
        seed = _read_ca_file(path).get(_SECRET_LABEL)
        if seed is None:
            raise ConfigError(
                f"{path} holds no CA secret key: give the NAME.ca_secret file "
                "('zcluster keygen --ca' writes one)"
            )
        return cls(nacl.signing.SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    def save(self, directory: Path, name: str = "ca") -> tuple[Path, Path]:
        """Write ``NAME.ca_public`` and ``NAME.ca_secret`` (mode 0o600); never replaces a file."""
        _check_file_name(name, "CA name")
        public_path, secret_path = directory / f"{name}.ca_public", directory / f"{name}.ca_secret"
        public_line = f"{_PUBLIC_LABEL} = {base64.b64encode(self.public_key).decode()}\n"
        secret_line = f"{_SECRET_LABEL} = {base64.b64encode(bytes(self._key)).decode()}\n"
        public = f"# zcluster cluster CA public key: it verifies node certificates\n{public_line}"
        secret = f"# zcluster cluster CA SECRET key: keep private\n{secret_line}{public_line}"
        _create_files(
            [(secret_path, secret.encode(), 0o600), (public_path, public.encode(), 0o644)]
        )
        return public_path, secret_path

    def sign(
        self, cluster: str, node_id: str, curve_public: bytes, not_after: int
    ) -> NodeCertificate:
        curve_public = check_curve_key(curve_public, "the node's Curve public key")
        _check_fields(cluster, node_id, curve_public, not_after)
        message = _signed_bytes(cluster, node_id, curve_public, not_after)
        signature = self._key.sign(message).signature
        return NodeCertificate(cluster, node_id, curve_public, not_after, signature)


def load_ca_public_keys(paths: Sequence[Path]) -> tuple[bytes, ...]:
    """The raw Ed25519 keys of ``.ca_public`` (or ``.ca_secret``) files, without repeats:
    several, so certificates of an old and a new CA both verify while a CA is rotated."""
    keys: list[bytes] = []
    for path in paths:
        key = _read_ca_file(path)[_PUBLIC_LABEL]
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def verify_certificate(
    cert: NodeCertificate,
    ca_keys: Sequence[bytes],
    cluster: str,
    node_id: str,
    curve_public: bytes,
    now: float,
) -> None:
    """Raise AuthError unless ``cert`` is a CA's current word that ``curve_public`` speaks
    for ``node_id`` in ``cluster``. The reason names the first check that failed."""
    if not math.isfinite(now):
        raise ConfigError(f"now must be a finite time, got {now!r}")
    if cert.cluster != cluster:
        detail = f"certificate is for cluster {cert.cluster!r:.80}, not {cluster!r:.80}"
        raise AuthError("certificate_wrong_cluster", detail)
    if cert.node_id != node_id:
        detail = f"certificate is for node {cert.node_id!r:.80}, not {node_id!r:.80}"
        raise AuthError("certificate_wrong_node", detail)
    if cert.curve_public != curve_public:
        raise AuthError("certificate_wrong_key", f"certificate of {node_id} is for another key")
    # the signature before the expiry, so "expired" always counts a genuine certificate
    if not any(_verifies(key, cert) for key in ca_keys):
        detail = f"certificate of {node_id} is not signed by any of the {len(ca_keys)} CA key(s)"
        raise AuthError("certificate_signature", detail)
    if now > cert.not_after:
        raise AuthError("certificate_expired", f"certificate of {node_id} expired: renew it")


# ---------------------------------------------------------------- helpers


def _verifies(ca_key: bytes, cert: NodeCertificate) -> bool:
    if not isinstance(ca_key, bytes) or len(ca_key) != 32:
        raise ConfigError("a CA public key must be 32 raw bytes (see load_ca_public_keys)")
    try:
        nacl.signing.VerifyKey(ca_key).verify(cert.signed_bytes(), cert.signature)
    except BadSignatureError:
        return False
    return True


def _signed_bytes(cluster: str, node_id: str, curve_public: bytes, not_after: int) -> bytes:
    # msgpack of a fixed-length array: no field can bleed into the next
    packed: Any = msgpack.packb([cluster, node_id, curve_public, not_after], use_bin_type=True)
    return CERTIFICATE_CONTEXT + bytes(packed)


def _check_fields(
    cluster: object, node_id: object, curve_public: object, not_after: object
) -> None:
    for value, what in ((cluster, "cluster name"), (node_id, "node id")):
        try:
            check_name(value, what)
        except WireError as exc:
            raise ConfigError(f"invalid {what} {value!r:.60}: {exc}") from None
    if not isinstance(curve_public, bytes):
        raise ConfigError("a node certificate's Curve public key must be z85 bytes")
    check_curve_key(curve_public, "the certificate's Curve public key")
    if type(not_after) is not int or not 0 <= not_after <= MAX_NOT_AFTER:
        raise ConfigError(f"not_after must be unix seconds in 0..2**63-1, got {not_after!r:.40}")


def _check_file_name(name: str, what: str, hint: str = "") -> None:
    try:
        check_name(name, what)
    except WireError as exc:
        raise ConfigError(f"{exc}{hint}") from None
    if "/" in name or "\\" in name:
        raise ConfigError(f"{what} must not contain '/' or '\\'{hint}")


def _create_files(files: list[tuple[Path, bytes, int]]) -> None:
    """Create each (path, data, mode), with its directory; none if any exists already.
    On failure, remove those this call made."""
    for path, _, _ in files:
        if path.exists():
            raise ConfigError(f"{path} already exists: move it away or choose another name")
    made: list[Path] = []
    for path, data, mode in files:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            made.append(path)
            with os.fdopen(fd, "wb") as file:
                os.fchmod(file.fileno(), mode)  # exactly ``mode``, whatever the umask
                file.write(data)
        except OSError as exc:
            for done in made:
                done.unlink(missing_ok=True)
            raise ConfigError(f"cannot write {path}: {exc}") from None


def _read_small(path: Path, what: str) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_FILE_BYTES + 1)
        if len(data) > _MAX_FILE_BYTES:
            raise ConfigError(f"{what} {path} is larger than {_MAX_FILE_BYTES} bytes")
        return data.decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None


def _read_ca_file(path: Path) -> dict[str, bytes]:
    """The keys of a CA file by label, the public one derived from the secret if need be."""
    keys: dict[str, bytes] = {}
    for number, line in enumerate(_read_small(path, "CA key file").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _CA_LINE.fullmatch(line)
        if match is None or match[1] in keys:
            raise ConfigError(
                f"{path} line {number} is not a CA key line: give a .ca_public or .ca_secret "
                "file written by 'zcluster keygen --ca'"
            )
        keys[match[1]] = base64.b64decode(match[2])
    if _SECRET_LABEL in keys:
        derived = bytes(nacl.signing.SigningKey(keys[_SECRET_LABEL]).verify_key)
        if keys.setdefault(_PUBLIC_LABEL, derived) != derived:
            raise ConfigError(f"{path} is corrupt: its public key does not match its secret key")
    if _PUBLIC_LABEL not in keys:
        raise ConfigError(f"{path} holds no CA key: give a file written by 'zcluster keygen --ca'")
    return keys
