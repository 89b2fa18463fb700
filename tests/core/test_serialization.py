"""Tests of the payload serializers (zcluster/serialization.py)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster.errors import DeserializeError, SerializationError, ZclusterError
from zcluster.serialization import (
    MAX_VERSION,
    VERSION_PREFIX_BYTES,
    JsonSerializer,
    MsgpackSerializer,
    Serializer,
    VersionedSerializer,
)

PROPERTY = settings(max_examples=300, deadline=None, database=None)


def assert_same(a: Any, b: Any) -> None:
    """Equal *and* of the same types all the way down (so 1 != 1.0 != True)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def deeply_nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# ----------------------------------------------------------------- msgpack

MSGPACK_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**64 - 1,
    -(2**63),
    1.5,
    -0.0,
    float("inf"),
    "",
    "ünïcode €",
    b"",
    b"\x00\xff",
    [],
    [1, [2, [3, "x"]]],
    {"a": {"b": [1, None]}},
    {1: "int key", "s": b"bytes"},
]


@pytest.mark.parametrize("value", MSGPACK_VALUES, ids=repr)
def test_msgpack_round_trip(value: Any) -> None:
    s = MsgpackSerializer()
    data = s.serialize(value)
    assert isinstance(data, bytes)
    assert data == msgpack.packb(value, use_bin_type=True)
    assert_same(s.deserialize(data), value)


def test_msgpack_tuples_come_back_as_lists() -> None:
    s = MsgpackSerializer()
    assert_same(s.deserialize(s.serialize((1, (2, "a")))), [1, [2, "a"]])


def test_msgpack_keeps_str_and_bytes_apart() -> None:
    s = MsgpackSerializer()
    assert_same(s.deserialize(s.serialize(["a", b"a"])), ["a", b"a"])


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, 2**64, -(2**63) - 1, 1j, "\udc80", [1, object()], {"k": object()}],
    ids=[
        "object",
        "set",
        "2**64",
        "below-int64",
        "complex",
        "surrogate",
        "nested-object",
        "dict-object",
    ],
)
def test_msgpack_unserializable_values(value: Any) -> None:
    with pytest.raises(SerializationError, match="cannot serialize with msgpack") as info:
        MsgpackSerializer().serialize(value)
    assert info.value.__cause__ is not None


def test_msgpack_too_deep_value_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        MsgpackSerializer().serialize(deeply_nested(10_000))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used
        b"\x92\x01",  # truncated array
        b"\x01\x02",  # extra data
        b"\xa2\xff\xfe",  # invalid UTF-8 in a str
        b"\x81\x90\x01",  # map with an (unhashable) list key
        b"\x91" * 5000 + b"\x00",  # nested deeper than the unpacker allows
    ],
)
def test_msgpack_garbage_is_a_deserialize_error(data: bytes) -> None:
    with pytest.raises(DeserializeError, match="invalid msgpack data"):
        MsgpackSerializer().deserialize(data)


# -------------------------------------------------------------------- JSON

JSON_VALUES = [
    None,
    True,
    False,
    0,
    -5,
    2**70,
    1.5,
    "",
    "ünïcode €",
    [],
    [1, "a", None],
    {"a": [None, {"b": 2.25}]},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_json_round_trip(value: Any) -> None:
    s = JsonSerializer()
    assert_same(s.deserialize(s.serialize(value)), value)


def test_json_output_is_compact_utf8() -> None:
    s = JsonSerializer()
    assert s.serialize({"a": [1, 2], "b": None}) == b'{"a":[1,2],"b":null}'
    assert s.serialize("ü€") == '"ü€"'.encode()  # not \\u escapes
    assert s.deserialize('"ü€"'.encode()) == "ü€"


def test_json_tuples_come_back_as_lists_and_int_keys_as_strings() -> None:
    s = JsonSerializer()
    assert_same(s.deserialize(s.serialize((1, (2,)))), [1, [2]])
    assert_same(s.deserialize(s.serialize({1: "x"})), {"1": "x"})


def _circular() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    "value",
    [object(), b"bytes", {1, 2}, {(1, 2): "tuple key"}, _circular(), "\udc80", [1j]],
    ids=["object", "bytes", "set", "tuple-key", "circular", "surrogate", "complex"],
)
def test_json_unserializable_values(value: Any) -> None:
    with pytest.raises(SerializationError, match="cannot serialize as JSON") as info:
        JsonSerializer().serialize(value)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"nope", b"[1,]", b"{'a': 1}", b"\xff\xfe\x00", b"\x80", b"1 2", b'"\xff"'],
)
def test_json_garbage_is_a_deserialize_error(data: bytes) -> None:
    with pytest.raises(DeserializeError, match="invalid JSON data"):
        JsonSerializer().deserialize(data)


def test_json_deeply_nested_input_is_a_deserialize_error() -> None:
    with pytest.raises(DeserializeError):
        JsonSerializer().deserialize(b"[" * 100_000 + b"]" * 100_000)


def test_json_too_deep_value_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        JsonSerializer().serialize(deeply_nested(100_000))


# -------------------------------------------------------------- versioned


def rename_name_to_full_name(body: bytes) -> bytes:
    """v1 -> v2 migration: the field ``name`` became ``full_name``."""
    record = msgpack.unpackb(body)
    record["full_name"] = record.pop("name")
    return msgpack.packb(record)


def test_prefix_is_four_byte_big_endian_version() -> None:
    assert VERSION_PREFIX_BYTES == 4
    inner = MsgpackSerializer()
    v2 = VersionedSerializer(inner, 2)
    assert v2.serialize({"a": 1}) == b"\x00\x00\x00\x02" + inner.serialize({"a": 1})
    assert VersionedSerializer(inner, 0x01020304).serialize(None) == b"\x01\x02\x03\x04\xc0"
    assert VersionedSerializer(inner, 0).serialize(7) == b"\x00\x00\x00\x00\x07"
    assert VersionedSerializer(inner, MAX_VERSION).serialize(True) == b"\xff\xff\xff\xff\xc3"
    assert VersionedSerializer(JsonSerializer(), 258).serialize([1]) == b"\x00\x00\x01\x02[1]"


def test_current_version_passes_through_without_migrating() -> None:
    calls: list[bytes] = []

    def spy(body: bytes) -> bytes:
        calls.append(body)
        return body

    v2 = VersionedSerializer(MsgpackSerializer(), 2, {1: spy})
    assert v2.deserialize(v2.serialize({"full_name": "Ada"})) == {"full_name": "Ada"}
    assert calls == []


def test_older_version_goes_through_its_migration() -> None:
    inner = MsgpackSerializer()
    v1 = VersionedSerializer(inner, 1)
    v2 = VersionedSerializer(inner, 2, {1: rename_name_to_full_name})
    old = v1.serialize({"name": "Ada", "age": 36})
    assert old[:4] == b"\x00\x00\x00\x01"
    assert v2.deserialize(old) == {"full_name": "Ada", "age": 36}


def test_only_the_migration_for_the_data_version_runs() -> None:
    seen: list[int] = []

    def make(version: int) -> Any:
        def migrate(body: bytes) -> bytes:
            seen.append(version)
            return MsgpackSerializer().serialize(f"from v{version}")

        return migrate

    v5 = VersionedSerializer(MsgpackSerializer(), 5, {v: make(v) for v in (0, 2, 4)})
    for version in (0, 2, 4):
        data = version.to_bytes(4, "big") + MsgpackSerializer().serialize("old")
        assert v5.deserialize(data) == f"from v{version}"
    assert seen == [0, 2, 4]


def test_migration_receives_the_body_without_prefix() -> None:
    received: list[bytes] = []

    def migrate(body: bytes) -> bytes:
        received.append(body)
        return body

    v2 = VersionedSerializer(JsonSerializer(), 2, {1: migrate})
    assert v2.deserialize(b"\x00\x00\x00\x01[1,2]") == [1, 2]
    assert received == [b"[1,2]"]
    assert type(received[0]) is bytes


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00", b"\x00\x00\x02"])
def test_data_shorter_than_prefix(data: bytes) -> None:
    v2 = VersionedSerializer(MsgpackSerializer(), 2)
    with pytest.raises(DeserializeError, match=rf"too short .*{len(data)} byte\(s\), need 4"):
        v2.deserialize(data)


def test_prefix_only_is_handed_to_the_inner_serializer() -> None:
    # four bytes is a complete prefix; the empty body is then the inner serializer's problem
    v2 = VersionedSerializer(MsgpackSerializer(), 2)
    with pytest.raises(DeserializeError, match="invalid msgpack data"):
        v2.deserialize(b"\x00\x00\x00\x02")


@pytest.mark.parametrize("version", [0, 2])
def test_older_version_without_migration(version: int) -> None:
    v3 = VersionedSerializer(MsgpackSerializer(), 3, {1: rename_name_to_full_name})
    data = version.to_bytes(4, "big") + msgpack.packb({"name": "x"})
    with pytest.raises(
        DeserializeError, match=rf"unsupported version {version}: no migration .*current version 3"
    ):
        v3.deserialize(data)


@pytest.mark.parametrize("version", [3, 4, MAX_VERSION])
def test_newer_version_is_rejected(version: int) -> None:
    v2 = VersionedSerializer(MsgpackSerializer(), 2, {1: rename_name_to_full_name})
    data = version.to_bytes(4, "big") + msgpack.packb(1)
    with pytest.raises(
        DeserializeError, match=rf"data version {version} is newer than this reader's version 2"
    ):
        v2.deserialize(data)


@pytest.mark.parametrize(
    "error", [KeyError("name"), ValueError("bad"), RuntimeError("boom"), TypeError("t")]
)
def test_failing_migration_becomes_deserialize_error(error: Exception) -> None:
    def migrate(body: bytes) -> bytes:
        raise error

    v2 = VersionedSerializer(MsgpackSerializer(), 2, {1: migrate})
    with pytest.raises(DeserializeError, match="migration from version 1 failed") as info:
        v2.deserialize(b"\x00\x00\x00\x01\xc0")
    assert info.value.__cause__ is error


def test_migration_missing_field_becomes_deserialize_error() -> None:
    v2 = VersionedSerializer(MsgpackSerializer(), 2, {1: rename_name_to_full_name})
    data = VersionedSerializer(MsgpackSerializer(), 1).serialize({"no_name": 1})
    with pytest.raises(DeserializeError, match="migration from version 1 failed"):
        v2.deserialize(data)


def test_deserialize_error_from_migration_is_passed_through_unchanged() -> None:
    original = DeserializeError("the migration's own message")

    def migrate(body: bytes) -> bytes:
        raise original

    v2 = VersionedSerializer(MsgpackSerializer(), 2, {1: migrate})
    with pytest.raises(DeserializeError) as info:
        v2.deserialize(b"\x00\x00\x00\x01\xc0")
    assert info.value is original


def test_inner_errors_surface_after_prefix() -> None:
    v2 = VersionedSerializer(JsonSerializer(), 2)
    with pytest.raises(DeserializeError, match="invalid JSON data"):
        v2.deserialize(b"\x00\x00\x00\x02{")
    with pytest.raises(SerializationError):
        v2.serialize(object())


@pytest.mark.parametrize(
    "migrations",
    [{2: rename_name_to_full_name}, {3: rename_name_to_full_name}, {-1: rename_name_to_full_name}],
)
def test_constructor_rejects_migrations_not_below_current(migrations: dict[int, Any]) -> None:
    with pytest.raises(ValueError, match="migrations must be for versions below 2"):
        VersionedSerializer(MsgpackSerializer(), 2, migrations)


def test_constructor_lists_every_bad_migration_version() -> None:
    with pytest.raises(ValueError, match=r"got \[2, 5\]"):
        VersionedSerializer(MsgpackSerializer(), 2, {5: bytes, 1: bytes, 2: bytes})


@pytest.mark.parametrize("version", [-1, 2**32, 2**40])
def test_constructor_rejects_versions_outside_32_bits(version: int) -> None:
    with pytest.raises(ValueError, match="current_version must fit in 32 bits"):
        VersionedSerializer(MsgpackSerializer(), version)


def test_constructor_accepts_boundaries_and_copies_migrations() -> None:
    VersionedSerializer(MsgpackSerializer(), 0)
    VersionedSerializer(MsgpackSerializer(), MAX_VERSION, {MAX_VERSION - 1: bytes, 0: bytes})
    migrations = {1: rename_name_to_full_name}
    v2 = VersionedSerializer(MsgpackSerializer(), 2, migrations)
    migrations[0] = rename_name_to_full_name  # later changes to the caller's dict do not leak in
    with pytest.raises(DeserializeError, match="unsupported version 0"):
        v2.deserialize(b"\x00\x00\x00\x00\xc0")


def test_versioned_accepts_bytes_like_input() -> None:
    v2 = VersionedSerializer(MsgpackSerializer(), 2)
    data = v2.serialize([1, "a"])
    assert v2.deserialize(bytearray(data)) == [1, "a"]
    assert v2.deserialize(memoryview(data)) == [1, "a"]


# ------------------------------------------------------------ protocol & tree


@pytest.mark.parametrize(
    "serializer",
    [MsgpackSerializer(), JsonSerializer(), VersionedSerializer(MsgpackSerializer(), 1)],
    ids=["msgpack", "json", "versioned"],
)
def test_serializers_satisfy_the_protocol(serializer: Any) -> None:
    assert isinstance(serializer, Serializer)


def test_protocol_is_structural() -> None:
    class OnlySerialize:
        def serialize(self, value: Any) -> bytes:
            return b""

    assert not isinstance(object(), Serializer)
    assert not isinstance(OnlySerialize(), Serializer)


def test_errors_are_zcluster_errors() -> None:
    assert issubclass(SerializationError, ZclusterError)
    assert issubclass(DeserializeError, ZclusterError)


# ------------------------------------------------------------- properties

msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False),
        st.text(),
        st.binary(),
    ),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=30,
)

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=30,
)


@PROPERTY
@given(msgpack_values)
def test_property_msgpack_round_trip(value: Any) -> None:
    s = MsgpackSerializer()
    assert_same(s.deserialize(s.serialize(value)), value)


@PROPERTY
@given(msgpack_values, st.integers(min_value=0, max_value=MAX_VERSION))
def test_property_versioned_round_trip(value: Any, version: int) -> None:
    s = VersionedSerializer(MsgpackSerializer(), version)
    data = s.serialize(value)
    assert data[:4] == version.to_bytes(4, "big")
    assert_same(s.deserialize(data), value)


@PROPERTY
@given(json_values)
def test_property_json_round_trip(value: Any) -> None:
    s = JsonSerializer()
    assert_same(s.deserialize(s.serialize(value)), value)


@PROPERTY
@given(st.binary(max_size=64))
def test_property_garbage_raises_only_deserialize_error(data: bytes) -> None:
    for s in (
        MsgpackSerializer(),
        JsonSerializer(),
        VersionedSerializer(MsgpackSerializer(), 1, {0: bytes}),
    ):
        with contextlib.suppress(DeserializeError):
            s.deserialize(data)
