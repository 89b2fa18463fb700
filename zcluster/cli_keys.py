"""``zcluster keygen``: a node's Curve key pair, a cluster CA key, or a node certificate.

The main CLI registers :data:`keygen`; bad files raise ConfigError (exit status 2 there).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from zcluster.security.keys import (
    CertificateAuthority,
    load_curve_key_pair,
    write_curve_key_pair,
)

_SECONDS_PER_DAY = 86400
#: the options of each mode, to refuse those another mode would silently ignore
_SIGN_ONLY = ("ca_key", "node_key", "node_id", "cluster", "days", "out")
_WRITE_ONLY = ("directory", "name")
_FLAGS = {"directory": "--dir", "ca_key": "--ca-key", "node_key": "--node-key", "node_id": "--node"}


def _file_option(flag: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(
        flag, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help=help_text
    )


@click.command(short_help="Write a Curve key pair, a cluster CA key, or a node certificate.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Directory to write the key files in (created if missing).",
)
@click.option(
    "--name",
    metavar="NAME",
    help="File name stem: NAME.key and NAME.key_secret, where NAME is the node id the key "
    "speaks for; with --ca, NAME.ca_public and NAME.ca_secret (default: ca).",
)
@click.option("--ca", is_flag=True, help="Write a cluster CA key pair instead (Ed25519).")
@click.option("--sign", is_flag=True, help="Issue a node certificate with a CA secret key.")
@_file_option("--ca-key", "With --sign: the CA's NAME.ca_secret file.")
@_file_option("--node-key", "With --sign: the node's public NAME.key file (never its secret one).")
@click.option("--node", "node_id", metavar="ID", help="With --sign: the node id to certify.")
@click.option(
    "--cluster",
    default="zcluster",
    show_default=True,
    metavar="NAME",
    help="With --sign: the cluster the certificate is valid in.",
)
@click.option(
    "--days",
    default=365,
    show_default=True,
    type=click.IntRange(1, 36500),
    help="With --sign: days until the certificate expires.",
)
@_file_option(
    "--out", "With --sign: the certificate file to write (replaced if it exists: a renewal)."
)
def keygen(
    directory: Path | None,
    name: str | None,
    ca: bool,
    sign: bool,
    ca_key: Path | None,
    node_key: Path | None,
    node_id: str | None,
    cluster: str,
    days: int,
    out: Path | None,
) -> None:
    """Write a node's Curve key pair (--dir DIR --name NAME), a cluster CA key pair
    (--ca --dir DIR), or a node certificate signed by the CA (--sign --ca-key FILE
    --node-key NAME.key --node ID --out FILE). Key files are never replaced; secret
    ones are readable by their owner only."""
    context = click.get_current_context()
    given = {
        option
        for option in (*_SIGN_ONLY, *_WRITE_ONLY)
        if context.get_parameter_source(option) is not ParameterSource.DEFAULT
    }
    if ca and sign:
        raise click.UsageError("--ca and --sign do not go together: give one of them")
    if sign:
        _refuse(given & set(_WRITE_ONLY), "not used with --sign (it writes --out FILE)")
        _sign(ca_key, node_key, node_id, cluster, days, out)
        return
    _refuse(given & set(_SIGN_ONLY), "used only with --sign")
    if directory is None:
        raise click.UsageError("--dir DIR is required: the directory to write the key files in")
    if ca:
        public, secret = CertificateAuthority.generate().save(directory, name or "ca")
        click.echo(f"CA public key file: {public} (give it to every node)")
        click.echo(f"CA secret key file: {secret} (keep it private: it signs certificates)")
        return
    if name is None:
        raise click.UsageError("--name NAME is required: the node id the key speaks for")
    public, secret = write_curve_key_pair(directory, name)
    click.echo(f"public key file: {public}")
    click.echo(f"secret key file: {secret} (keep it on its node only)")
    click.echo(f"public key: {load_curve_key_pair(public).public.decode()}")


def _refuse(options: set[str], why: str) -> None:
    if options:
        shown = ", ".join(sorted(_FLAGS.get(option, f"--{option}") for option in options))
        raise click.UsageError(f"{shown}: {why}")


def _sign(
    ca_key: Path | None,
    node_key: Path | None,
    node_id: str | None,
    cluster: str,
    days: int,
    out: Path | None,
) -> None:
    if ca_key is None or node_key is None or node_id is None or out is None:
        raise click.UsageError("--sign needs --ca-key FILE, --node-key FILE, --node ID, --out FILE")
    authority = CertificateAuthority.load(ca_key)
    pair = load_curve_key_pair(node_key)
    if pair.secret is not None:
        raise click.UsageError(
            f"{node_key} holds a secret key: give the node's public NAME.key file; "
            "a secret key should never leave its node"
        )
    not_after = int(time.time()) + days * _SECONDS_PER_DAY
    certificate = authority.sign(cluster, node_id, pair.public, not_after)
    certificate.write(out)
    until = datetime.datetime.fromtimestamp(not_after, datetime.UTC).isoformat()
    click.echo(f"node certificate file: {out}")
    click.echo(f"certifies node {node_id} in cluster {cluster} until {until}")
