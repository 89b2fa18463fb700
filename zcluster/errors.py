"""The exception tree. Everything zcluster raises on purpose is a ZclusterError."""

from __future__ import annotations


class ZclusterError(Exception):
    """Base class of every error zcluster raises on purpose."""


class ConfigError(ZclusterError, ValueError):
    """A setting, address or argument is invalid."""


class UnsupportedGuarantee(ConfigError):
    """The delivery guarantee asked for is not one this node can honour."""


class WireError(ZclusterError):
    """A frame is malformed, truncated, oversized or of an unknown protocol version."""


class SerializationError(ZclusterError):
    """A value could not be serialized."""


class DeserializeError(ZclusterError):
    """Bytes could not be turned back into a value (bad data or unsupported version)."""


class NotRunning(ZclusterError):
    """The node is not started, or already stopped."""

    @classmethod
    def of(cls, node_id: str) -> NotRunning:
        """The error for a call to node ``node_id`` while it does not run, saying what to do."""
        return cls(
            f"node {node_id} is not running: call start() first, or use it in a 'with' "
            "('async with') block"
        )


class BindError(ZclusterError, OSError):
    """The node could not bind its ROUTER or its PUB socket (the port is taken, or the
    address is not this host's)."""


class UnknownMember(ZclusterError):
    """The target node id is not a live member of the cluster."""


class RequestTimeout(ZclusterError, TimeoutError):
    """No reply arrived before the request's timeout."""


class RemoteError(ZclusterError):
    """The remote handler raised, or no handler is registered under that name."""


class Backpressure(ZclusterError):
    """A bounded queue is full and the caller chose not to wait."""


class AuthError(ZclusterError):
    """A peer, key, certificate or token failed authentication or authorization.

    ``reason`` names the check that failed (``token_expired``, ``key_unknown``, ...):
    it is the name of the counter that counts such refusals (docs/security.md)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{detail} ({reason})")
        self.reason = reason
        self.detail = detail
