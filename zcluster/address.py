"""``host:port`` addresses: parsing and validation (no I/O)."""

from __future__ import annotations

import ipaddress
import re

from zcluster.errors import ConfigError

MAX_ADDRESS_BYTES = 255
#: host names and IPv4 literals: letters, digits, '-', '_' and single dots between them
_HOST_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*\Z"
)
#: hosts that mean "every interface": fine to bind, never an address to reach
WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::"})


def parse_address(
    text: str, *, allow_port_zero: bool = False, allow_wildcard: bool = False
) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6]:port``) into its parts, strictly.

    The host must be a host name, an IPv4 address or a bracketed IPv6 address;
    ``*`` is accepted only with ``allow_wildcard`` (addresses to bind).
    """
    if not isinstance(text, str) or not text or len(text) > MAX_ADDRESS_BYTES:
        raise ConfigError(f"invalid address {text!r}: expected HOST:PORT")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not port_text.isascii():
        raise ConfigError(f"invalid address {text!r}: expected HOST:PORT")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ConfigError(f"invalid address {text!r}: unbalanced brackets")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"invalid address {text!r}: bad IPv6 address") from None
    elif ":" in host:
        raise ConfigError(f"invalid address {text!r}: IPv6 hosts need brackets, [::1]:PORT")
    elif not (_HOST_NAME.match(host) or (allow_wildcard and host == "*")):
        raise ConfigError(f"invalid address {text!r}: bad host")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(f"invalid address {text!r}: port must be {low}..65535")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_valid_address(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        parse_address(text)
    except ConfigError:
        return False
    return True
