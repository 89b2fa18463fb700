"""``zcluster token issue`` and ``zcluster token verify`` (zcluster.cli_token)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.security.pem import write_pem_pair
from zcluster.cli_token import token
from zcluster.errors import ConfigError

SECRET = b"an-hs256-secret-of-more-than-32-bytes"


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli-keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (d / "hs.secret").write_bytes(SECRET + b"\n")
    for name, key in (("rsa", rsa_key), ("ec", ec_key)):
        write_pem_pair(key, d / f"{name}.pem", d / f"{name}.pub.pem")
    return d


FILES = {
    "HS256": ("hs.secret", "hs.secret"),
    "RS256": ("rsa.pem", "rsa.pub.pem"),
    "ES256": ("ec.pem", "ec.pub.pem"),
}


def run(*args: str | Path, stdin: str | None = None) -> Result:
    return CliRunner().invoke(token, [str(a) for a in args], input=stdin)


def issued(key_dir: Path, alg: str, *extra: str) -> str:
    result = run(
        "issue", "--node", "n1", "--key", key_dir / FILES[alg.upper()][0], "--alg", alg, *extra
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_issue_then_verify(key_dir: Path, alg: str) -> None:
    before = time.time()
    text = issued(key_dir, alg)
    assert jwt.get_unverified_header(text)["alg"] == alg
    result = run("verify", "--key", key_dir / FILES[alg][1], "--alg", alg, text)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["subject"] == "n1"
    assert shown["token_id"] is None
    assert before + 3600 <= shown["expires_at"] <= time.time() + 3601


def test_the_algorithm_name_is_case_insensitive(key_dir: Path) -> None:
    text = issued(key_dir, "es256")
    assert jwt.get_unverified_header(text)["alg"] == "ES256"


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400)]
)
def test_ttl_units(key_dir: Path, ttl: str, seconds: int) -> None:
    claims = jwt.decode(
        issued(key_dir, "HS256", "--ttl", ttl), SECRET, algorithms=["HS256"], audience="zcluster"
    )
    assert claims["exp"] - claims["iat"] in (seconds, seconds + 1)


@pytest.mark.parametrize("ttl", ["0", "-5", "1w", "h", "1.5.h", ""])
def test_a_bad_ttl_is_a_usage_error(key_dir: Path, ttl: str) -> None:
    result = run(
        "issue", "--node", "n1", "--key", key_dir / "hs.secret", "--alg", "HS256", "--ttl", ttl
    )
    assert result.exit_code == 2
    assert "not a positive duration" in result.output


def test_one_time_kid_and_audience(key_dir: Path) -> None:
    text = issued(key_dir, "RS256", "--one-time", "--kid", "k1", "--audience", "prod")
    assert jwt.get_unverified_header(text)["kid"] == "k1"
    public = key_dir / "rsa.pub.pem"
    result = run("verify", "--key", public, "--alg", "RS256", "--audience", "prod", text)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert isinstance(shown["token_id"], str)
    assert shown["token_id"] == jwt.decode(text, options={"verify_signature": False})["jti"]
    wrong_kid = run(
        "verify", "--key", public, "--alg", "RS256", "--kid", "k2", "--audience", "prod", text
    )
    assert wrong_kid.exit_code == 1
    assert "token_algorithm" in wrong_kid.stderr


def test_verify_reads_the_token_from_stdin(key_dir: Path) -> None:
    text = issued(key_dir, "HS256")
    result = run("verify", "--key", key_dir / "hs.secret", "--alg", "HS256", "-", stdin=text + "\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["subject"] == "n1"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--audience", "other"), "token_audience"),
        (("--alg", "ES256", "--key", "ec.pub.pem"), "token_algorithm"),
    ],
)
def test_verify_refusal_exits_1_with_the_reason(
    key_dir: Path, args: tuple[str, ...], reason: str
) -> None:
    text = issued(key_dir, "HS256")
    base = {"--key": "hs.secret", "--alg": "HS256"}
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    options = {**base, **pairs}
    if "--key" in options:
        options["--key"] = str(key_dir / options["--key"])
    flat = [part for pair in options.items() for part in pair]
    result = run("verify", *flat, text)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"token refused: {reason}" in result.stderr


def test_verify_refuses_an_expired_token(key_dir: Path) -> None:
    old = jwt.encode(
        {"sub": "n1", "aud": "zcluster", "exp": int(time.time()) - 60}, SECRET, algorithm="HS256"
    )
    result = run("verify", "--key", key_dir / "hs.secret", "--alg", "HS256", old)
    assert result.exit_code == 1
    assert "token_expired" in result.stderr
    leeway = run("verify", "--key", key_dir / "hs.secret", "--alg", "HS256", "--leeway", "120", old)
    assert leeway.exit_code == 0, leeway.output


def test_verify_refuses_garbage(key_dir: Path) -> None:
    result = run("verify", "--key", key_dir / "hs.secret", "--alg", "HS256", "not-a-token")
    assert result.exit_code == 1
    assert "token_malformed" in result.stderr


@pytest.mark.parametrize(
    ("command", "file", "alg", "words"),
    [
        ("issue", "absent.pem", "RS256", "cannot read"),
        ("issue", "ec.pem", "RS256", "needs an RSA key"),
        ("issue", "rsa.pub.pem", "RS256", "signing needs the private key"),
        ("issue", "rsa.pem", "HS256", "not an HS256 secret"),
        ("verify", "hs.secret", "ES256", "neither a PEM public key"),
    ],
)
def test_a_bad_key_file_fails_with_a_message(
    key_dir: Path, command: str, file: str, alg: str, words: str
) -> None:
    path = key_dir / file
    args: list[str | Path] = ["--key", path, "--alg", alg]
    result = run(command, *args, *(["--node", "n1"] if command == "issue" else ["a.b.c"]))
    assert result.exit_code != 0
    assert result.stdout == ""
    assert isinstance(result.exception, ConfigError)
    assert str(path) in str(result.exception)
    assert alg in str(result.exception)
    assert words in str(result.exception)


def test_an_unknown_algorithm_is_a_usage_error(key_dir: Path) -> None:
    result = run("issue", "--node", "n1", "--key", key_dir / "hs.secret", "--alg", "none")
    assert result.exit_code == 2
    assert "'none' is not one of" in result.output
