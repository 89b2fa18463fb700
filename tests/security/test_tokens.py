"""JWT keys, issuing and verification (zcluster.security.tokens), and interop with PyJWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zcluster.errors import AuthError, ConfigError
from zcluster.security.tokens import (
    REASONS,
    SigningKey,
    TokenVerifier,
    VerificationKey,
    VerifiedToken,
    generate_token,
    load_signing_key,
    load_verification_key,
)

NOW = 1_700_000_000.0
AUD = "zcluster-test"
SECRET = b"0123456789abcdef0123456789abcdef-hs256-secret"


@dataclass(frozen=True)
class KeyFiles:
    secret: Path
    rsa_private: Path
    rsa_public: Path
    ec_private: Path
    ec_public: Path
    rsa_small: Path
    ec_p384: Path
    ed25519: Path
    encrypted: Path
    short_secret: Path


def _pem_private(key: Any, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    return data


def _pem_public(key: Any) -> bytes:
    data: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    d = tmp_path_factory.mktemp("keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    files = KeyFiles(*(d / n for n in KeyFiles.__dataclass_fields__))
    files.secret.write_bytes(SECRET + b"\n")  # the newline is not part of the secret
    files.rsa_private.write_bytes(_pem_private(rsa_key))
    files.rsa_public.write_bytes(_pem_public(rsa_key))
    files.ec_private.write_bytes(_pem_private(ec_key))
    files.ec_public.write_bytes(_pem_public(ec_key))
    files.rsa_small.write_bytes(
        _pem_private(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    )
    files.ec_p384.write_bytes(_pem_private(ec.generate_private_key(ec.SECP384R1())))
    files.ed25519.write_bytes(_pem_private(ed25519.Ed25519PrivateKey.generate()))
    files.encrypted.write_bytes(_pem_private(ec_key, b"pass phrase"))
    files.short_secret.write_bytes(b"too-short-secret")
    return files


def _private(keys: KeyFiles, alg: str) -> Path:
    return {"HS256": keys.secret, "RS256": keys.rsa_private, "ES256": keys.ec_private}[alg]


def _public(keys: KeyFiles, alg: str) -> Path:
    return {"HS256": keys.secret, "RS256": keys.rsa_public, "ES256": keys.ec_public}[alg]


def _verifier(
    keys: KeyFiles,
    *algs: str,
    leeway: float = 0.0,
    authorized: frozenset[str] | None = None,
    kid: str | None = None,
    **kwargs: Any,
) -> TokenVerifier:
    loaded = [load_verification_key(_public(keys, a), a, kid) for a in algs or ("HS256",)]
    return TokenVerifier(loaded, AUD, leeway, authorized, **kwargs)


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "n1",
        "aud": AUD,
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _hs(claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256", headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_signed(header: Any, payload: str | bytes, secret: bytes = SECRET) -> str:
    """A token assembled by hand (tests only), HMAC-SHA256 over whatever is given."""
    body = payload if isinstance(payload, bytes) else payload.encode()
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(body)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _refused(verifier: TokenVerifier, token: Any, now: float = NOW, **kwargs: Any) -> str:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token, now, **kwargs)
    assert caught.value.reason in REASONS
    assert caught.value.detail
    return caught.value.reason


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_round_trip_for_each_algorithm(keys: KeyFiles, alg: str) -> None:
    signing = load_signing_key(_private(keys, alg), alg)
    token = generate_token(signing, "n1", AUD, 60, NOW)
    verified = _verifier(keys, alg).verify(token, NOW + 1)
    assert verified == VerifiedToken(subject="n1", expires_at=NOW + 60, token_id=None)
    assert _verifier(keys, alg).verify(token.encode(), NOW).subject == "n1"


def test_a_verification_key_may_be_loaded_from_the_private_key(keys: KeyFiles) -> None:
    signing = load_signing_key(keys.ec_private, "ES256")
    token = generate_token(signing, "n1", AUD, 60, NOW)
    verifier = TokenVerifier([load_verification_key(keys.ec_private, "ES256")], AUD, 0, None)
    assert verifier.verify(token, NOW).subject == "n1"


def test_the_secret_is_not_in_the_repr(keys: KeyFiles) -> None:
    assert SECRET.decode() not in repr(load_signing_key(keys.secret, "HS256"))
    assert SECRET.decode() not in repr(load_verification_key(keys.secret, "HS256"))


@pytest.mark.parametrize(
    ("file", "alg", "words"),
    [
        ("short_secret", "HS256", "at least 32 bytes"),
        ("rsa_private", "HS256", "not an HS256 secret"),
        ("ec_private", "RS256", "EC secp256r1 key, but signing RS256 tokens needs an RSA"),
        ("rsa_private", "ES256", "RSA 2048-bit key, but signing ES256 tokens needs an EC P-256"),
        ("rsa_small", "RS256", "RSA 1024-bit key, but signing RS256 tokens needs an RSA key of"),
        ("ec_p384", "ES256", "EC secp384r1 key"),
        ("ed25519", "ES256", "Ed25519"),
        ("rsa_public", "RS256", "public key; signing needs the private key"),
        ("secret", "RS256", "not a PEM private key"),
        ("encrypted", "ES256", "encrypted"),
    ],
)
def test_a_bad_signing_key_file_is_refused(keys: KeyFiles, file: str, alg: str, words: str) -> None:
    path = getattr(keys, file)
    with pytest.raises(ConfigError) as caught:
        load_signing_key(path, alg)
    message = str(caught.value)
    assert str(path) in message
    assert alg in message
    assert words in message


@pytest.mark.parametrize(
    ("file", "alg", "words"),
    [
        ("short_secret", "HS256", "at least 32 bytes"),
        ("rsa_public", "HS256", "not an HS256 secret"),
        ("ec_public", "RS256", "but verifying RS256 tokens needs an RSA key"),
        ("rsa_public", "ES256", "but verifying ES256 tokens needs an EC P-256 key"),
        ("secret", "ES256", "neither a PEM public key nor a PEM private key"),
    ],
)
def test_a_bad_verification_key_file_is_refused(
    keys: KeyFiles, file: str, alg: str, words: str
) -> None:
    path = getattr(keys, file)
    with pytest.raises(ConfigError) as caught:
        load_verification_key(path, alg)
    assert str(path) in str(caught.value)
    assert words in str(caught.value)


def test_a_missing_file_and_an_unsupported_algorithm_are_config_errors(
    keys: KeyFiles, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_signing_key(tmp_path / "absent.pem", "RS256")
    for alg in ("none", "HS512", "hs256", "PS256"):
        with pytest.raises(ConfigError, match="unsupported JWT algorithm"):
            load_signing_key(keys.secret, alg)
        with pytest.raises(ConfigError, match="unsupported JWT algorithm"):
            load_verification_key(keys.secret, alg)


def test_keys_made_directly_are_checked_too(keys: KeyFiles) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        SigningKey("HS256", b"short")
    with pytest.raises(ConfigError, match="unsupported"):
        VerificationKey("none", SECRET)
    with pytest.raises(ConfigError, match="key id"):
        SigningKey("HS256", SECRET, kid="")
    with pytest.raises(ConfigError, match="needs an RSA key"):
        VerificationKey("RS256", keys.ec_public.read_bytes())
    with pytest.raises(ConfigError, match="VerificationKey"):
        TokenVerifier([], AUD, 0, None)
    with pytest.raises(ConfigError, match="leeway"):
        TokenVerifier([VerificationKey("HS256", SECRET)], AUD, -1, None)


def test_generate_token_refuses_bad_arguments() -> None:
    key = SigningKey("HS256", SECRET)
    for bad in ({"node_id": ""}, {"audience": ""}, {"ttl_s": 0}, {"ttl_s": float("inf")}):
        args: dict[str, Any] = {"node_id": "n1", "audience": AUD, "ttl_s": 60.0, **bad}
        with pytest.raises(ConfigError):
            generate_token(key, now=NOW, **args)


# ---------------------------------------------------------------- interop


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
@pytest.mark.parametrize("extra", [{}, {"jti": "abc123"}])
@pytest.mark.parametrize("kid", [None, "k1"])
def test_a_token_made_by_plain_pyjwt_verifies(
    keys: KeyFiles, alg: str, extra: dict[str, Any], kid: str | None
) -> None:
    key = SECRET if alg == "HS256" else _private(keys, alg).read_bytes()
    headers = None if kid is None else {"kid": kid}
    token = jwt.encode(_claims(**extra), key, algorithm=alg, headers=headers)
    verified = _verifier(keys, alg, kid=kid).verify(token, NOW)
    assert verified.subject == "n1"
    assert verified.token_id == extra.get("jti")


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_a_generated_token_decodes_with_plain_pyjwt(keys: KeyFiles, alg: str) -> None:
    signing = load_signing_key(_private(keys, alg), alg, kid="k7")
    now = time.time()  # plain jwt.decode checks the times against the real clock
    token = generate_token(signing, "n9", AUD, 300, now, one_time=True)
    key = SECRET if alg == "HS256" else _public(keys, alg).read_bytes()
    claims = jwt.decode(token, key, algorithms=[alg], audience=AUD)
    assert claims["sub"] == "n9"
    assert claims["aud"] == AUD
    assert claims["iat"] == claims["nbf"] == int(now)
    assert claims["exp"] - claims["iat"] in (300, 301)
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": "k7", "typ": "JWT"}


def test_one_time_tokens_get_fresh_ids() -> None:
    key = SigningKey("HS256", SECRET)
    ids = {
        jwt.decode(
            generate_token(key, "n1", AUD, 60, NOW, one_time=True),
            options={"verify_signature": False},
        )["jti"]
        for _ in range(20)
    }
    assert len(ids) == 20


# ---------------------------------------------------------------- algorithm


def test_alg_none_is_refused(keys: KeyFiles) -> None:
    unsigned = jwt.encode(_claims(), "", algorithm="none")
    assert _refused(_verifier(keys, "HS256", "RS256", "ES256"), unsigned) == "token_algorithm"
    none_header = _b64(b'{"alg":"none","typ":"JWT"}')
    by_hand = f"{none_header}.{_b64(json.dumps(_claims()).encode())}."
    assert _refused(_verifier(keys, "HS256"), by_hand) == "token_algorithm"


@pytest.mark.parametrize("alg", ["HS384", "HS512", "None", "NONE", "PS256"])
def test_other_algorithms_are_refused(keys: KeyFiles, alg: str) -> None:
    token = _hand_signed({"alg": alg, "typ": "JWT"}, json.dumps(_claims()))
    assert _refused(_verifier(keys, "HS256"), token) == "token_algorithm"


def test_hs256_signed_with_the_rsa_public_key_is_refused(keys: KeyFiles) -> None:
    """The HS/RS confusion: the public PEM (known to all) used as an HMAC secret."""
    public_pem = keys.rsa_public.read_bytes()
    forged = _hand_signed({"alg": "HS256", "typ": "JWT"}, json.dumps(_claims()), public_pem)
    assert _refused(_verifier(keys, "RS256"), forged) == "token_algorithm"
    # with an HS256 key configured as well, the forgery is checked with that secret only
    assert _refused(_verifier(keys, "RS256", "HS256"), forged) == "token_signature"


def test_an_rs256_token_is_not_checked_against_an_ec_key(keys: KeyFiles) -> None:
    token = generate_token(load_signing_key(keys.rsa_private, "RS256"), "n1", AUD, 60, NOW)
    assert _refused(_verifier(keys, "ES256", "HS256"), token) == "token_algorithm"


def test_the_kid_picks_the_key(keys: KeyFiles) -> None:
    rsa_key = load_verification_key(keys.rsa_public, "RS256", kid="rsa-1")
    hs_old = VerificationKey("HS256", b"o" * 32, kid="old")
    hs_new = VerificationKey("HS256", SECRET, kid="new")
    verifier = TokenVerifier([rsa_key, hs_old, hs_new], AUD, 0, None)
    assert verifier.verify(_hs(_claims(), {"kid": "new"}), NOW).subject == "n1"
    assert _refused(verifier, _hs(_claims(), {"kid": "old"})) == "token_signature"
    assert _refused(verifier, _hs(_claims(), {"kid": "nope"})) == "token_algorithm"
    assert _refused(verifier, _hs(_claims(), {"kid": "rsa-1"})) == "token_algorithm"
    # without a kid, each key of the algorithm is tried (a rotation in progress)
    assert verifier.verify(_hs(_claims()), NOW).subject == "n1"


def test_replace_keys_rotates(keys: KeyFiles) -> None:
    verifier = _verifier(keys, "HS256")
    old = _hs(_claims())
    new_secret = b"n" * 40
    new = jwt.encode(_claims(), new_secret, algorithm="HS256")
    assert _refused(verifier, new) == "token_signature"
    verifier.replace_keys([VerificationKey("HS256", new_secret)])
    assert verifier.verify(new, NOW).subject == "n1"
    assert _refused(verifier, old) == "token_signature"
    verifier.replace_keys([load_verification_key(keys.ec_public, "ES256")])
    assert _refused(verifier, new) == "token_algorithm"


# ---------------------------------------------------------------- form and signature


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "abc.def",
        "a.b.c.d",
        "!!!.abc.def",
        "eyJhbGciOiJIUzI1NiJ9 .e30.abc",
        "eyJhbGciOiJIUzI1NiJ9..abc",
        _b64(b"not json") + ".e30.abc",
        _b64(b"[1, 2]") + ".e30.abc",
        _b64(b'{"alg": "HS256", "kid": 5}') + ".e30.abc",
        _b64(b'{"alg": "HS256", "crit": ["exp"]}') + ".e30.abc",
        _b64(b"[" * 3000) + ".e30.abc",
        "e30.e30.abc\n",
        "eyJhbGciOiJIUzI1NiJ9.é30.abc",
        b"eyJhbGciOiJIUzI1NiJ9.\xff.abc",
        None,
        12,
    ],
)
def test_malformed_tokens_are_refused(keys: KeyFiles, token: Any) -> None:
    assert _refused(_verifier(keys, "HS256"), token) == "token_malformed"


def test_too_large_a_token_is_refused(keys: KeyFiles) -> None:
    verifier = _verifier(keys, "HS256", max_token_bytes=512)
    padded = _hs(_claims(pad="x" * 600))
    assert _refused(verifier, padded) == "token_malformed"
    assert _refused(verifier, padded.encode()) == "token_malformed"
    assert verifier.verify(_hs(_claims(pad="x" * 100)), NOW).subject == "n1"


def test_a_tampered_token_is_refused(keys: KeyFiles) -> None:
    for alg in ("HS256", "RS256", "ES256"):
        verifier = _verifier(keys, alg)
        token = generate_token(load_signing_key(_private(keys, alg), alg), "n1", AUD, 60, NOW)
        header, _, signature = token.split(".")
        payload = _b64(json.dumps(_claims(sub="admin")).encode())
        assert _refused(verifier, f"{header}.{payload}.{signature}") == "token_signature"
        flipped = signature[:-3] + ("AAA" if signature[-3:] != "AAA" else "BBB")
        assert _refused(verifier, f"{header}.{token.split('.')[1]}.{flipped}") == (
            "token_signature"
        )


def test_a_payload_that_is_not_an_object_or_too_deep_is_malformed(keys: KeyFiles) -> None:
    header = {"alg": "HS256", "typ": "JWT"}
    for payload in ("[1, 2, 3]", "not json", "[" * 3000 + "]" * 3000, '"n1"'):
        assert _refused(_verifier(keys), _hand_signed(header, payload)) == "token_malformed"


# ---------------------------------------------------------------- time


def test_expiry_with_and_without_leeway(keys: KeyFiles) -> None:
    token = _hs(_claims(exp=int(NOW) - 10))
    assert _refused(_verifier(keys), token) == "token_expired"
    assert _refused(_verifier(keys, leeway=10), token) == "token_expired"
    assert _verifier(keys, leeway=11).verify(token, NOW).expires_at == NOW - 10
    at_expiry = _hs(_claims(exp=int(NOW), nbf=None, iat=None))
    assert _refused(_verifier(keys), at_expiry) == "token_expired"
    assert _verifier(keys).verify(at_expiry, NOW - 0.5).subject == "n1"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_not_yet_valid_with_and_without_leeway(keys: KeyFiles, claim: str) -> None:
    token = _hs(_claims(**{claim: int(NOW) + 30}))
    assert _refused(_verifier(keys), token) == "token_not_yet_valid"
    assert _refused(_verifier(keys, leeway=29), token) == "token_not_yet_valid"
    assert _verifier(keys, leeway=30).verify(token, NOW).subject == "n1"
    assert _verifier(keys).verify(token, NOW + 30).subject == "n1"


def test_missing_expiry_is_refused_and_missing_nbf_iat_are_fine(keys: KeyFiles) -> None:
    assert _refused(_verifier(keys), _hs(_claims(exp=None))) == "token_expired"
    assert _verifier(keys).verify(_hs(_claims(nbf=None, iat=None)), NOW).subject == "n1"


@pytest.mark.parametrize("value", ["soon", True, [1], float("nan"), float("inf"), 10**400])
def test_a_time_claim_that_is_not_a_finite_number_is_malformed(keys: KeyFiles, value: Any) -> None:
    header = {"alg": "HS256", "typ": "JWT"}
    for claim in ("exp", "nbf", "iat"):
        payload = json.dumps(_claims(**{claim: value}))
        assert _refused(_verifier(keys), _hand_signed(header, payload)) == "token_malformed"


# ---------------------------------------------------------------- audience, subject, nodes


def test_audience(keys: KeyFiles) -> None:
    assert _refused(_verifier(keys), _hs(_claims(aud="other"))) == "token_audience"
    assert _refused(_verifier(keys), _hs(_claims(aud=None))) == "token_audience"
    assert _refused(_verifier(keys), _hs(_claims(aud=[1, 2]))) == "token_audience"
    assert _verifier(keys).verify(_hs(_claims(aud=["x", AUD])), NOW).subject == "n1"


def test_subject(keys: KeyFiles) -> None:
    verifier = _verifier(keys)
    assert _refused(verifier, _hs(_claims(sub=None))) == "token_subject"
    assert _refused(verifier, _hs(_claims(sub=7))) == "token_subject"
    assert _refused(verifier, _hs(_claims(sub=""))) == "token_subject"
    assert _refused(verifier, _hs(_claims()), subject="n2") == "token_subject"
    assert verifier.verify(_hs(_claims()), NOW, subject="n1").subject == "n1"


def test_authorized_nodes(keys: KeyFiles) -> None:
    verifier = _verifier(keys, authorized=frozenset({"n2", "n3"}))
    assert _refused(verifier, _hs(_claims())) == "token_not_authorized"
    assert verifier.verify(_hs(_claims(sub="n2")), NOW).subject == "n2"
    verifier.replace_authorized_nodes(frozenset({"n1"}))
    assert verifier.verify(_hs(_claims()), NOW).subject == "n1"
    assert _refused(verifier, _hs(_claims(sub="n2"))) == "token_not_authorized"
    verifier.replace_authorized_nodes(None)
    assert verifier.verify(_hs(_claims(sub="n2")), NOW).subject == "n2"


# ---------------------------------------------------------------- replay


def test_a_bearer_token_is_accepted_every_time(keys: KeyFiles) -> None:
    verifier = _verifier(keys)
    token = _hs(_claims())
    for _ in range(3):
        assert verifier.verify(token, NOW, scope="conn-1").token_id is None
    assert verifier.remembered_token_ids == 0


def test_a_one_time_token_is_accepted_once_per_scope(keys: KeyFiles) -> None:
    verifier = _verifier(keys)
    token = generate_token(SigningKey("HS256", SECRET), "n1", AUD, 60, NOW, one_time=True)
    first = verifier.verify(token, NOW, scope="conn-1")
    assert first.token_id is not None
    assert _refused(verifier, token, NOW + 1, scope="conn-1") == "token_replayed"
    assert verifier.verify(token, NOW + 1, scope="conn-2").token_id == first.token_id
    assert _refused(verifier, token, NOW + 2, scope="conn-2") == "token_replayed"
    # a refused token is not remembered: another id in the same scope is fine
    other = _hs(_claims(jti="other"))
    assert verifier.verify(other, NOW, scope="conn-1").token_id == "other"


def test_a_refused_one_time_token_is_not_remembered(keys: KeyFiles) -> None:
    verifier = _verifier(keys, authorized=frozenset({"n1"}))
    assert _refused(verifier, _hs(_claims(sub="n2", jti="j"))) == "token_not_authorized"
    assert verifier.remembered_token_ids == 0
    assert verifier.verify(_hs(_claims(jti="j")), NOW).token_id == "j"


def test_a_jti_that_is_not_a_string_is_malformed(keys: KeyFiles) -> None:
    assert _refused(_verifier(keys), _hs(_claims(jti=5))) == "token_malformed"


def test_the_replay_memory_is_bounded_and_fails_closed(keys: KeyFiles) -> None:
    verifier = _verifier(keys, leeway=5, replay_max_count=2)
    soon = _hs(_claims(jti="a", exp=int(NOW) + 10))
    later = _hs(_claims(jti="b", exp=int(NOW) + 100))
    third = _hs(_claims(jti="c", exp=int(NOW) + 200))
    verifier.verify(soon, NOW)
    verifier.verify(later, NOW)
    assert _refused(verifier, third) == "token_replay_memory_full"
    assert _refused(verifier, soon, NOW + 14) == "token_replayed"  # still in its leeway
    assert verifier.verify(_hs(_claims()), NOW).token_id is None  # bearer tokens still pass
    # once "a" can no longer be accepted (exp + leeway), its place is free again
    assert verifier.verify(third, NOW + 15).token_id == "c"
    assert verifier.remembered_token_ids == 2
    assert _refused(verifier, later, NOW + 20) == "token_replayed"
    assert _refused(verifier, soon, NOW + 20) == "token_expired"


# ---------------------------------------------------------------- any input


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.one_of(st.text(), st.binary(), st.text(alphabet="abcXYZ019_-.=", max_size=200)))
def test_arbitrary_input_raises_only_auth_error(keys: KeyFiles, token: str | bytes) -> None:
    verifier = _verifier(keys, "HS256", "RS256", "ES256")
    with pytest.raises(AuthError) as caught:
        verifier.verify(token, NOW)
    assert caught.value.reason in REASONS


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
_claim_values = st.dictionaries(
    st.sampled_from(["sub", "aud", "exp", "nbf", "iat", "jti", "x"]),
    st.one_of(_json, st.just(AUD), st.just("n1"), st.integers(int(NOW) - 100, int(NOW) + 100)),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.one_of(_json, st.dictionaries(st.sampled_from(["alg", "kid", "crit", "b64"]), _json)),
    claims=st.one_of(_json, _claim_values),
)
def test_signed_arbitrary_json_raises_only_auth_error(
    keys: KeyFiles, header: Any, claims: Any
) -> None:
    """Correctly signed tokens with arbitrary header and claims reach every later check."""
    verifier = _verifier(keys, "HS256", "RS256")
    if isinstance(header, dict) and "alg" not in header:
        header["alg"] = "HS256"
    token = _hand_signed(header, json.dumps(claims))
    try:
        verified = verifier.verify(token, NOW, scope="s")
    except AuthError as exc:
        assert exc.reason in REASONS
    else:
        assert verified.subject == claims["sub"]
