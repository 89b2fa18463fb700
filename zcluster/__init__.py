"""zcluster: broker-less cluster messaging for Python on ZeroMQ."""

from zcluster.config import NodeConfig
from zcluster.delivery import (
    AckStatus,
    DeliveryGuarantee,
    DrainReport,
    MessageAcknowledgement,
    MessageDeduplicator,
    MessageId,
    PublicationLoss,
    TransactionResult,
)
from zcluster.errors import (
    AuthError,
    Backpressure,
    BindError,
    ConfigError,
    DeserializeError,
    NotRunning,
    RemoteError,
    RequestTimeout,
    SerializationError,
    UnknownMember,
    WireError,
    ZclusterError,
)
from zcluster.protocol.members import Member, MemberStatus
from zcluster.runtime.asyncnode import AsyncNode, JoinRefused, JoinTimeout
from zcluster.runtime.node import Node
from zcluster.security.config import SecurityConfig, SecurityMode
from zcluster.security.policy import AuthenticationHandler
from zcluster.serialization import (
    JsonSerializer,
    MsgpackSerializer,
    Serializer,
    VersionedSerializer,
)
from zcluster.wire import PROTOCOL_VERSION

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "AckStatus",
    "AsyncNode",
    "AuthError",
    "AuthenticationHandler",
    "Backpressure",
    "BindError",
    "ConfigError",
    "DeliveryGuarantee",
    "DeserializeError",
    "DrainReport",
    "JoinRefused",
    "JoinTimeout",
    "JsonSerializer",
    "Member",
    "MemberStatus",
    "MessageAcknowledgement",
    "MessageDeduplicator",
    "MessageId",
    "MsgpackSerializer",
    "Node",
    "NodeConfig",
    "NotRunning",
    "PublicationLoss",
    "RemoteError",
    "RequestTimeout",
    "SecurityConfig",
    "SecurityMode",
    "SerializationError",
    "Serializer",
    "TransactionResult",
    "UnknownMember",
    "VersionedSerializer",
    "WireError",
    "ZclusterError",
    "__version__",
]
