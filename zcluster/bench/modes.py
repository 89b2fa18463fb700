"""Security modes of the ``security`` group: throwaway keys, each role's configuration.

A zcluster session in a mode gets its keys in a temporary directory that lives as
long as the session: the seed's Curve key pair (the nodes that join get a fresh
one each, and the seed's public key), and a shared HS256 secret for tokens. The
raw pyzmq side gets CURVE key pairs for its server and its clients, without a ZAP
handler: libzmq then lets every client in, so only the encryption is measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import zmq

from zcluster.bench.samples import Sample
from zcluster.errors import ConfigError
from zcluster.security.config import SecurityConfig, SecurityMode
from zcluster.security.keys import load_curve_key_pair, write_curve_key_pair

#: the modes the security group measures, side by side; the first is the reference
SECURITY_MODES = (SecurityMode.NONE, SecurityMode.CURVE, SecurityMode.JWT)
#: random bytes of the HS256 secret the nodes of a jwt session share (written as hex)
JWT_SECRET_BYTES = 32
_SEED_KEY_NAME = "seed"


@dataclasses.dataclass(frozen=True)
class Secured:
    """The security of one zcluster session, handed to its workers (picklable)."""

    mode: SecurityMode = SecurityMode.NONE
    #: the seed's ``.key_secret`` file (curve modes)
    seed_key: Path | None = None
    #: the seed's public key, z85 (curve modes)
    seed_public: str | None = None
    #: the HS256 secret every node signs and verifies tokens with (jwt modes)
    jwt_key: Path | None = None

    @property
    def label(self) -> str:
        """What a worker group's name says about the mode ("" for none)."""
        return "" if self.mode is SecurityMode.NONE else f" ({self.mode.value})"

    def for_seed(self) -> SecurityConfig | None:
        """The configuration of the node the others join through (None: mode none)."""
        if self.mode is SecurityMode.NONE:
            return None
        return SecurityConfig(self.mode, key=self.seed_key, jwt_key=self.jwt_key)

    def for_joiner(self, seed: str) -> SecurityConfig | None:
        """The configuration of a node that joins through ``seed`` (a fresh key pair)."""
        if self.mode is SecurityMode.NONE:
            return None
        seed_keys = {seed: self.seed_public} if self.seed_public is not None else {}
        return SecurityConfig(self.mode, seed_keys=seed_keys, jwt_key=self.jwt_key)


NO_SECURITY = Secured()


@contextlib.contextmanager
def throwaway(mode: SecurityMode) -> Iterator[Secured]:
    """The keys of ``mode`` in a temporary directory, removed when the block ends."""
    if mode is SecurityMode.NONE:
        yield NO_SECURITY
        return
    if mode is SecurityMode.CURVE_MUTUAL:
        raise ConfigError("the bench does not measure curve-mutual (it needs every node's key)")
    with tempfile.TemporaryDirectory(prefix="zcluster-bench-keys-") as scratch:
        directory = Path(scratch)
        seed_key = seed_public = jwt_key = None
        if mode.uses_curve:
            _, seed_key = write_curve_key_pair(directory, _SEED_KEY_NAME)
            seed_public = load_curve_key_pair(seed_key).public.decode("ascii")
        if mode.uses_tokens:
            jwt_key = directory / "jwt.secret"
            # text: a secret file's trailing newline is not part of the secret
            jwt_key.write_text(secrets.token_hex(JWT_SECRET_BYTES))
            jwt_key.chmod(0o600)
        yield Secured(mode, seed_key, seed_public, jwt_key)


def in_mode(mode: SecurityMode, session: Callable[..., dict[str, Sample]]) -> dict[str, Sample]:
    """Run ``session(security=...)`` with throwaway keys of ``mode``."""
    with throwaway(mode) as secured:
        return session(security=secured)


@dataclasses.dataclass(frozen=True)
class CurveKeys:
    """Throwaway CURVE key pairs (z85) of a raw session's server and of its clients."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def generate(cls) -> CurveKeys:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(server_public, server_secret, client_public, client_secret)


def serve_curve(sock: zmq.Socket[bytes], keys: CurveKeys | None) -> None:
    """Make ``sock`` a CURVE server before it binds (nothing when ``keys`` is None)."""
    if keys is not None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.server_secret)


def connect_curve(sock: zmq.Socket[bytes], keys: CurveKeys | None) -> None:
    """Make ``sock`` a CURVE client of the server before it connects (nothing if None)."""
    if keys is not None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret)
