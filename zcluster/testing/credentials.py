"""Throw-away credentials for a test or demo cluster in any security mode.

Made on demand in one directory, for whatever node ids come: a Curve key pair per
node, certified by a CA made for the cluster (``curve-mutual``: a node that comes
later needs nothing redistributed), and one HS256 secret that signs every node's
tokens (``jwt``, ``curve+jwt``). Never for a real deployment: everything, secret
keys included, sits in one directory.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zcluster.security.config import DEFAULT_CLUSTER, SecurityConfig, SecurityMode
from zcluster.security.keys import (
    CertificateAuthority,
    load_curve_key_pair,
    write_curve_key_pair,
)
from zcluster.settings import SECURITY_FLAGS

#: how long the certificates made here are valid
CERTIFICATE_S = 7 * 24 * 3600


class ThrowawayCredentials:
    """Credentials for the nodes of one cluster in ``mode``, kept in ``directory``."""

    def __init__(self, mode: SecurityMode | str, directory: Path) -> None:
        self.mode = SecurityMode.parse(mode)
        self.directory = directory
        self._ca: CertificateAuthority | None = None
        if self.mode is SecurityMode.NONE:
            return
        directory.mkdir(parents=True, exist_ok=True)
        if self.mode is SecurityMode.CURVE_MUTUAL:
            self._ca = CertificateAuthority.generate()
            self._ca.save(directory)
        if self.mode.uses_tokens:
            secret = directory / "hs256.secret"
            secret.touch(0o600)
            secret.write_text(secrets.token_hex(32) + "\n")  # 32 random bytes, as hex

    def fields(self, node_id: str, seeds: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``SecurityConfig``'s fields for node ``node_id`` joining through ``seeds``
        (address -> the node id there), making its keys if it has none yet."""
        mode = self.mode
        fields: dict[str, Any] = {"mode": mode.value}
        if mode.uses_curve:
            fields["key"] = str(self._key_pair(node_id))
            fields["seed_keys"] = {
                address: str(self._key_pair(seed_id).with_suffix(".key"))
                for address, seed_id in (seeds or {}).items()
            }
        if self._ca is not None:
            fields["ca"] = (str(self.directory / "ca.ca_public"),)
            fields["certificate"] = str(self._certificate(node_id))
        if mode.uses_tokens:
            fields["jwt_key"] = str(self.directory / "hs256.secret")
        return fields

    def config(self, node_id: str, seeds: Mapping[str, str] | None = None) -> SecurityConfig:
        return SecurityConfig(**self.fields(node_id, seeds))

    def flags(self, node_id: str, seeds: Mapping[str, str] | None = None) -> list[str]:
        """The same as ``zcluster`` command-line flags."""
        args = []
        for field, value in self.fields(node_id, seeds).items():
            if field == "seed_keys":
                args += [f"--seed-key={address}={key}" for address, key in value.items()]
            elif field == "ca":
                args += [f"--ca={path}" for path in value]
            else:
                args.append(f"{SECURITY_FLAGS[field]}={value}")
        return args

    def describe(self) -> str:
        made = {
            SecurityMode.NONE: "nothing",
            SecurityMode.CURVE: "a Curve key pair per node",
            SecurityMode.CURVE_MUTUAL: "a Curve key pair per node, certified by a CA",
            SecurityMode.JWT: "one HS256 secret that signs every node's tokens",
            SecurityMode.CURVE_JWT: "a Curve key pair per node and one HS256 secret",
        }[self.mode]
        return f"security mode {self.mode.value}: {made}, made for this run in {self.directory}"

    def _key_pair(self, node_id: str) -> Path:
        """The node's ``.key_secret`` file, written the first time it is asked for."""
        secret = self.directory / f"{node_id}.key_secret"
        if not secret.exists():
            write_curve_key_pair(self.directory, node_id)
        return secret

    def _certificate(self, node_id: str) -> Path:
        path = self.directory / f"{node_id}.cert"
        if not path.exists():
            assert self._ca is not None
            public = load_curve_key_pair(self._key_pair(node_id).with_suffix(".key")).public
            not_after = int(time.time()) + CERTIFICATE_S
            self._ca.sign(DEFAULT_CLUSTER, node_id, public, not_after).write(path)
        return path
