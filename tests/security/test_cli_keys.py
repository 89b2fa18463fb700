"""``zcluster keygen``: key pairs, CA keys and node certificates from the command line."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner, Result

from zcluster.cli_keys import keygen
from zcluster.errors import AuthError, ConfigError
from zcluster.security.keys import (
    NodeCertificate,
    load_ca_public_keys,
    verify_certificate,
)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(keygen, [str(arg) for arg in args])


def failure(result: Result) -> str:
    """What the user is told: click's usage message, or the ConfigError the main CLI prints."""
    assert result.exit_code != 0
    if isinstance(result.exception, ConfigError):
        return str(result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    return result.output


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA, a node key pair, and the node's certificate file."""
    assert run("--ca", "--dir", tmp_path / "ca").exit_code == 0
    assert run("--dir", tmp_path / "keys", "--name", "node-a").exit_code == 0
    out = tmp_path / "node-a.cert"
    result = run(
        "--sign",
        "--ca-key",
        tmp_path / "ca" / "ca.ca_secret",
        "--node-key",
        tmp_path / "keys" / "node-a.key",
        "--node",
        "node-a",
        "--cluster",
        "prod",
        "--days",
        "2",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    return tmp_path / "ca" / "ca.ca_public", tmp_path / "keys" / "node-a.key", out


def test_curve_key_pair_is_written_and_loadable(tmp_path: Path) -> None:
    result = run("--dir", tmp_path / "keys", "--name", "node-a")
    assert result.exit_code == 0, result.output
    public_file, secret_file = (
        tmp_path / "keys" / "node-a.key",
        tmp_path / "keys" / "node-a.key_secret",
    )
    public, secret = zmq.auth.load_certificate(secret_file)
    assert secret is not None
    assert zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(public_file) == (public, None)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert str(public_file) in result.output
    assert str(secret_file) in result.output
    assert public.decode() in result.output
    assert secret.decode() not in result.output


def test_existing_key_pair_is_not_replaced(tmp_path: Path) -> None:
    run("--dir", tmp_path, "--name", "node-a")
    before = (tmp_path / "node-a.key_secret").read_bytes()
    message = failure(run("--dir", tmp_path, "--name", "node-a"))
    assert "node-a.key_secret already exists" in message
    assert (tmp_path / "node-a.key_secret").read_bytes() == before


def test_ca_key_pair_is_written(tmp_path: Path) -> None:
    result = run("--ca", "--dir", tmp_path, "--name", "root")
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "root.ca_public") in result.output
    assert stat.S_IMODE((tmp_path / "root.ca_secret").stat().st_mode) == 0o600
    assert load_ca_public_keys([tmp_path / "root.ca_public"]) == load_ca_public_keys(
        [tmp_path / "root.ca_secret"]
    )


def test_signed_certificate_verifies(signed: tuple[Path, Path, Path]) -> None:
    ca_public, node_key, out = signed
    cert = NodeCertificate.read(out)
    public, _ = zmq.auth.load_certificate(node_key)
    ca_keys = load_ca_public_keys([ca_public])
    now = time.time()
    verify_certificate(cert, ca_keys, "prod", "node-a", public, now)
    assert now + 86400 < cert.not_after <= now + 2 * 86400 + 1
    with pytest.raises(AuthError) as caught:
        verify_certificate(cert, ca_keys, "prod", "node-a", public, now + 3 * 86400)
    assert caught.value.reason == "certificate_expired"


def test_sign_defaults_to_cluster_zcluster(tmp_path: Path) -> None:
    run("--ca", "--dir", tmp_path)
    run("--dir", tmp_path, "--name", "n1")
    out = tmp_path / "n1.cert"
    args: list[str | Path] = [
        "--ca-key",
        tmp_path / "ca.ca_secret",
        "--node-key",
        tmp_path / "n1.key",
    ]
    result = run("--sign", *args, "--node", "n1", "--out", out)
    assert result.exit_code == 0, result.output
    cert = NodeCertificate.read(out)
    assert cert.cluster == "zcluster"
    assert 364 * 86400 < cert.not_after - time.time() <= 365 * 86400


def test_sign_refuses_a_secret_node_key(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, node_key, _ = signed
    secret = node_key.with_name("node-a.key_secret")
    result = run(
        "--sign",
        "--ca-key",
        tmp_path / "ca" / "ca.ca_secret",
        "--node-key",
        secret,
        "--node",
        "node-a",
        "--out",
        tmp_path / "x.cert",
    )
    assert f"{secret} holds a secret key" in failure(result)
    assert not (tmp_path / "x.cert").exists()


@pytest.mark.parametrize("which", ["ca-key", "node-key"])
def test_sign_with_a_missing_file_names_it(tmp_path: Path, which: str) -> None:
    run("--ca", "--dir", tmp_path)
    run("--dir", tmp_path, "--name", "n1")
    files = {"ca-key": tmp_path / "ca.ca_secret", "node-key": tmp_path / "n1.key"}
    files[which] = tmp_path / "missing.file"
    result = run(
        "--sign",
        "--ca-key",
        files["ca-key"],
        "--node-key",
        files["node-key"],
        "--node",
        "n1",
        "--out",
        tmp_path / "n1.cert",
    )
    assert str(tmp_path / "missing.file") in failure(result)


def test_sign_with_the_ca_public_file_says_to_give_the_secret(tmp_path: Path) -> None:
    run("--ca", "--dir", tmp_path)
    run("--dir", tmp_path, "--name", "n1")
    result = run(
        "--sign",
        "--ca-key",
        tmp_path / "ca.ca_public",
        "--node-key",
        tmp_path / "n1.key",
        "--node",
        "n1",
        "--out",
        tmp_path / "n1.cert",
    )
    assert "ca.ca_public holds no CA secret key" in failure(result)


def test_sign_with_a_garbage_node_key_names_it(tmp_path: Path) -> None:
    run("--ca", "--dir", tmp_path)
    (tmp_path / "n1.key").write_text("garbage")
    result = run(
        "--sign",
        "--ca-key",
        tmp_path / "ca.ca_secret",
        "--node-key",
        tmp_path / "n1.key",
        "--node",
        "n1",
        "--out",
        tmp_path / "n1.cert",
    )
    assert str(tmp_path / "n1.key") in failure(result)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "--dir DIR is required"),
        (["--dir", "d"], "--name NAME is required"),
        (["--ca", "--sign"], "--ca and --sign do not go together"),
        (["--sign", "--node", "n"], "--sign needs"),
        (["--sign", "--dir", "d"], "--dir: not used with --sign"),
        (["--dir", "d", "--name", "n", "--out", "f"], "--out: used only with --sign"),
        (["--dir", "d", "--name", "n", "--days", "3"], "--days: used only with --sign"),
        (["--sign", "--days", "0"], "--days"),
    ],
)
def test_bad_arguments_are_usage_errors(
    tmp_path: Path, args: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2
    assert expected in result.output
    assert list(tmp_path.iterdir()) == []


def test_bad_key_name_is_a_config_error(tmp_path: Path) -> None:
    assert "key name" in failure(run("--dir", tmp_path, "--name", "has space"))
    assert list(tmp_path.iterdir()) == []
