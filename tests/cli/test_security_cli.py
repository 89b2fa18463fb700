"""The security flags of the command line, as real processes on 127.0.0.1: a cluster of
``zcluster node`` processes forms in each mode and carries a ``zcluster pub`` to a
``zcluster sub``; ``zcluster keygen`` and ``zcluster token issue`` set one up; bad
flags are one line and exit status 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.commands import PROCESS_EXIT_TIMEOUT_S, NodeProcess, zcluster
from tests.helpers import wait_until
from zcluster.security.keys import (
    CertificateAuthority,
    load_curve_key_pair,
    write_curve_key_pair,
)
from zcluster.testing.processes import free_port_pair

#: how long a node gets to see the whole cluster, a subscriber to say it subscribed
FORM_TIMEOUT_S = 15
NODES = ("n1", "n2", "n3")
#: the short-lived clients' key names: in curve-mutual they take the id their key is for
CLIENTS = ("sub1", "pub1")
Spawn = Callable[..., NodeProcess]
SUB = [sys.executable, "-m", "zcluster", "sub"]


def _public(keys: Path, name: str) -> str:
    return load_curve_key_pair(keys / f"{name}.key").public.decode()


def security_args(mode: str, keys: Path, seed: str) -> Callable[[str], list[str]]:
    """Throw-away credentials for ``mode`` in ``keys``; the flags of node or client NAME.

    Each curve mode gives the seed's key another way: as z85, as its NAME.key file, or
    in a known-hosts file."""
    keys.mkdir()
    names = (*NODES, *CLIENTS)
    for name in names:
        write_curve_key_pair(keys, name)
    secret = keys / "hs256.secret"
    secret.write_text("a test cluster's HS256 secret, 32 bytes or more\n")
    if mode == "curve":
        seed_key = ["--seed-key", f"{seed}={_public(keys, 'n1')}"]
        return lambda name: [
            "--security=curve",
            *seed_key,
            *(["--key", str(keys / f"{name}.key_secret")] if name in NODES else []),
        ]
    if mode == "curve-mutual-keys":
        authorized = keys / "authorized"
        authorized.mkdir()
        for name in names:
            (authorized / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())
        return lambda name: [
            "--security=curve-mutual",
            f"--key={keys / f'{name}.key_secret'}",
            f"--authorized-keys={authorized}",
            f"--seed-key={seed}={keys / 'n1.key'}",
        ]
    if mode == "curve-mutual-ca":
        authority = CertificateAuthority.generate()
        ca_public, _ = authority.save(keys)
        not_after = int(time.time()) + 3600
        for name in names:
            certificate = authority.sign("zcluster", name, _public(keys, name).encode(), not_after)
            certificate.write(keys / f"{name}.cert")
        return lambda name: [
            "--security=curve-mutual",
            f"--key={keys / f'{name}.key_secret'}",
            f"--ca={ca_public}",
            f"--certificate={keys / f'{name}.cert'}",
            f"--seed-key={seed}={keys / 'n1.key'}",
        ]
    if mode == "jwt":
        return lambda name: ["--security=jwt", f"--jwt-key={secret}", "--jwt-alg=HS256"]
    assert mode == "curve+jwt"
    known_hosts = keys / "known_hosts"
    known_hosts.write_text(f"# the seeds\n{seed} {_public(keys, 'n1')}\n")
    return lambda name: [
        "--security=curve+jwt",
        f"--key={keys / f'{name}.key_secret'}",
        f"--known-hosts={known_hosts}",
        f"--jwt-key={secret}",
    ]


def start_cluster(spawn: Spawn, seed: str, args: Callable[[str], list[str]]) -> None:
    """n1 at ``seed``, n2 and n3 joining through it; every one sees all three up."""
    n1 = spawn("n1", "--id", "n1", "--bind", seed, *args("n1"))
    assert n1.wait_log("listening on", FORM_TIMEOUT_S), n1.log()
    others = [spawn(n, "--id", n, "--seed", seed, *args(n)) for n in NODES[1:]]
    for node in (n1, *others):
        assert node.wait_log("view: 3 up of 3", FORM_TIMEOUT_S), node.log()
        assert "Traceback" not in node.log()


def pub_reaches_sub(
    seed: str, args: Callable[[str], list[str]], tmp_path: Path, sender: str = ""
) -> None:
    """``zcluster sub`` prints what ``zcluster pub`` sends, from ``sender`` if given."""
    err = tmp_path / "sub.err"
    with err.open("wb") as err_file:
        sub = subprocess.Popen(
            [*SUB, "greetings", "--seed", seed, "--count", "1", *args("sub1")],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    try:
        assert wait_until(
            lambda: "subscribed to 'greetings'" in err.read_text() or sub.poll() is not None,
            FORM_TIMEOUT_S,
        )
        assert sub.poll() is None, err.read_text()
        result = zcluster("pub", "greetings", "hello", "--seed", seed, *args("pub1"))
        told = f"pub said:\n{result.stdout}{result.stderr}sub said:\n{err.read_text()}"
        assert result.returncode == 0, told
        assert "to 1 subscriber(s); 1 confirmed having them all" in result.stdout, told
        out, _ = sub.communicate(timeout=PROCESS_EXIT_TIMEOUT_S)
        assert out.strip().endswith(f"{sender}] hello"), out + err.read_text()
        assert sub.returncode == 0, err.read_text()
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
        if sub.stdout is not None:
            sub.stdout.close()


@pytest.mark.parametrize(
    "mode", ["curve", "curve-mutual-keys", "curve-mutual-ca", "jwt", "curve+jwt"]
)
def test_a_secured_cluster_forms_and_carries_a_publication(
    spawn: Spawn, tmp_path: Path, mode: str
) -> None:
    seed = f"127.0.0.1:{free_port_pair()}"
    args = security_args(mode, tmp_path / "keys", seed)
    start_cluster(spawn, seed, args)
    # in curve-mutual a client speaks as the node its key or certificate is for
    pub_reaches_sub(seed, args, tmp_path, "[pub1" if mode.startswith("curve-mutual") else "")
    # a request to a member, and a direct message (the built-in view handler of n3)
    asked = zcluster("request", "n3", "zcluster.view", "--seed", seed, *args("pub1"))
    assert asked.returncode == 0, asked.stderr
    assert {m["node_id"] for m in json.loads(asked.stdout)["members"]} >= set(NODES), asked.stdout
    sent = zcluster("send", "n2", "zcluster.view", "hello", "--seed", seed, *args("pub1"))
    assert sent.returncode == 0, sent.stderr


def _run(*args: str | Path) -> str:
    """A zcluster command that must succeed: its stdout."""
    result = zcluster(*(str(arg) for arg in args))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_keygen_and_token_issue_set_a_cluster_up(spawn: Spawn, tmp_path: Path) -> None:
    """The curve+jwt setup of docs/security.md from the shell: a key pair and a token per
    node, then the nodes; an operator's token lets ``zcluster members`` in as "ops"."""
    keys = tmp_path / "keys"
    secret = tmp_path / "hs256.secret"
    secret.write_text("the cluster's HS256 secret: 32 bytes at the very least\n")
    seed = f"127.0.0.1:{free_port_pair()}"
    for name in (*NODES, "ops"):
        _run("keygen", "--dir", keys, "--name", name)
        token = _run("token", "issue", "--node", name, "--key", secret, "--alg", "HS256")
        (tmp_path / f"{name}.jwt").write_text(token)
    seed_key = f"{seed}={keys / 'n1.key'}"

    def args(name: str) -> list[str]:
        return [
            *("--security", "curve+jwt", "--key", str(keys / f"{name}.key_secret")),
            *("--seed-key", seed_key, "--jwt-token", str(tmp_path / f"{name}.jwt")),
            *("--jwt-verify-key", str(secret)),
        ]

    start_cluster(spawn, seed, args)
    members = zcluster("members", "--seed", seed, *args("ops"))
    assert members.returncode == 0, members.stderr
    listed = [line.split()[:2] for line in members.stdout.splitlines()[1:]]
    assert listed == [["n1", "up"], ["n2", "up"], ["n3", "up"]], members.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--security", "bogus"], "Invalid value for '--security': 'bogus' is not one of"),
        (
            ["--security", "curve-mutual", "--authorized-keys", "."],
            "security mode curve-mutual needs this node's key file",
        ),
        (["--security", "curve", "--jwt-key", "secret"], "security mode curve uses no JWT keys"),
        (
            ["--security", "curve", "--key", "missing.key_secret"],
            "Curve key file missing.key_secret does not exist",
        ),
        (["--security", "jwt", "--jwt-key", "missing"], "cannot read HS256 signing key file"),
        (["--security", "jwt", "--jwt-key", "s", "--jwt-alg", "XS1"], "unknown JWT algorithm"),
        (["--security", "curve", "--seed-key", "127.0.0.1:7000"], "expected HOST:PORT=KEY"),
        (["--security", "curve", "--seed-key", "h:1=nokey"], "must be its Curve public key"),
        (["--key", "x.key_secret"], "security mode none uses no Curve keys"),
    ],
)
@pytest.mark.parametrize("command", [["node", "--id", "a"], ["pub", "t", "m", "--seed", "h:1"]])
def test_bad_security_flags_give_one_line_and_exit_2(
    tmp_path: Path, command: list[str], args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zcluster", *command, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zcluster: error:") and message in lines[0], lines[0]


def test_a_bad_security_variable_names_itself(tmp_path: Path) -> None:
    result = zcluster("members", "--seed", "h:1", env={"ZCLUSTER_SECURITY": "curvy"})
    assert result.returncode == 2
    assert result.stderr == (
        "zcluster: error: ZCLUSTER_SECURITY: unknown security mode 'curvy' "
        "(one of: none, curve, curve-mutual, jwt, curve+jwt)\n"
    )
    key = tmp_path / "n1.key_secret"
    result = zcluster(
        "node", "--id", "a", "--security", "none", env={"ZCLUSTER_SECURITY_KEY": str(key)}
    )
    assert result.returncode == 2
    assert "(settings not given as flags: ZCLUSTER_SECURITY_KEY)" in result.stderr


def test_the_cli_lists_keygen_and_token() -> None:
    listing = " ".join(_run("--help").split())
    assert "keygen Write a Curve key pair, a cluster CA key, or a node certificate." in listing
    assert "token Issue or check JWTs for the jwt security mode." in listing
    for command in ("node", "pub", "sub", "members", "request", "send"):
        shown = _run(command, "--help")
        for flag in ("--security MODE", "--key FILE", "--seed-key HOST:PORT=KEY", "--cluster"):
            assert flag in shown, f"zcluster {command} --help lacks {flag}"


@pytest.mark.parametrize("mode", ["curve-mutual", "curve+jwt"])
def test_the_demo_runs_in_a_security_mode(mode: str) -> None:
    result = zcluster("demo", "--security", mode, "--subscribers", "1", "--messages", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith(f"  security mode {mode}: "), result.stdout
    assert "demo-subscriber-1: 10/10 messages, in order" in result.stdout


def test_sighup_reads_the_security_files_again(spawn: Spawn, tmp_path: Path) -> None:
    """A node given a key file whose key it cannot use (garbage) keeps its old keys and
    says so; once the file is good again, SIGHUP takes it."""
    keys = tmp_path / "keys"
    write_curve_key_pair(keys, "n1")
    authorized = keys / "authorized"
    authorized.mkdir()
    seed = f"127.0.0.1:{free_port_pair()}"
    node = spawn(
        "n1",
        *("--id", "n1", "--bind", seed, "--security", "curve-mutual"),
        *("--key", str(keys / "n1.key_secret"), "--authorized-keys", str(authorized)),
        "--set=auth_reload_interval_s=3600",  # only SIGHUP reads them here
    )
    assert node.wait_log("listening on", FORM_TIMEOUT_S), node.log()
    (authorized / "broken.key").write_text("not a certificate\n")
    node.proc.send_signal(signal.SIGHUP)
    assert node.wait_log("security files not reloaded", FORM_TIMEOUT_S), node.log()
    (authorized / "broken.key").unlink()
    node.proc.send_signal(signal.SIGHUP)
    assert node.wait_log("security files reloaded", FORM_TIMEOUT_S), node.log()
    assert node.proc.poll() is None
