"""Tokens are plain RFC 7519 JWTs: ones made by an independent implementation (here the
JWS steps written out with ``hmac`` and ``cryptography``, no PyJWT) are accepted, and
ours verify there. A node given such a token joins a cluster with it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from tests.helpers import all_up, wait_until
from tests.security.pem import write_pem_pair
from zcluster import Node, SecurityConfig
from zcluster.security.tokens import (
    TokenVerifier,
    generate_token,
    load_signing_key,
    load_verification_key,
)

SECRET = b"an HS256 secret shared by the cluster, 32+ bytes"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _claims(node_id: str) -> dict[str, object]:
    now = int(time.time())
    return {"sub": node_id, "aud": "zcluster", "iat": now, "exp": now + 300}


def _signing_input(alg: str, claims: dict[str, object]) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": alg}, separators=(",", ":")).encode())
    return f"{header}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"


def hs256_by_hand(claims: dict[str, object]) -> str:
    signing_input = _signing_input("HS256", claims)
    signature = hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def es256_by_hand(private: ec.EllipticCurvePrivateKey, claims: dict[str, object]) -> str:
    signing_input = _signing_input("ES256", claims)
    r, s = decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def es256_check_by_hand(public: ec.EllipticCurvePublicKey, token: str) -> dict[str, object]:
    header, payload, signature = token.split(".")
    raw = _unb64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    return dict(json.loads(_unb64(payload)))


@pytest.fixture
def ec_files(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path, Path]:
    private = ec.generate_private_key(ec.SECP256R1())
    secret, public = write_pem_pair(private, tmp_path / "ec.pem", tmp_path / "ec.pub")
    return private, secret, public


def test_tokens_made_elsewhere_are_accepted(
    tmp_path: Path, ec_files: tuple[ec.EllipticCurvePrivateKey, Path, Path]
) -> None:
    private, _, public = ec_files
    (tmp_path / "secret").write_bytes(SECRET)
    now = time.time()
    for alg, path, token in (
        ("HS256", tmp_path / "secret", hs256_by_hand(_claims("n1"))),
        ("ES256", public, es256_by_hand(private, _claims("n1"))),
    ):
        verifier = TokenVerifier([load_verification_key(path, alg)], "zcluster", 0, None)
        assert verifier.verify(token, now, subject="n1").subject == "n1"


def test_our_tokens_verify_elsewhere(
    ec_files: tuple[ec.EllipticCurvePrivateKey, Path, Path],
) -> None:
    private, secret, _ = ec_files
    token = generate_token(load_signing_key(secret, "ES256"), "n1", "zcluster", 60, time.time())
    claims = es256_check_by_hand(private.public_key(), token)
    assert (claims["sub"], claims["aud"]) == ("n1", "zcluster")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(InvalidSignature):
        es256_check_by_hand(private.public_key(), tampered)


def test_a_node_joins_with_a_token_made_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "n2.token").write_text(hs256_by_hand(_claims("n2")) + "\n")
    with Node("n1", security=SecurityConfig("jwt", jwt_key=tmp_path / "secret")) as n1:
        security = SecurityConfig(
            "jwt", jwt_token=tmp_path / "n2.token", jwt_verify_keys=(tmp_path / "secret",)
        )
        with Node("n2", seeds=[n1.address], security=security) as n2:
            assert wait_until(lambda: all_up([n1, n2]), 10)


def test_certificates_made_by_zmq_auth_work_unchanged(tmp_path: Path) -> None:
    import zmq.auth

    keys = tmp_path / "certificates"
    keys.mkdir()
    for node_id in ("n1", "n2"):
        zmq.auth.create_certificates(str(keys), node_id)

    def security(node_id: str, seeds: dict[str, Path]) -> SecurityConfig:
        return SecurityConfig(
            "curve-mutual",
            key=keys / f"{node_id}.key_secret",
            seed_keys=seeds,
            authorized_keys=keys,  # the directory zmq.auth wrote, as it is
        )

    with Node("n1", security=security("n1", {})) as n1:
        seeds = {n1.address: keys / "n1.key"}
        with Node("n2", seeds=[n1.address], security=security("n2", seeds)) as n2:
            assert wait_until(lambda: all_up([n1, n2]), 10)
