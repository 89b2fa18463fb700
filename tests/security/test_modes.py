"""Each security mode on real sockets (127.0.0.1, random ports): a cluster forms and
works, and what an outsider sends never reaches a handler, a subscriber or the view.

The attacker speaks the protocol itself (a raw DEALER and the wire encoder): it knows
the members' ids, addresses and public keys, but not their secret keys or tokens.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import all_up, wait_until
from tests.security.pem import write_pem_pair
from zcluster import MemberStatus, Node
from zcluster.protocol import messages as msg
from zcluster.protocol.members import Member
from zcluster.security.config import SecurityConfig
from zcluster.security.keys import (
    CertificateAuthority,
    CurveKeyPair,
    load_curve_key_pair,
    write_curve_key_pair,
)
from zcluster.security.tokens import generate_token, load_signing_key
from zcluster.wire import MAX_TOPIC_BYTES, Encoder

SECRET = b"the cluster's HS256 secret, long enough to be one"
NodeMaker = Callable[[str], Node]


@dataclasses.dataclass
class Cluster:
    nodes: list[Node]
    keys: Path

    def key_pair(self, node_id: str) -> CurveKeyPair:
        return load_curve_key_pair(self.keys / f"{node_id}.key_secret", secret_required=True)


def _configs(mode: str, keys: Path, seed: Node | None) -> Callable[[str], SecurityConfig]:
    seed_keys = {}
    if seed is not None and mode != "jwt":
        seed_keys = {seed.address: load_curve_key_pair(keys / "a.key").public.decode()}

    def config(node_id: str) -> SecurityConfig:
        key = keys / f"{node_id}.key_secret"
        if mode == "jwt":
            return SecurityConfig("jwt", jwt_key=keys / "secret")
        if mode == "curve+jwt":
            return SecurityConfig(
                "curve+jwt",
                key=key,
                seed_keys=seed_keys,
                jwt_key=keys / "ec.pem",
                jwt_algorithm="ES256",
                jwt_verify_keys=(keys / "ec.pub",),
            )
        if mode == "curve":
            return SecurityConfig("curve", key=key, seed_keys=seed_keys)
        if mode == "curve-mutual-ca":
            return SecurityConfig(
                "curve-mutual",
                key=key,
                seed_keys=seed_keys,
                ca=(keys / "ca.ca_public",),
                certificate=keys / f"{node_id}.cert",
            )
        return SecurityConfig(
            "curve-mutual", key=key, seed_keys=seed_keys, authorized_keys=keys / "authorized"
        )

    return config


def _make_keys(keys: Path) -> None:
    """Key pairs for a, b, c and an intruder; an authorized directory of a, b and c; a
    CA that certified a, b and c; an HS256 secret; an ES256 key pair."""
    for node_id in ("a", "b", "c", "intruder"):
        write_curve_key_pair(keys, node_id)
    authorized = keys / "authorized"
    authorized.mkdir()
    ca = CertificateAuthority.generate()
    ca.save(keys)
    for node_id in ("a", "b", "c"):  # the public halves only: the intruder's is not there
        (authorized / f"{node_id}.key").write_bytes((keys / f"{node_id}.key").read_bytes())
        public = load_curve_key_pair(keys / f"{node_id}.key").public
        ca.sign("zcluster", node_id, public, int(time.time()) + 3600).write(
            keys / f"{node_id}.cert"
        )
    (keys / "secret").write_bytes(SECRET)
    write_pem_pair(ec.generate_private_key(ec.SECP256R1()), keys / "ec.pem", keys / "ec.pub")


MODES = ["curve", "curve-mutual", "curve-mutual-ca", "jwt", "curve+jwt"]


@pytest.fixture(params=MODES)
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    mode = request.param
    keys = tmp_path / "keys"
    _make_keys(keys)
    nodes: list[Node] = []
    try:
        a = Node("a", security=_configs(mode, keys, None)("a"))
        nodes.append(a)
        a.start()
        config = _configs(mode, keys, a)
        for node_id in ("b", "c"):
            node = Node(node_id, seeds=[a.address], security=config(node_id))
            nodes.append(node)
            node.start()
        assert wait_until(lambda: all_up(nodes), 10), [n.members() for n in nodes]
        yield Cluster(nodes, keys)
    finally:
        for node in reversed(nodes):
            node.stop()


def test_a_secured_cluster_forms_and_carries_every_kind_of_message(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    got: list[tuple[str, object, str]] = []
    # the longest topic: its subscription, inside a Curve MESSAGE, within the PUB's
    # MAXMSGSIZE (wire.SUBSCRIPTION_MAX_BYTES), or the SUB's connection is dropped
    longest = "l" * MAX_TOPIC_BYTES
    for topic in ("news", longest):
        b.subscribe(topic, lambda topic, message, sender: got.append((topic, message, sender)))
    b.register("echo", lambda message, sender: (message, sender))
    c.register("inbox", lambda message, sender: got.append(("inbox", message, sender)))
    assert wait_until(lambda: "b" in a.subscribers("news") & a.subscribers(longest), 5)
    a.publish("news", "hello")
    a.publish(longest, "long")
    a.send("c", "inbox", "direct")
    assert c.request("b", "echo", "ping", timeout=5) == ["ping", "c"]
    assert wait_until(lambda: len(got) == 3, 5), got
    assert sorted(got) == [("inbox", "direct", "a"), (longest, "long", "a"), ("news", "hello", "a")]
    assert not any(name.startswith("auth_refused") for n in cluster.nodes for name in n.stats())


def _forged_down(victim: Member, reply_address: str) -> msg.Sync:
    """A record that says ``victim`` is down, in a version that wins every merge."""
    down = dataclasses.replace(victim, version=victim.version + 10, status=MemberStatus.DOWN)
    return msg.Sync((down,), want_reply=True, reply_address=reply_address)


def _raw_dealer(
    context: zmq.Context[zmq.Socket[bytes]], address: str, *, curve: tuple[CurveKeyPair, bytes]
) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    own, server_key = curve
    sock.setsockopt(zmq.CURVE_PUBLICKEY, own.public)
    assert own.secret is not None
    sock.setsockopt(zmq.CURVE_SECRETKEY, own.secret)
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
    sock.connect(f"tcp://{address}")
    return sock


def _still_up_everywhere(cluster: Cluster, victim: str, seconds: float) -> bool:
    """For ``seconds``, every node holds ``victim`` UP (False at the first that does not)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            member = node.member(victim)
            if member is None or member.status is not MemberStatus.UP:
                return False
        time.sleep(0.02)
    return True


def _refused(node: Node, reason: str) -> int:
    return node.stats().get(f"auth_refused_{reason}", 0)


@pytest.mark.parametrize(
    "cluster", ["curve", "curve-mutual", "curve-mutual-ca", "curve+jwt"], indirect=True
)
def test_a_key_cannot_speak_for_another_members_id(cluster: Cluster) -> None:
    """A member's own key (c's) sends a record, as b, that says b is down: refused as
    an identity claim, counted; b stays up everywhere."""
    a, _, c = cluster.nodes
    victim = a.member("b")
    assert victim is not None
    a_key = load_curve_key_pair(cluster.keys / "a.key").public
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = _raw_dealer(context, a.address, curve=(cluster.key_pair("c"), a_key))
        forger = Encoder("b", victim.incarnation)
        sync = _forged_down(victim, c.address)
        for _ in range(3):
            sock.send_multipart(forger.direct(sync, b""))
        assert wait_until(lambda: _refused(a, "identity") >= 3, 5), a.stats()
        assert _still_up_everywhere(cluster, "b", 1.0)
        sock.close()
    finally:
        context.destroy(linger=0)


def test_an_unauthorized_key_is_refused_at_the_handshake(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    for node_id in ("a", "intruder"):
        write_curve_key_pair(keys, node_id)
    authorized = keys / "authorized"
    authorized.mkdir()
    (authorized / "a.key").write_bytes((keys / "a.key").read_bytes())
    security = SecurityConfig("curve-mutual", key=keys / "a.key_secret", authorized_keys=authorized)
    with Node("a", security=security) as a:
        got: list[object] = []
        a.register("inbox", lambda message, sender: got.append(message))
        a_key = load_curve_key_pair(keys / "a.key").public
        intruder = load_curve_key_pair(keys / "intruder.key_secret", secret_required=True)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            sock = _raw_dealer(context, a.address, curve=(intruder, a_key))
            sock.send_multipart(Encoder("a", 1).direct(msg.Send("inbox"), b"\xa3hey"))
            assert wait_until(lambda: _refused(a, "key_unknown") >= 1, 5), a.stats()
        finally:
            context.destroy(linger=0)
        assert got == []
        assert a.members()[0].status is MemberStatus.UP


def test_a_node_without_a_valid_token_cannot_join(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_bytes(SECRET)
    bad = tmp_path / "bad"
    bad.write_bytes(b"another secret, just as long as the good one is")
    with Node("a", security=SecurityConfig("jwt", jwt_key=good)) as a:
        intruder = Node("x", seeds=[a.address], security=SecurityConfig("jwt", jwt_key=bad))
        with pytest.raises(Exception, match="could not join"):
            intruder.start(timeout=1.5)
        assert _refused(a, "token_signature") >= 1, a.stats()
        assert [m.node_id for m in a.members()] == ["a"]


def test_a_token_for_another_node_cannot_claim_its_id(tmp_path: Path) -> None:
    """A valid token, but for c: said in AUTH under the name b, it binds nothing, and
    what follows on that connection is refused."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    with Node("a", security=SecurityConfig("jwt", jwt_key=secret)) as a:
        got: list[object] = []
        a.register("inbox", lambda message, sender: got.append(message))
        key = load_signing_key(secret, "HS256")
        token = generate_token(key, "c", "zcluster", 60, time.time())
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.PLAIN_USERNAME, b"b")
            sock.setsockopt(zmq.PLAIN_PASSWORD, b"0123456789abcdef0123456789abcdef")
            sock.connect(f"tcp://{a.address}")
            encoder = Encoder("b", 1)
            sock.send_multipart(encoder.direct(msg.Auth("jwt"), token.encode()))
            sock.send_multipart(encoder.direct(msg.Send("inbox"), b"\xa3hey"))
            assert wait_until(lambda: _refused(a, "unauthenticated") >= 1, 5), a.stats()
            assert _refused(a, "token_subject") == 1
        finally:
            context.destroy(linger=0)
        assert got == []


def test_mode_none_warns_when_it_listens_beyond_loopback(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    write_curve_key_pair(tmp_path, "a")
    secured = SecurityConfig("curve", key=tmp_path / "a.key_secret")
    with caplog.at_level(logging.WARNING, logger="zcluster.node"):
        for security in (None, secured):
            with Node("a", bind="0.0.0.0:0", advertise="127.0.0.1:0", security=security):
                pass
        with Node("b"):  # 127.0.0.1 by default
            pass
    warnings = [r for r in caplog.records if "with security mode none" in r.getMessage()]
    assert len(warnings) == 1 and "0.0.0.0:0" in warnings[0].getMessage()


def test_tokens_are_renewed_before_they_expire(tmp_path: Path) -> None:
    """Tokens of two seconds on connections that live for six: each connection says
    AUTH again with a fresh token in time, and nothing is refused."""
    (tmp_path / "secret").write_bytes(SECRET)
    short = {"auth_token_ttl_s": 2.0, "auth_token_leeway_s": 0.2}
    security = SecurityConfig("jwt", jwt_key=tmp_path / "secret")
    with Node("a", security=security, **short) as a:
        got: list[object] = []
        a.register("inbox", lambda message, sender: got.append(message))
        with Node("b", seeds=[a.address], security=security, **short) as b:
            deadline = time.monotonic() + 6
            sent = 0
            while time.monotonic() < deadline:
                b.send("a", "inbox", sent)
                sent += 1
                time.sleep(0.1)
            assert wait_until(lambda: len(got) == sent, 5), (len(got), sent)
            assert all_up([a, b])
            for node in (a, b):
                assert not [k for k in node.stats() if k.startswith("auth_refused")], node.stats()
