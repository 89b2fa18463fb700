"""The policy alone, without sockets: every verdict it gives (security/policy.py), and
the server keys the runtime keeps by address (runtime/secured.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from zmq.utils import z85

from zcluster import NodeConfig
from zcluster.runtime.secured import SecuredConnections
from zcluster.security.config import SecurityConfig
from zcluster.security.keys import (
    CertificateAuthority,
    load_curve_key_pair,
    write_curve_key_pair,
)
from zcluster.security.policy import (
    KEY_TAG,
    Allow,
    AuthenticationHandler,
    Defer,
    Deny,
    Ignore,
)
from zcluster.security.tokens import generate_token, load_signing_key

NOW = 1_800_000_000.0
SECRET = b"the cluster's HS256 secret, long enough to be one"
Members = dict[str, tuple[str | None, bool]]


def _policy(
    security: SecurityConfig, members: Members | None = None, **config: float
) -> AuthenticationHandler:
    known = members if members is not None else {}
    return AuthenticationHandler(
        "me",
        security.load(),
        NodeConfig(**config),
        cluster=security.cluster,
        authorized_nodes=security.authorized_nodes,
        members=known.get,
    )


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    for node_id in ("me", "a", "b", "stranger"):
        write_curve_key_pair(tmp_path, node_id)
    (tmp_path / "dir").mkdir()
    for node_id in ("me", "a", "b"):
        (tmp_path / "dir" / f"{node_id}.key").write_bytes(
            (tmp_path / f"{node_id}.key").read_bytes()
        )
    (tmp_path / "secret").write_bytes(SECRET)
    return tmp_path


def _key(keys: Path, node_id: str) -> str:
    return load_curve_key_pair(keys / f"{node_id}.key").public.decode()


def _raw(keys: Path, node_id: str) -> bytes:
    return z85.decode(_key(keys, node_id).encode())


def _mutual(keys: Path, **changes: object) -> SecurityConfig:
    security = SecurityConfig(
        "curve-mutual", key=keys / "me.key_secret", authorized_keys=keys / "dir"
    )
    return dataclasses.replace(security, **changes)


def test_curve_mutual_lets_in_authorized_keys_only(keys: Path) -> None:
    policy = _policy(_mutual(keys))
    assert policy.check_handshake("direct", "h", "CURVE", [_raw(keys, "a")], NOW) == Allow(
        _key(keys, "a")
    )
    verdict = policy.check_handshake("pubsub", "h", "CURVE", [_raw(keys, "stranger")], NOW)
    assert isinstance(verdict, Deny) and verdict.reason == "key_unknown"
    plain = policy.check_handshake("direct", "h", "NULL", [], NOW)
    assert isinstance(plain, Deny) and plain.reason == "mechanism"
    assert policy.counters == {"auth_refused_key_unknown": 1, "auth_refused_mechanism": 1}


def test_a_key_speaks_for_its_own_node_only(keys: Path) -> None:
    policy = _policy(_mutual(keys))
    assert policy.check_speaker(_key(keys, "a"), "a", NOW) is None
    assert policy.check_speaker(_key(keys, "a"), "b", NOW) == "identity"
    assert policy.check_speaker(_key(keys, "stranger"), "stranger", NOW) == "key_unknown"


def test_authorized_nodes_narrow_the_directory_everywhere(keys: Path) -> None:
    policy = _policy(_mutual(keys, authorized_nodes=frozenset({"me", "a"})))
    verdict = policy.check_handshake("pubsub", "h", "CURVE", [_raw(keys, "b")], NOW)
    assert isinstance(verdict, Deny) and verdict.reason == "not_authorized"
    assert policy.member_key("b", {}, NOW) is None
    assert policy.check_speaker(_key(keys, "b"), "b", NOW) == "not_authorized"
    assert policy.member_key("a", {}, NOW) == _key(keys, "a").encode()


def test_refused_handshakes_past_their_rate_go_unanswered(keys: Path) -> None:
    policy = _policy(_mutual(keys), auth_failures_per_s=5.0)
    verdicts = [
        policy.check_handshake("direct", "10.0.0.9", "CURVE", [_raw(keys, "stranger")], NOW)
        for _ in range(8)
    ]
    assert [type(v) for v in verdicts] == [Deny] * 5 + [Ignore] * 3
    other = policy.check_handshake("direct", "10.0.0.1", "CURVE", [_raw(keys, "a")], NOW)
    assert isinstance(other, Allow)  # another address is not held back
    later = NOW + 1.0  # five tokens back
    again = policy.check_handshake("direct", "10.0.0.9", "CURVE", [_raw(keys, "a")], later)
    assert isinstance(again, Allow)


def _ca_setup(keys: Path, not_after: float) -> SecurityConfig:
    ca = CertificateAuthority.generate()
    ca.save(keys)
    for node_id in ("me", "a"):
        public = load_curve_key_pair(keys / f"{node_id}.key").public
        ca.sign("zcluster", node_id, public, int(not_after)).write(keys / f"{node_id}.cert")
    return SecurityConfig(
        "curve-mutual",
        key=keys / "me.key_secret",
        ca=(keys / "ca.ca_public",),
        certificate=keys / "me.cert",
    )


def test_a_certificate_binds_its_key_and_the_pub_waits_for_it(keys: Path) -> None:
    security = _ca_setup(keys, NOW + 3600)
    policy = _policy(security)
    a = _key(keys, "a")
    assert policy.check_handshake("pubsub", "h", "CURVE", [_raw(keys, "a")], NOW) == Defer(a)
    assert policy.check_handshake("direct", "h", "CURVE", [_raw(keys, "a")], NOW) == Allow(a)
    assert policy.check_speaker(a, "a", NOW) == "unauthenticated"
    certificate = policy_for(keys, "a").credential(NOW, "x:1")
    assert certificate is not None
    scheme, text, _ = certificate
    # a's certificate said as b: the CA signed no such thing
    assert policy.authenticate(a, "b", scheme, text, NOW) == "certificate_signature"
    assert policy.authenticate(a, "a", scheme, text, NOW) is None
    assert policy.check_speaker(a, "a", NOW) is None
    assert policy.check_handshake("pubsub", "h", "CURVE", [_raw(keys, "a")], NOW) == Allow(a)
    # it holds until the certificate expires (and the leeway)
    assert policy.check_speaker(a, "a", NOW + 3600 + 31) == "unauthenticated"


def policy_for(keys: Path, node_id: str) -> AuthenticationHandler:
    security = SecurityConfig(
        "curve-mutual",
        key=keys / f"{node_id}.key_secret",
        ca=(keys / "ca.ca_public",),
        certificate=keys / f"{node_id}.cert",
    )
    policy = _policy(security)
    policy.node_id = node_id
    return policy


def _jwt(keys: Path) -> AuthenticationHandler:
    policy = _policy(SecurityConfig("jwt", jwt_key=keys / "secret"))
    policy.addresses = {"127.0.0.1:7000"}
    return policy


def test_jwt_tokens_bind_a_principal_to_their_subject(keys: Path) -> None:
    policy = _jwt(keys)
    principal = "a " + "0" * 32
    verdict = policy.check_handshake("direct", "h", "PLAIN", [b"a", b"0" * 32], NOW)
    assert verdict == Allow(principal)
    assert policy.check_handshake("pubsub", "h", "PLAIN", [b"a", b"0" * 32], NOW) == Defer(
        principal
    )
    key = load_signing_key(keys / "secret", "HS256")
    token = generate_token(key, "a", "zcluster", 60, NOW).encode()
    assert policy.authenticate(principal, "b", "jwt", token, NOW) == "identity"
    assert policy.authenticate(principal, "a", "jwt", token, NOW) is None
    assert policy.check_speaker(principal, "a", NOW) is None
    assert policy.check_speaker(principal, "b", NOW) == "identity"
    assert policy.check_speaker("a " + "1" * 32, "a", NOW) == "unauthenticated"


def test_a_token_made_for_one_server_is_refused_by_another(keys: Path) -> None:
    sender = _policy(SecurityConfig("jwt", jwt_key=keys / "secret"))
    sender.node_id = "a"
    credential = sender.credential(NOW, "127.0.0.1:7999")  # for the node there
    assert credential is not None
    _, token, _ = credential
    receiver = _jwt(keys)
    _, secret = sender.plain_credentials("127.0.0.1:7000")
    assert secret != sender.plain_credentials("127.0.0.1:7999")[1]  # one per server
    principal = f"a {secret.decode()}"
    assert receiver.authenticate(principal, "a", "jwt", token, NOW) == "token_audience"
    _, token, _ = sender.credential(NOW, "127.0.0.1:7000") or ("", b"", 0.0)
    assert receiver.authenticate(principal, "a", "jwt", token, NOW) is None
    # and once only
    assert receiver.authenticate(principal, "a", "jwt", token, NOW) == "token_replayed"


def test_a_reload_unbinds_what_no_longer_holds_and_forgets_what_expired(keys: Path) -> None:
    security = _ca_setup(keys, NOW + 3600)
    policy = _policy(security)
    a = _key(keys, "a")
    scheme, text, _ = policy_for(keys, "a").credential(NOW, "x:1") or ("", b"", 0.0)
    assert policy.authenticate(a, "a", scheme, text, NOW) is None
    assert not policy.replace(security.load(), None, NOW)  # nothing changed
    assert not policy.replace(security.load(), None, NOW + 7200)  # expired: not revoked
    assert policy.counters["auth_revoked"] == 0
    assert policy.authenticate(a, "a", scheme, text, NOW) is None
    other = CertificateAuthority.generate()  # the CA is replaced: its certificates go
    (keys / "ca.ca_public").unlink()
    (keys / "ca.ca_secret").unlink()
    other.save(keys)
    assert policy.replace(security.load(), None, NOW)
    assert policy.counters["auth_revoked"] == 1
    assert policy.check_speaker(a, "a", NOW) == "unauthenticated"


def test_curve_lets_anyone_in_under_a_name_nobody_live_holds(keys: Path) -> None:
    members: Members = {"a": (_key(keys, "a"), True), "b": (None, False)}
    policy = _policy(SecurityConfig("curve", key=keys / "me.key_secret"), members)
    stranger = _key(keys, "stranger")
    assert policy.check_handshake("direct", "h", "CURVE", [_raw(keys, "stranger")], NOW) == Allow(
        stranger
    )
    assert policy.check_speaker(stranger, "new", NOW) is None
    assert policy.check_speaker(stranger, "b", NOW) is None  # b is down
    assert policy.check_speaker(stranger, "a", NOW) == "identity"
    assert policy.check_speaker(_key(keys, "a"), "a", NOW) is None


def test_a_member_cannot_take_another_members_address(keys: Path) -> None:
    members: Members = {}
    policy = _policy(SecurityConfig("curve", key=keys / "me.key_secret"), members)
    secured = SecuredConnections(policy, NodeConfig(), SecurityConfig("curve"))
    reconnected: list[tuple[str, str, bool]] = []
    secured.on_revocation(lambda: None, lambda n, a, p, c: reconnected.append((n, a, c)))
    tags_a, tags_b = {KEY_TAG: _key(keys, "a")}, {KEY_TAG: _key(keys, "b")}
    assert secured.member_connected("a", "h:1", "h:2", tags_a)
    assert not secured.member_connected("b", "h:1", "h:2", tags_b)  # a's address
    assert secured.server_key("h:1") == _key(keys, "a").encode()
    assert policy.counters["auth_refused_address_taken"] == 1
    secured.member_disconnected("b", "h:1")  # b's going changes nothing for a
    assert secured.server_key("h:1") == _key(keys, "a").encode()
    assert not secured.member_connected("b", "h:1", "h:2", tags_b)
    secured.member_disconnected("a", "h:1")  # a gone: b's turn
    assert reconnected == [("b", "h:1", True)]
    assert secured.server_key("h:1") == _key(keys, "b").encode()


def test_a_file_being_written_is_read_once_it_has_settled(keys: Path) -> None:
    security = _mutual(keys)
    policy = _policy(security)
    secured = SecuredConnections(policy, NodeConfig(auth_reload_interval_s=1.0), security)
    new_key = keys / "dir" / "stranger.key"
    new_key.write_bytes(b"")  # caught half written: truncated, not yet filled
    secured.check_files(10.0)
    assert policy.counters["auth_reloads"] == policy.counters["auth_reload_failed"] == 0
    new_key.write_bytes((keys / "stranger.key").read_bytes())
    secured.check_files(11.0)  # changed again since the last look: not read yet
    assert policy.counters["auth_reloads"] == 0
    secured.check_files(11.5)  # before the next check is due
    assert policy.counters["auth_reloads"] == 0
    secured.check_files(12.0)
    assert policy.counters["auth_reloads"] == 1
    assert policy.counters["auth_reload_failed"] == 0
    handshake = policy.check_handshake("direct", "h", "CURVE", [_raw(keys, "stranger")], NOW)
    assert handshake == Allow(_key(keys, "stranger"))


def test_a_bad_file_that_stays_bad_is_refused(keys: Path) -> None:
    security = _mutual(keys)
    policy = _policy(security)
    secured = SecuredConnections(policy, NodeConfig(auth_reload_interval_s=1.0), security)
    (keys / "dir" / "garbage.key").write_text("not a certificate\n")
    secured.check_files(10.0)
    secured.check_files(11.0)
    assert policy.counters["auth_reload_failed"] == 1
    assert policy.check_handshake("direct", "h", "CURVE", [_raw(keys, "a")], NOW) == Allow(
        _key(keys, "a")
    )
