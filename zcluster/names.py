"""Names on the wire: node ids, handler names and topics, and the rules they follow.

Shared by the wire codec and the core (which reads the node ids and topics a CAUSAL
message's payload names, core/stamps.py): one place says what a valid name is.
"""

from __future__ import annotations

from typing import Any

from zcluster.errors import WireError

MAX_NAME_BYTES = 255
MAX_TOPIC_BYTES = 1024

#: names and topics repeat on every message: remember recently validated ones (at most
#: this many of each kind)
VALID_CACHE_COUNT = 4096
valid_names: set[str] = set()
_valid_topics: set[str] = set()

#: characters other systems read as wildcards (NATS ``*`` and ``>``): topics here match
#: exactly, so a topic with one would be taken literally and never match what was meant
WILDCARD_CHARACTERS = "*>"


def check_topic(topic: object) -> str:
    """Raise WireError unless ``topic`` is a valid topic name."""
    if not isinstance(topic, str) or not topic:
        raise WireError(f"topic must be a non-empty string, got {show(topic)}")
    if topic in _valid_topics:
        return topic
    _check_topic_text(topic)
    if len(_valid_topics) >= VALID_CACHE_COUNT:
        _valid_topics.clear()
    _valid_topics.add(topic)
    return topic


def check_user_topic(topic: object) -> str:
    """``check_topic``, and no wildcard character: for the topics this node publishes or
    subscribes to (a peer's topics are read as they come)."""
    checked = check_topic(topic)
    for char in WILDCARD_CHARACTERS:
        if char in checked:
            raise WireError(
                f"topic {checked!r} contains {char!r}: topics match exactly, "
                "wildcards are not supported; for every topic that starts with a prefix, "
                "use subscribe_prefix (zcluster sub --prefix)"
            )
    return checked


def _check_topic_text(topic: str) -> None:
    try:
        raw = topic.encode()
    except UnicodeEncodeError:
        raise WireError("topic must be valid Unicode text") from None
    if len(raw) > MAX_TOPIC_BYTES or "\x00" in topic:
        raise WireError(f"topic must be at most {MAX_TOPIC_BYTES} bytes with no NUL")


def check_name(name: object, what: str = "name") -> str:
    """Raise WireError unless ``name`` is a valid node id or handler name."""
    if type(name) is str and name in valid_names:
        return name
    if not isinstance(name, str) or not name or not name.isprintable() or " " in name:
        raise WireError(f"{what} must be a non-empty printable string without spaces")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise WireError(f"{what} must be at most {MAX_NAME_BYTES} bytes")
    if len(valid_names) >= VALID_CACHE_COUNT:
        valid_names.clear()
    valid_names.add(name)
    return name


def show(value: Any) -> str:
    """Describe a rejected value without repr() of untrusted nested data."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)[:40]
    if isinstance(value, str):
        return repr(value[:40])
    return f"a {type(value).__name__}"
