"""Curve key files, authorized-key directories, and CA-signed node certificates."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster.errors import AuthError, ConfigError
from zcluster.security.keys import (
    CertificateAuthority,
    CurveKeyPair,
    NodeCertificate,
    check_curve_key,
    generate_curve_key_pair,
    load_authorized_keys,
    load_ca_public_keys,
    load_curve_key_pair,
    verify_certificate,
    write_curve_key_pair,
)

NOW = 1_700_000_000
LATER = NOW + 86400
KEY = zmq.curve_keypair()[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- Curve keys


def test_generated_pair_is_a_matching_curve_pair() -> None:
    pair = generate_curve_key_pair()
    assert pair.secret is not None
    assert zmq.curve_public(pair.secret) == pair.public
    assert check_curve_key(pair.public) == pair.public


def test_check_curve_key_accepts_str_and_bytes() -> None:
    assert check_curve_key(KEY.decode()) == KEY
    assert check_curve_key(KEY) == KEY


@pytest.mark.parametrize(
    "value",
    ["", "short", KEY.decode()[:-1], KEY.decode() + "0", "é" * 40, "~" * 40, "#" * 40, "\0" * 40],
)
def test_check_curve_key_names_what_is_wrong(value: str) -> None:
    with pytest.raises(ConfigError, match="the peer's key must be a Curve key"):
        check_curve_key(value, "the peer's key")


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    public, secret = write_curve_key_pair(tmp_path / "new" / "dir", "node-a")
    assert (public.name, secret.name) == ("node-a.key", "node-a.key_secret")
    assert mode(secret) == 0o600
    from_secret = load_curve_key_pair(secret, secret_required=True)
    assert from_secret.secret is not None
    assert load_curve_key_pair(public) == CurveKeyPair(from_secret.public, None)
    # the standard zmq.auth reader understands them too
    assert zmq.auth.load_certificate(secret) == (from_secret.public, from_secret.secret)
    assert not [p for p in public.parent.iterdir() if p not in (public, secret)]


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    write_curve_key_pair(tmp_path, "node-a")
    before = (tmp_path / "node-a.key").read_bytes()
    with pytest.raises(ConfigError, match=r"node-a\.key_secret already exists"):
        write_curve_key_pair(tmp_path, "node-a")
    (tmp_path / "node-a.key_secret").unlink()
    with pytest.raises(ConfigError, match=r"node-a\.key already exists"):
        write_curve_key_pair(tmp_path, "node-a")
    assert (tmp_path / "node-a.key").read_bytes() == before
    assert not (tmp_path / "node-a.key_secret").exists()


@pytest.mark.parametrize("name", ["", "a b", "../x", "a/b", "x" * 256])
def test_write_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="key name"):
        write_curve_key_pair(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_files_from_zmq_auth_load_unchanged(tmp_path: Path) -> None:
    public, secret = zmq.auth.create_certificates(tmp_path, "node-a")
    expected = zmq.auth.load_certificate(secret)
    assert load_curve_key_pair(Path(secret)) == CurveKeyPair(*expected)
    assert load_curve_key_pair(Path(public)) == CurveKeyPair(expected[0], None)


def test_load_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.key does not exist.*zcluster keygen"):
        load_curve_key_pair(tmp_path / "nope.key")


@pytest.mark.parametrize(
    "text",
    [
        "garbage\n",
        "public-key\n",
        'curve\n    public-key = "tooshort"\n',
        f'curve\n    public-key = "{KEY.decode()}"\n    secret-key = "nonsense"\n',
        f'curve\n    public-key = "{KEY.decode()}"\n'
        f'    secret-key = "{zmq.curve_keypair()[1].decode()}"\n',  # someone else's secret
    ],
)
def test_load_garbage_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.key_secret"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.key_secret"):
        load_curve_key_pair(path)


def test_load_public_file_when_secret_required(tmp_path: Path) -> None:
    public, _ = write_curve_key_pair(tmp_path, "node-a")
    with pytest.raises(ConfigError, match=r"only a public key.*node-a\.key_secret"):
        load_curve_key_pair(public, secret_required=True)


# ---------------------------------------------------------------- authorized keys


def test_authorized_keys_map_keys_to_file_stems(tmp_path: Path) -> None:
    for name in ("node-a", "node-b"):
        zmq.auth.create_certificates(tmp_path, name)  # secret files lie beside: ignored
    (tmp_path / "README").write_text("not a key")
    keys = load_authorized_keys(tmp_path)
    expected = {
        zmq.auth.load_certificate(tmp_path / f"{name}.key")[0]: name
        for name in ("node-a", "node-b")
    }
    assert keys == expected


def test_authorized_keys_empty_directory(tmp_path: Path) -> None:
    assert load_authorized_keys(tmp_path) == {}


def test_authorized_keys_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere does not exist"):
        load_authorized_keys(tmp_path / "nowhere")


def test_authorized_keys_garbage_file_is_named(tmp_path: Path) -> None:
    zmq.auth.create_certificates(tmp_path, "node-a")
    (tmp_path / "node-b.key").write_text("garbage")
    with pytest.raises(ConfigError, match=r"node-b\.key"):
        load_authorized_keys(tmp_path)


def test_authorized_keys_same_key_twice(tmp_path: Path) -> None:
    public, _ = zmq.auth.create_certificates(tmp_path, "node-a")
    (tmp_path / "node-b.key").write_bytes(Path(public).read_bytes())
    with pytest.raises(ConfigError, match=r"node-a\.key and .*node-b\.key hold the same"):
        load_authorized_keys(tmp_path)


@pytest.mark.parametrize("stem", ["has space", "", "tab\there", "bell\x07"])
def test_authorized_keys_stem_must_be_a_node_id(tmp_path: Path, stem: str) -> None:
    public, _ = zmq.auth.create_certificates(tmp_path, "node-a")
    (tmp_path / f"{stem}.key").write_bytes(Path(public).read_bytes())
    Path(public).unlink()
    with pytest.raises(ConfigError, match=r"node id .*rename the file"):
        load_authorized_keys(tmp_path)


def test_authorized_keys_refuse_a_secret_key(tmp_path: Path) -> None:
    (tmp_path / "made").mkdir()
    _, secret = zmq.auth.create_certificates(tmp_path / "made", "node-a")
    (tmp_path / "node-a.key").write_bytes(Path(secret).read_bytes())
    with pytest.raises(ConfigError, match=r"node-a\.key holds a secret key"):
        load_authorized_keys(tmp_path)


# ---------------------------------------------------------------- CA files


def test_ca_save_and_load_round_trip(tmp_path: Path) -> None:
    ca = CertificateAuthority.generate()
    public, secret = ca.save(tmp_path / "ca-dir")
    assert (public.name, secret.name) == ("ca.ca_public", "ca.ca_secret")
    assert mode(secret) == 0o600
    assert public.read_text().startswith("#")
    assert CertificateAuthority.load(secret).public_key == ca.public_key
    assert load_ca_public_keys([public]) == (ca.public_key,)
    assert load_ca_public_keys([secret, public]) == (ca.public_key,)


def test_ca_save_refuses_to_overwrite(tmp_path: Path) -> None:
    CertificateAuthority.generate().save(tmp_path, "ca")
    before = (tmp_path / "ca.ca_secret").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        CertificateAuthority.generate().save(tmp_path, "ca")
    assert (tmp_path / "ca.ca_secret").read_bytes() == before


def test_ca_load_needs_the_secret_file(tmp_path: Path) -> None:
    public, _ = CertificateAuthority.generate().save(tmp_path)
    with pytest.raises(ConfigError, match=r"ca\.ca_public holds no CA secret key"):
        CertificateAuthority.load(public)


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "garbage\n", "ed25519-public-key = AAAA\n"]
)
def test_ca_garbage_files_are_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.ca_public"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.ca_public"):
        load_ca_public_keys([path])


def test_ca_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gone\.ca_secret"):
        CertificateAuthority.load(tmp_path / "gone.ca_secret")


def test_ca_secret_file_with_a_foreign_public_key_is_corrupt(tmp_path: Path) -> None:
    _, secret = CertificateAuthority.generate().save(tmp_path, "a")
    other, _ = CertificateAuthority.generate().save(tmp_path, "b")
    own_public = [line for line in secret.read_text().splitlines() if "public" in line][-1]
    foreign = [line for line in other.read_text().splitlines() if "public" in line][-1]
    secret.write_text(secret.read_text().replace(own_public, foreign))
    with pytest.raises(ConfigError, match="corrupt"):
        CertificateAuthority.load(secret)


# ---------------------------------------------------------------- certificates


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture
def cert(ca: CertificateAuthority) -> NodeCertificate:
    return ca.sign("prod", "node-a", KEY, LATER)


def verify(cert: NodeCertificate, ca_keys: list[bytes], now: float = NOW) -> None:
    verify_certificate(cert, ca_keys, "prod", "node-a", KEY, now)


def test_signed_certificate_verifies(ca: CertificateAuthority, cert: NodeCertificate) -> None:
    verify(cert, [ca.public_key])
    verify(cert, [ca.public_key], now=LATER)  # not_after is inclusive
    other = CertificateAuthority.generate().public_key
    verify(cert, [other, ca.public_key])  # a rotated CA: either key will do


@pytest.mark.parametrize(
    ("expected", "reason"),
    [
        (("staging", "node-a", KEY), "certificate_wrong_cluster"),
        (("prod", "node-b", KEY), "certificate_wrong_node"),
        (("prod", "node-a", zmq.curve_keypair()[0]), "certificate_wrong_key"),
    ],
)
def test_certificate_for_something_else(
    ca: CertificateAuthority, cert: NodeCertificate, expected: tuple[str, str, bytes], reason: str
) -> None:
    with pytest.raises(AuthError) as caught:
        verify_certificate(cert, [ca.public_key], *expected, NOW)
    assert caught.value.reason == reason


def test_expired_certificate(ca: CertificateAuthority, cert: NodeCertificate) -> None:
    with pytest.raises(AuthError) as caught:
        verify(cert, [ca.public_key], now=LATER + 1)
    assert caught.value.reason == "certificate_expired"


def test_certificate_of_another_ca(cert: NodeCertificate) -> None:
    with pytest.raises(AuthError) as caught:
        verify(cert, [CertificateAuthority.generate().public_key])
    assert caught.value.reason == "certificate_signature"
    with pytest.raises(AuthError) as caught:
        verify(cert, [])
    assert caught.value.reason == "certificate_signature"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cluster", "prod2"),
        ("node_id", "node-b"),
        ("curve_public", zmq.curve_keypair()[0]),
        ("not_after", LATER + 1),
        ("signature", bytes(64)),
    ],
)
def test_tampering_with_any_field_breaks_verification(
    ca: CertificateAuthority, cert: NodeCertificate, field: str, value: object
) -> None:
    changes: dict[str, Any] = {field: value}
    forged = dataclasses.replace(cert, **changes)
    # verified against what the forgery claims, only the signature can catch it
    with pytest.raises(AuthError) as caught:
        verify_certificate(
            forged, [ca.public_key], forged.cluster, forged.node_id, forged.curve_public, NOW
        )
    assert caught.value.reason == "certificate_signature"


def test_signature_text_round_trips(ca: CertificateAuthority, cert: NodeCertificate) -> None:
    text = cert.signature_text()
    assert len(text) <= 256
    assert text.startswith(f"{LATER}.")
    assert NodeCertificate.from_signature_text("prod", "node-a", KEY, text) == cert
    huge = ca.sign("prod", "node-a", KEY, 2**63 - 1)
    assert len(huge.signature_text()) <= 256
    assert NodeCertificate.from_signature_text("prod", "node-a", KEY, huge.signature_text()) == huge


def test_signature_text_with_other_context_fails_verification(
    ca: CertificateAuthority, cert: NodeCertificate
) -> None:
    rebuilt = NodeCertificate.from_signature_text("prod", "node-b", KEY, cert.signature_text())
    with pytest.raises(AuthError) as caught:
        verify_certificate(rebuilt, [ca.public_key], "prod", "node-b", KEY, NOW)
    assert caught.value.reason == "certificate_signature"


def malformed_texts(cert: NodeCertificate) -> list[str]:
    sig = cert.signature_text().split(".", 1)[1]
    return [
        "",
        "no-dot",
        sig,
        f".{sig}",
        f"-1.{sig}",
        f"{2**63}.{sig}",
        f"{10**30}.{sig}",
        f"0{LATER}.{sig}",
        f"+{LATER}.{sig}",
        f" {LATER}.{sig}",
        f"{LATER}.{sig}=",
        f"{LATER}.{sig}==",
        f"{LATER}.{sig[:-1]}",
        f"{LATER}.{sig}A",
        f"{LATER}.{sig[:-1]}B",  # non-canonical: unused bits set
        f"{LATER}.{sig[:-2]}+/",
        f"{LATER}.{sig}.{sig}",
        "١٢٣." + sig,  # Arabic-Indic digits
        f"{LATER}." + "é" * 86,
        f"{LATER}." + "A" * 10_000_000,
    ]


def test_malformed_signature_texts(cert: NodeCertificate) -> None:
    for text in malformed_texts(cert):
        with pytest.raises(AuthError) as caught:
            NodeCertificate.from_signature_text("prod", "node-a", KEY, text)
        assert caught.value.reason == "certificate_malformed", text[:40]


@pytest.mark.parametrize(
    ("cluster", "node_id", "key"),
    [
        ("", "node-a", KEY),
        ("prod", "bad id", KEY),
        ("prod", "\ud800", KEY),
        ("prod", "x" * 256, KEY),
        ("prod", "node-a", b"short"),
        ("prod", "node-a", KEY.decode()),
        (None, "node-a", KEY),
    ],
)
def test_malformed_context_values(
    cert: NodeCertificate, cluster: object, node_id: object, key: object
) -> None:
    with pytest.raises(AuthError) as caught:
        NodeCertificate.from_signature_text(cluster, node_id, key, cert.signature_text())  # type: ignore[arg-type]
    assert caught.value.reason == "certificate_malformed"


def test_from_signature_text_of_a_non_string() -> None:
    with pytest.raises(AuthError, match="certificate_malformed"):
        NodeCertificate.from_signature_text("prod", "node-a", KEY, b"1.AAAA")  # type: ignore[arg-type]


_CA = CertificateAuthority.generate()
_CERT = _CA.sign("prod", "node-a", KEY, LATER)
_SIG = _CERT.signature_text().split(".", 1)[1]
near_valid = st.builds(
    lambda digits, tail: f"{digits}.{tail}",
    st.from_regex(r"-?[0-9]{0,22}", fullmatch=True),
    st.one_of(st.just(_SIG), st.text(alphabet="ABQgw_-=+/a9", min_size=84, max_size=88)),
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(st.text(max_size=300), near_valid, st.just(_CERT.signature_text())),
    node_id=st.one_of(st.just("node-a"), st.text(max_size=20)),
)
def test_from_signature_text_raises_only_auth_error(text: str, node_id: str) -> None:
    try:
        rebuilt = NodeCertificate.from_signature_text("prod", node_id, KEY, text)
    except AuthError as exc:
        assert exc.reason == "certificate_malformed"
        return
    try:
        verify_certificate(rebuilt, [_CA.public_key], "prod", node_id, KEY, NOW)
    except AuthError as exc:
        assert exc.reason in {"certificate_signature", "certificate_expired"}
    else:
        assert rebuilt == _CERT


# ---------------------------------------------------------------- certificate files


def test_certificate_file_round_trips(tmp_path: Path, cert: NodeCertificate) -> None:
    path = tmp_path / "node-a.cert"
    cert.write(path)
    assert NodeCertificate.read(path) == cert
    assert set(json.loads(path.read_text())) == {
        "cluster",
        "node_id",
        "curve_public",
        "not_after",
        "signature",
    }
    cert.write(path)  # a renewal replaces it
    assert NodeCertificate.read(path) == cert


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: "not json",
        lambda d: "[1, 2]",
        lambda d: "[" * 60_000,
        lambda d: json.dumps({**d, "extra": 1}),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "signature"}),
        lambda d: json.dumps({**d, "signature": "!!!"}),
        lambda d: json.dumps({**d, "signature": "AAAA"}),
        lambda d: json.dumps({**d, "not_after": "soon"}),
        lambda d: json.dumps({**d, "not_after": -1}),
        lambda d: json.dumps({**d, "not_after": 1.5}),
        lambda d: json.dumps({**d, "curve_public": "nope"}),
        lambda d: json.dumps({**d, "curve_public": 7}),
        lambda d: json.dumps({**d, "node_id": "has space"}),
        lambda d: json.dumps({**d, "cluster": None}),
    ],
)
def test_certificate_file_garbage(tmp_path: Path, cert: NodeCertificate, mutate: object) -> None:
    good = tmp_path / "good.cert"
    cert.write(good)
    fields = json.loads(good.read_text())
    path = tmp_path / "bad.cert"
    path.write_text(mutate(fields))  # type: ignore[operator]
    with pytest.raises(ConfigError, match=r"bad\.cert is not a valid node certificate"):
        NodeCertificate.read(path)


def test_certificate_file_missing_or_binary(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gone\.cert"):
        NodeCertificate.read(tmp_path / "gone.cert")
    (tmp_path / "bin.cert").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"bin\.cert"):
        NodeCertificate.read(tmp_path / "bin.cert")
