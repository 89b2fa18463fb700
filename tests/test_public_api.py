"""The public surface is what the docs promise, and every name is typed."""

from __future__ import annotations

import inspect
from pathlib import Path

import zcluster

PROMISED = {
    "Node",
    "AsyncNode",
    "NodeConfig",
    "Member",
    "MemberStatus",
    "Serializer",
    "MsgpackSerializer",
    "JsonSerializer",
    "VersionedSerializer",
    "ZclusterError",
    "ConfigError",
    "WireError",
    "DeserializeError",
    "SerializationError",
    "RequestTimeout",
    "RemoteError",
    "UnknownMember",
    "NotRunning",
    "Backpressure",
    "JoinTimeout",
    "SecurityMode",
    "SecurityConfig",
    "AuthenticationHandler",
    "AuthError",
}


def test_public_names_are_exported() -> None:
    assert set(zcluster.__all__) >= PROMISED
    for name in zcluster.__all__:
        assert hasattr(zcluster, name), name


def test_package_is_typed() -> None:
    assert (Path(zcluster.__file__).parent / "py.typed").exists()


def test_node_and_async_node_offer_the_same_operations() -> None:
    operations = {
        "start",
        "stop",
        "register",
        "send",
        "request",
        "publish",
        "subscribe",
        "unsubscribe",
        "members",
        "member",
        "view_digest",
        "subscribers",
        "listeners",
        "stats",
        "wait_for",
        "on_member_change",
    }
    for cls in (zcluster.Node, zcluster.AsyncNode):
        missing = {op for op in operations if not callable(getattr(cls, op, None))}
        assert not missing, (cls.__name__, missing)
    for op in ("start", "stop", "send", "request", "publish", "subscribe", "unsubscribe"):
        assert inspect.iscoroutinefunction(getattr(zcluster.AsyncNode, op)), op
        assert not inspect.iscoroutinefunction(getattr(zcluster.Node, op)), op


def test_errors_form_one_tree() -> None:
    for name in PROMISED:
        obj = getattr(zcluster, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, zcluster.ZclusterError), name
