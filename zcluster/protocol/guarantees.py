"""Delivery guarantees and acknowledgement statuses: the vocabulary of delivery."""

from __future__ import annotations

import enum


class DeliveryGuarantee(enum.Enum):
    """What a sender asks of the delivery of one message."""

    AT_MOST_ONCE = "at_most_once"
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"
    ORDERED = "ordered"
    CAUSAL = "causal"
    TRANSACTIONAL = "transactional"

    # Members are singletons compared by identity: hash them so too, in C, instead of
    # Enum's Python-level hash of the name (guarantees key dicts on every message).
    __hash__ = object.__hash__

    @property
    def is_reliable(self) -> bool:
        """Acknowledged (direct) or repaired (pub/sub), rather than best effort."""
        return self in _RELIABLE


_RELIABLE = frozenset(
    {
        DeliveryGuarantee.AT_LEAST_ONCE,
        DeliveryGuarantee.EXACTLY_ONCE,
        DeliveryGuarantee.ORDERED,
        DeliveryGuarantee.CAUSAL,
    }
)


class AckStatus(enum.Enum):
    """Where a guaranteed message stands; it ends in exactly one final status."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self is not AckStatus.PENDING
