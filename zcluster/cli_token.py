"""``zcluster token issue`` and ``zcluster token verify``: the JWTs of the "jwt" security
mode (docs/security.md), made and checked from the shell.

A bad key file, or one that does not suit ``--alg``, is a ConfigError: the main CLI
prints it on one line and exits with status 2.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import jwt

from zcluster.errors import AuthError
from zcluster.security.tokens import (
    SUPPORTED_ALGORITHMS,
    TokenVerifier,
    generate_token,
    load_signing_key,
    load_verification_key,
)

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """Seconds, or a number with a unit suffix: s, m, h or d (``90``, ``15m``, ``1h``)."""
    match = _DURATION.fullmatch(value.strip().lower())
    seconds = 0.0 if match is None else float(match[1]) * _UNIT_S[match[2]]
    if seconds <= 0:
        raise click.BadParameter(
            f"{value!r} is not a positive duration: give seconds or a number with "
            "s, m, h or d (90, 15m, 1h, 7d)",
            ctx,
            param,
        )
    return seconds


def _key_option(what: str) -> Callable[[Any], Any]:
    return click.option(
        "--key",
        "key_path",
        required=True,
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"The HS256 secret file, or {what} for RS256/ES256.",
    )


signing_key_option = _key_option("the private key PEM")
verification_key_option = _key_option("a public (or private) key PEM")
alg_option = click.option(
    "--alg",
    "algorithm",
    required=True,
    type=click.Choice(SUPPORTED_ALGORITHMS, case_sensitive=False),
    help="Signature algorithm; it must suit the key file.",
)
audience_option = click.option(
    "--audience",
    default="zcluster",
    show_default=True,
    help="The audience (aud claim): the cluster the token is for.",
)
kid_option = click.option("--kid", default=None, help="Key id (the token header's kid).")


@click.group(short_help="Issue or check JWTs for the jwt security mode.")
def token() -> None:
    """Issue and check the JWTs nodes present to each other in the "jwt" security mode."""


@token.command(short_help="Print a signed token for node ID.")
@click.option("--node", "node_id", required=True, metavar="ID", help="The node the token is for.")
@signing_key_option
@alg_option
@kid_option
@click.option(
    "--ttl",
    default="1h",
    show_default=True,
    callback=_duration,
    help="How long the token is valid: seconds, or with a suffix s, m, h or d.",
)
@audience_option
@click.option(
    "--one-time",
    is_flag=True,
    help="Add a random jti: a verifier accepts the token only once (a replay is refused).",
)
def issue(
    node_id: str,
    key_path: Path,
    algorithm: str,
    kid: str | None,
    ttl: float,
    audience: str,
    one_time: bool,
) -> None:
    """Print, on one line, a token saying it is node ID, signed with the key in FILE.
    Without --one-time it is a bearer token: whoever sees it can use it until it expires."""
    key = load_signing_key(key_path, algorithm, kid)
    click.echo(generate_token(key, node_id, audience, ttl, time.time(), one_time=one_time))


@token.command(short_help="Check TOKEN; print its subject and expiry as JSON.")
@click.argument("token_text", metavar="TOKEN")
@verification_key_option
@alg_option
@kid_option
@audience_option
@click.option(
    "--leeway",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds of clock difference to tolerate.",
)
def verify(
    token_text: str,
    key_path: Path,
    algorithm: str,
    kid: str | None,
    audience: str,
    leeway: float,
) -> None:
    """Check TOKEN ('-': read it from stdin) as a node would, now, and print its subject,
    expiry and one-time id as JSON. Exit status 1, with the reason, if it is refused."""
    if token_text == "-":
        token_text = sys.stdin.read()
    token_text = token_text.strip()
    # the operator named the one key to try: let it answer to the token's kid
    key = load_verification_key(key_path, algorithm, kid or _kid_of(token_text))
    verifier = TokenVerifier([key], audience, leeway, authorized_nodes=None)
    try:
        verified = verifier.verify(token_text, time.time())
    except AuthError as exc:
        click.echo(f"zcluster: token refused: {exc.reason}: {exc.detail}", err=True)
        sys.exit(1)
    shown = {
        "subject": verified.subject,
        "expires_at": verified.expires_at,
        "token_id": verified.token_id,
    }
    click.echo(json.dumps(shown))


def _kid_of(token_text: str) -> str | None:
    try:
        kid = jwt.get_unverified_header(token_text).get("kid")
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        return None  # verify() says what is wrong with it
    return kid if isinstance(kid, str) and kid else None
