"""The attacks docs/security.md lists, each against a working secured cluster of two
nodes on real sockets: the attacker's message never reaches a handler, a subscriber
or the membership view; the attempt is counted per reason and logged once; the
cluster keeps working."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
import zmq
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import all_up, wait_until
from tests.security.pem import write_pem_pair
from zcluster import MemberStatus, Node
from zcluster.protocol import messages as msg
from zcluster.security.config import SecurityConfig
from zcluster.security.keys import load_curve_key_pair, write_curve_key_pair
from zcluster.wire import Encoder

Context = zmq.Context[zmq.Socket[bytes]]


@dataclasses.dataclass
class Pair:
    """Two members, the victim ``a`` and its peer ``b``, and what the attacker knows."""

    a: Node
    b: Node
    keys: Path
    got: list[object]

    def still_works(self) -> None:
        """b reaches a's handler, and both hold each other up."""
        before = len(self.got)
        self.b.send("a", "inbox", "from b")
        assert wait_until(lambda: len(self.got) == before + 1, 5), self.got
        assert self.got[-1] == "from b"
        assert all_up([self.a, self.b])

    def refused(self, reason: str) -> int:
        return self.a.stats().get(f"auth_refused_{reason}", 0)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(node_id: str, **changes: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": node_id, "aud": "zcluster", "iat": now, "nbf": now, "exp": now + 60} | changes


def _pem_pair(keys: Path) -> tuple[Path, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return write_pem_pair(private, keys / "rsa.pem", keys / "rsa.pub")


def _start_pair(configs: Callable[[str, str | None], SecurityConfig], keys: Path) -> Pair:
    got: list[object] = []
    a = Node("a", security=configs("a", None))
    a.start()
    a.register("inbox", lambda message, sender: got.append(message))
    b = Node("b", seeds=[a.address], security=configs("b", a.address))
    b.start()
    assert wait_until(lambda: all_up([a, b]), 10)
    return Pair(a, b, keys, got)


@pytest.fixture
def jwt_pair(tmp_path: Path) -> Iterator[Pair]:
    """A jwt cluster signing with RS256 (so that HS/RS confusion can be tried)."""
    keys = tmp_path
    secret, public = _pem_pair(keys)

    def config(node_id: str, seed: str | None) -> SecurityConfig:
        return SecurityConfig(
            "jwt", jwt_key=secret, jwt_algorithm="RS256", jwt_verify_keys=(public,)
        )

    pair = _start_pair(config, keys)
    yield pair
    pair.b.stop()
    pair.a.stop()


@pytest.fixture
def curve_pair(tmp_path: Path) -> Iterator[Pair]:
    keys = tmp_path
    for node_id in ("a", "b", "intruder"):
        write_curve_key_pair(keys, node_id)
    authorized = keys / "authorized"
    authorized.mkdir()
    for node_id in ("a", "b"):
        (authorized / f"{node_id}.key").write_bytes((keys / f"{node_id}.key").read_bytes())
    a_key = load_curve_key_pair(keys / "a.key").public.decode()

    def config(node_id: str, seed: str | None) -> SecurityConfig:
        return SecurityConfig(
            "curve-mutual",
            key=keys / f"{node_id}.key_secret",
            seed_keys={seed: a_key} if seed else {},
            authorized_keys=authorized,
        )

    pair = _start_pair(config, keys)
    yield pair
    pair.b.stop()
    pair.a.stop()


def _plain_dealer(
    context: Context, pair: Pair, claimed: str, secret: bytes = b"f" * 32
) -> zmq.Socket[bytes]:
    """A connection to a that says it is ``claimed`` (PLAIN username), with a session
    secret of its own."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.PLAIN_USERNAME, claimed.encode())
    sock.setsockopt(zmq.PLAIN_PASSWORD, secret)
    sock.connect(f"tcp://{pair.a.address}")
    return sock


def _attack_with_token(pair: Pair, token: str, claimed: str = "b") -> None:
    """AUTH as ``claimed`` with ``token``, then what an attacker wants: a record that
    says b is down, and a message to a's handler."""
    context: Context = zmq.Context()
    refused = pair.refused("unauthenticated")
    try:
        sock = _plain_dealer(context, pair, claimed)
        victim = pair.a.member("b")
        assert victim is not None
        encoder = Encoder(claimed, victim.incarnation)
        down = dataclasses.replace(victim, version=victim.version + 5, status=MemberStatus.DOWN)
        sock.send_multipart(encoder.direct(msg.Auth("jwt"), token.encode()))
        sock.send_multipart(encoder.direct(msg.Sync((down,), False, pair.a.address), b""))
        sock.send_multipart(encoder.direct(msg.Send("inbox"), b"\xa6forged"))
        assert wait_until(lambda: pair.refused("unauthenticated") == refused + 2, 5), pair.a.stats()
    finally:
        context.destroy(linger=0)


def _hs256_with(key: bytes, claims: dict[str, object]) -> str:
    """An HS256 token with ``key`` as its secret, made by hand: PyJWT refuses to use a
    PEM public key as an HMAC secret, which is the point of the attack."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


TOKEN_ATTACKS: dict[str, tuple[str, Callable[[Path], str]]] = {
    "expired": (
        "token_expired",
        lambda keys: jwt.encode(
            _claims("b", exp=int(time.time()) - 3600), (keys / "rsa.pem").read_bytes(), "RS256"
        ),
    ),
    "not yet valid": (
        "token_not_yet_valid",
        lambda keys: jwt.encode(
            _claims("b", nbf=int(time.time()) + 3600), (keys / "rsa.pem").read_bytes(), "RS256"
        ),
    ),
    "wrong audience": (
        "token_audience",
        lambda keys: jwt.encode(
            _claims("b", aud="another-cluster"), (keys / "rsa.pem").read_bytes(), "RS256"
        ),
    ),
    "tampered": (
        "token_signature",
        lambda keys: _tampered(jwt.encode(_claims("a"), (keys / "rsa.pem").read_bytes(), "RS256")),
    ),
    "alg none": ("token_algorithm", lambda keys: _unsigned(_claims("b"))),
    "HS256 signed with the RSA public key": (
        "token_algorithm",
        lambda keys: _hs256_with((keys / "rsa.pub").read_bytes(), _claims("b")),
    ),
    "for another node": (
        "token_subject",
        lambda keys: jwt.encode(_claims("c"), (keys / "rsa.pem").read_bytes(), "RS256"),
    ),
}


def _unsigned(claims: dict[str, object]) -> str:
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def _tampered(token: str) -> str:
    """A token for ``a`` whose payload now says ``b`` (the signature is a's)."""
    head, _, signature = token.split(".")
    return f"{head}.{_b64(json.dumps(_claims('b')).encode())}.{signature}"


@pytest.mark.parametrize("attack", list(TOKEN_ATTACKS))
def test_a_bad_token_binds_nothing(
    jwt_pair: Pair, attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    reason, make = TOKEN_ATTACKS[attack]
    with caplog.at_level(logging.WARNING, logger="zcluster.security"):
        _attack_with_token(jwt_pair, make(jwt_pair.keys))
        _attack_with_token(jwt_pair, make(jwt_pair.keys))
    assert jwt_pair.refused(reason) == 2
    assert caplog.text.count(f"auth_refused_{reason}") == 1  # logged once
    assert jwt_pair.got == []
    jwt_pair.still_works()


def test_a_replayed_handshake_is_refused(jwt_pair: Pair, tmp_path: Path) -> None:
    """A one-time token seen once (as an eavesdropper would record b's AUTH) does not
    bind a second connection."""
    from zcluster.security.tokens import generate_token, load_signing_key

    key = load_signing_key(jwt_pair.keys / "rsa.pem", "RS256")
    token = generate_token(key, "b", "zcluster", 60, time.time(), one_time=True)
    context: Context = zmq.Context()
    try:
        first = _plain_dealer(context, jwt_pair, "b", secret=b"0" * 32)
        first.send_multipart(Encoder("b", 1).direct(msg.Auth("jwt"), token.encode()))
        first.send_multipart(Encoder("b", 1).direct(msg.Send("inbox"), b"\xa5first"))
        assert wait_until(lambda: jwt_pair.got == ["first"], 5), jwt_pair.got
    finally:
        context.destroy(linger=0)
    _attack_with_token(jwt_pair, token)  # the same token, on another connection
    assert jwt_pair.refused("token_replayed") == 1
    assert jwt_pair.got == ["first"]
    jwt_pair.still_works()


def test_an_unknown_key_a_plaintext_client_and_garbage_are_refused(
    curve_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    pair = curve_pair
    a_key = load_curve_key_pair(pair.keys / "a.key").public
    intruder = load_curve_key_pair(pair.keys / "intruder.key_secret", secret_required=True)
    context: Context = zmq.Context()
    with caplog.at_level(logging.WARNING, logger="zcluster.security"):
        try:
            unknown = context.socket(zmq.DEALER)
            unknown.setsockopt(zmq.LINGER, 0)
            unknown.curve_publickey, unknown.curve_secretkey = intruder.public, intruder.secret
            unknown.curve_serverkey = a_key
            unknown.connect(f"tcp://{pair.a.address}")
            plain = context.socket(zmq.DEALER)
            plain.setsockopt(zmq.LINGER, 0)
            plain.connect(f"tcp://{pair.a.address}")
            for sock in (unknown, plain):
                sock.send_multipart(Encoder("b", 1).direct(msg.Send("inbox"), b"\xa6forged"))
            host, port = pair.a.address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                raw.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"garbage" * 100)
            assert wait_until(lambda: pair.refused("key_unknown") >= 1, 5), pair.a.stats()
            assert wait_until(lambda: pair.refused("handshake_protocol") >= 1, 5), pair.a.stats()
        finally:
            context.destroy(linger=0)
    assert pair.got == []
    pair.still_works()


def test_a_flood_of_failed_handshakes_is_cut_short(curve_pair: Pair) -> None:
    """Past auth_failures_per_s from one address, handshakes are refused unexamined;
    the members keep working throughout."""
    pair = curve_pair
    a_key = load_curve_key_pair(pair.keys / "a.key").public
    intruder = load_curve_key_pair(pair.keys / "intruder.key_secret", secret_required=True)
    context: Context = zmq.Context()
    flood: list[zmq.Socket[bytes]] = []
    try:
        for _ in range(100):
            sock = context.socket(zmq.DEALER)
            flood.append(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.curve_publickey, sock.curve_secretkey = intruder.public, intruder.secret
            sock.curve_serverkey = a_key
            sock.connect(f"tcp://{pair.a.address}")
        assert wait_until(lambda: pair.refused("handshake_rate") >= 50, 10), pair.a.stats()
        assert pair.refused("key_unknown") <= 2 * 20  # examined: within the rate's burst
        pair.still_works()
    finally:
        for sock in flood:
            sock.close(linger=0)
        context.term()


def test_a_token_made_for_another_node_is_not_taken(jwt_pair: Pair) -> None:
    """What a member receives from b (a token b made for its connection to that member)
    cannot be presented to a in b's name: it says which server it is for."""
    from zcluster.security.tokens import generate_token, load_signing_key

    key = load_signing_key(jwt_pair.keys / "rsa.pem", "RS256")
    elsewhere = {"zcluster_to": "127.0.0.1:9"}  # the member that received it
    token = generate_token(key, "b", "zcluster", 60, time.time(), one_time=True, extra=elsewhere)
    _attack_with_token(jwt_pair, token)
    assert jwt_pair.refused("token_audience") == 1
    assert jwt_pair.got == []
    jwt_pair.still_works()
