"""Serializers turn user values into payload bytes and back.

The node passes payloads through untouched: only the sender serializes and
only the receiver deserializes, so any :class:`Serializer` works as long as
both ends use a compatible one.
"""

from __future__ import annotations

import functools
import json
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import msgpack

from zcluster.errors import DeserializeError, SerializationError
from zcluster.uncollected import decode_large

Migration = Callable[[bytes], bytes]

_VERSION = struct.Struct(">I")
VERSION_PREFIX_BYTES = _VERSION.size
MAX_VERSION = 2**32 - 1


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back."""

    def serialize(self, value: Any) -> bytes: ...

    def deserialize(self, data: bytes) -> Any: ...


#: msgpack's own limits apply: no list, map, string or binary longer than the payload,
#: nesting at most 1024 deep (StackError past it)
_unpack_payload = functools.partial(msgpack.unpackb, raw=False, strict_map_key=False)


class MsgpackSerializer:
    """msgpack: compact and fast; the default. Tuples come back as lists."""

    def __init__(self) -> None:
        # A packer per thread: reusing one costs half of ``msgpack.packb``, which builds
        # a new one per call, and a packer may run Python code (a Mapping's items())
        # between its writes, so threads must not share one.
        self._local = threading.local()

    def serialize(self, value: Any) -> bytes:
        try:
            pack = self._local.pack
        except AttributeError:
            pack = self._local.pack = msgpack.Packer(use_bin_type=True).pack
        try:
            return pack(value)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot serialize with msgpack: {exc}") from exc

    def deserialize(self, data: bytes) -> Any:
        try:
            return decode_large(_unpack_payload, data)
        except Exception as exc:  # msgpack raises several unrelated types
            raise DeserializeError(f"invalid msgpack data: {exc}") from exc


class JsonSerializer:
    """UTF-8 JSON: readable, and understood by any language."""

    def serialize(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"cannot serialize as JSON: {exc}") from exc

    def deserialize(self, data: bytes) -> Any:
        try:
            return decode_large(json.loads, data)
        except (ValueError, RecursionError) as exc:
            raise DeserializeError(f"invalid JSON data: {exc}") from exc


class VersionedSerializer:
    """Prefixes data with a 4-byte big-endian schema version.

    Data written under an older version is passed through the migration
    registered for that version (old bytes -> current bytes) before the inner
    serializer reads it. Data shorter than the prefix, of an older version with
    no migration, or of a newer version than ours raises DeserializeError.
    """

    def __init__(
        self,
        inner: Serializer,
        current_version: int,
        migrations: Mapping[int, Migration] | None = None,
    ) -> None:
        if not 0 <= current_version <= MAX_VERSION:
            raise ValueError(f"current_version must fit in 32 bits, got {current_version}")
        migrations = dict(migrations or {})
        bad = [v for v in migrations if not 0 <= v < current_version]
        if bad:
            raise ValueError(
                f"migrations must be for versions below {current_version}, got {sorted(bad)}"
            )
        self.inner = inner
        self.current_version = current_version
        self.migrations: dict[int, Migration] = migrations
        self._prefix = _VERSION.pack(current_version)

    def serialize(self, value: Any) -> bytes:
        return self._prefix + self.inner.serialize(value)

    def deserialize(self, data: bytes) -> Any:
        if len(data) < VERSION_PREFIX_BYTES:
            raise DeserializeError(
                f"data too short for a version prefix: {len(data)} byte(s), "
                f"need {VERSION_PREFIX_BYTES}"
            )
        (version,) = _VERSION.unpack_from(data)
        body = bytes(memoryview(data)[VERSION_PREFIX_BYTES:])
        if version > self.current_version:
            raise DeserializeError(
                f"data version {version} is newer than this reader's version {self.current_version}"
            )
        if version < self.current_version:
            migrate = self.migrations.get(version)
            if migrate is None:
                raise DeserializeError(
                    f"unsupported version {version}: no migration registered "
                    f"(current version {self.current_version})"
                )
            try:
                body = migrate(body)
            except DeserializeError:
                raise
            except Exception as exc:
                raise DeserializeError(f"migration from version {version} failed: {exc}") from exc
        return self.inner.deserialize(body)
