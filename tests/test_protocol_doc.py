"""docs/protocol.md against the code: its worked examples are the bytes the code produces,
and its tables (message kinds, revisions, defaults, security vocabulary) say what the code does."""

from __future__ import annotations

import base64
import dataclasses
import re
from pathlib import Path

import nacl.signing
import pytest

from zcluster.config import NodeConfig
from zcluster.core import stamps
from zcluster.core.membership import MembershipTable
from zcluster.protocol.capabilities import SUPPORTED
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus
from zcluster.protocol.messages import (
    MAX_PARTICIPANTS_COUNT,
    MAX_REASON_CHARS,
    Auth,
    Heartbeat,
    Prepare,
    Publish,
    Txn,
    TxnState,
)
from zcluster.security import policy
from zcluster.security.config import DEFAULT_CLUSTER, SecurityMode
from zcluster.security.keys import CERTIFICATE_CONTEXT, CertificateAuthority, check_curve_key
from zcluster.security.tokens import SUPPORTED_ALGORITHMS
from zcluster.serialization import MsgpackSerializer
from zcluster.wire import (
    CONTROL_TOPIC,
    DIRECT_KINDS,
    GUARANTEE_CODES,
    Encoder,
    Kind,
    encode_body,
    encode_capabilities,
    encode_header,
    encode_member,
    topic_frame,
)

SPEC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()


def spaced(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def numbered(encoder: Encoder, seq: int) -> Encoder:
    """``encoder`` with its next header numbered ``seq``."""
    for _ in range(seq - 1):
        encoder.header(Publish(0, DeliveryGuarantee.AT_MOST_ONCE))
    return encoder


def test_publish_example_matches_the_encoder() -> None:
    assert f"`{spaced(topic_frame('news'))}`" in SPEC
    header = encode_header(Kind.PUBLISH, "a", 1, 7, (0, 0))
    assert f"`{spaced(header)}`" in SPEC
    # the same bytes from the typed message
    publication = Publish(0, DeliveryGuarantee.AT_MOST_ONCE)
    assert encode_header(Kind.PUBLISH, "a", 1, 7, encode_body(publication)) == header
    payload = MsgpackSerializer().serialize("hello")  # the default serializer
    frames = numbered(Encoder("a", 1), 7).published("news", publication, payload)
    assert frames == (topic_frame("news"), header, payload)
    assert f"`{spaced(payload)}`" in SPEC


def test_heartbeat_example_matches_the_encoder() -> None:
    me = Member("a", 1, 1, MemberStatus.UP, "127.0.0.1:5000", "127.0.0.1:5001")
    digest = MembershipTable(me, 4, 100).digest()
    header = encode_header(Kind.HEARTBEAT, "a", 1, 2, (encode_member(me), [], digest, []))
    blocks = re.findall(r"```\n((?:[0-9a-f]{2}[ \n])+)```", SPEC)
    assert any(" ".join(block.split()) == spaced(header) for block in blocks), blocks
    assert f"`{digest}`" in SPEC
    # the same bytes from the typed message, with or without capabilities
    for caps in ((), SUPPORTED):
        heartbeat = Heartbeat(me, (), digest, (), caps)
        assert encode_header(Kind.HEARTBEAT, "a", 1, 2, encode_body(heartbeat)) == header
        frames = numbered(Encoder("a", 1), 2).published(None, heartbeat, b"")
        assert frames == (CONTROL_TOPIC, header, encode_capabilities(caps))
    assert f"[{spaced(CONTROL_TOPIC)}, header, (empty)]" in SPEC


def test_capabilities_example_matches_the_encoder() -> None:
    assert SUPPORTED == (
        "batch", "causal", "drain", "fields", "oneframe", "prefix", "refuse", "swim", "txn"
    )  # fmt: skip
    # revisions 1.1, 1.2, 1.3, 1.4 (and 1.5, which announces the same) and 1.6
    revision_1_3 = ("batch", "fields", "oneframe", "swim")
    revision_1_4 = ("batch", "drain", "fields", "oneframe", "prefix", "refuse", "swim")
    caps_by_revision = (("fields",), ("fields", "oneframe", "swim"), revision_1_3, revision_1_4)
    for caps in (*caps_by_revision, SUPPORTED):
        announcement = spaced(encode_capabilities(caps))
        assert f"`{announcement}`" in SPEC
        assert f"[{spaced(CONTROL_TOPIC)}, header, {announcement}]" in SPEC


#: the current revision: the title, the revision table and what it added
REVISION = "1.6"


def section(title: str) -> str:
    """The text of the section whose heading starts with ``title`` (up to the next heading
    of the same or a higher level)."""
    match = re.search(rf"^(#+) {re.escape(title)}.*?$", SPEC, re.M)
    assert match is not None, f"no section {title!r}"
    level = len(match[1])
    rest = SPEC[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest if end is None else rest[: end.start()]


def kind_rows() -> dict[str, tuple[int, str, str, str]]:
    """Section 4's table: name -> (value, carried, body, payload)."""
    rows = re.findall(
        r"^\| (\d+) \| ([A-Z_]+) \| ([^|]+) \| (.+?) \| ([^|]+) \| .+ \|$",
        section("4. Message kinds"),
        re.M,
    )
    return {
        name: (int(value), carried, body, payload) for value, name, carried, body, payload in rows
    }


def test_every_message_kind_is_specified() -> None:
    for kind in Kind:
        assert f"| {int(kind)} | {kind.name} |" in SPEC, kind
    rows = kind_rows()
    assert {name: row[0] for name, row in rows.items()} == {k.name: int(k) for k in Kind}
    for kind in Kind:  # direct exactly for the kinds read from a ROUTER
        assert (rows[kind.name][1] == "direct") == (kind in DIRECT_KINDS), kind
    # the first value nobody defined yet is an unknown kind
    assert f"values not listed (0, 2, 8, 9, {max(Kind) + 1} and above)" in section("4. Message")


def test_auth_is_specified_as_the_code_reads_it() -> None:
    assert Kind.AUTH == 27
    value, carried, body, payload = kind_rows()["AUTH"]
    assert (value, carried, body, payload) == (27, "direct", "`[str scheme]`", "credential")
    assert "| AUTH | the sender's credential" in section("2. Frames")
    # the scheme is text of the reason limit, as the wire reads it
    assert f"`str` of at most {MAX_REASON_CHARS} characters" in section("7.2 Field types")
    assert f"`scheme` is text of at most {MAX_REASON_CHARS} characters" in SPEC
    for scheme in (policy.JWT_SCHEME, policy.CERTIFICATE_SCHEME):
        assert f"| `{scheme}` |" in section("6.11.3 AUTH"), scheme
    assert "Revision 1.5 defines AUTH (27) under no capability" in section("9.5")


def test_the_revision_is_the_current_one() -> None:
    assert SPEC.startswith(f"# zcluster wire protocol, version 1 (revision {REVISION})\n")
    assert f"protocol version 1, revision {REVISION}," in SPEC
    rows = re.findall(r"^\| (1\.\d)( \(this document\))? \|", section("9.1"), re.M)
    assert [number for number, _ in rows] == ["1.0", "1.1", "1.2", "1.3", "1.4", "1.5", REVISION]
    assert [number for number, current in rows if current] == [REVISION]
    assert "| 1.5 | as 1.4, and kind 27, AUTH" in SPEC
    assert f"| {REVISION} (this document) | as 1.5, and guarantee code 4 (CAUSAL)" in SPEC


def test_documented_defaults_match_the_config() -> None:
    defaults = {field.name: field.default for field in dataclasses.fields(NodeConfig)}
    rows = re.findall(r"^\| `(\w+)` \| ([\d.,]+) \|", section("6.10 Defaults"), re.M)
    assert len(rows) > 50
    for name, value in rows:
        assert name in defaults, f"section 6.10 names no setting {name}"
        assert float(value.replace(",", "")) == defaults[name], name
    documented = {name for name, _ in rows}
    for name in defaults:  # what AUTH, handshakes and CAUSAL depend on is documented
        if name.startswith("auth_") and name != "auth_reload_interval_s":
            assert name in documented, name
        if name.startswith("causal_") or name.startswith("transaction"):
            assert name in documented, name


def test_security_vocabulary_matches_the_code() -> None:
    security = section("6.11 Security: handshakes and identity")
    for mode in SecurityMode:
        assert f"\n| `{mode.value}` |" in security, mode
    for domain in (policy.DIRECT_DOMAIN, policy.PUBSUB_DOMAIN):
        assert f"ZAP domain `{domain}`" in security, domain
    for tag in (policy.KEY_TAG, policy.CERTIFICATE_TAG):
        assert f"| `{tag}` |" in security, tag
    algorithms = ", ".join(f"`{a}`" for a in SUPPORTED_ALGORITHMS[:-1])
    assert f"{algorithms} or `{SUPPORTED_ALGORITHMS[-1]}`" in security
    assert f"(default `{DEFAULT_CLUSTER}`" in security
    context = CERTIFICATE_CONTEXT.rstrip(b"\0").decode()
    assert context.encode() + b"\0" == CERTIFICATE_CONTEXT
    assert f'"{context}" 0x00 | msgpack [str cluster, str node_id, bin curve_public,' in security


#: the certificate of the worked example in section 6.11.6
EXAMPLE_KEY = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
EXAMPLE_NOT_AFTER = 1893456000


def test_certificate_example_matches_the_code() -> None:
    ca = CertificateAuthority(nacl.signing.SigningKey(bytes(range(32))))
    key = check_curve_key(EXAMPLE_KEY)
    certificate = ca.sign(DEFAULT_CLUSTER, "a", key, EXAMPLE_NOT_AFTER)
    security = section("6.11.6")
    assert f"key `{EXAMPLE_KEY}`, `not_after`\n{EXAMPLE_NOT_AFTER}" in security
    signed = certificate.signed_bytes()
    blocks = re.findall(r"```\n((?:[0-9a-f]{2}[ \n])+)```", security)
    assert [" ".join(block.split()) for block in blocks] == [spaced(signed)]
    assert f"signed as these {len(signed)} bytes" in security
    assert f"`{base64.b64encode(ca.public_key).decode()}`" in security
    text = certificate.signature_text()
    assert f"signature text\n`{text}`" in security
    assert len(text) == len(str(EXAMPLE_NOT_AFTER)) + 1 + 86


@pytest.mark.parametrize("scheme", [policy.JWT_SCHEME, policy.CERTIFICATE_SCHEME])
def test_auth_example_matches_the_encoder(scheme: str) -> None:
    header, _ = Encoder("a", 1).direct(Auth(scheme), b"credential")
    assert header == encode_header(Kind.AUTH, "a", 1, 1, [scheme])
    example = section("11. Worked examples").split("AUTH from sender")[1]
    if scheme == policy.JWT_SCHEME:  # annotated, a byte group per line
        annotated = re.findall(r"^((?:[0-9a-f]{2} )*[0-9a-f]{2})  ", example, re.M)
        assert " ".join(annotated) == spaced(header)
    else:
        assert f"`{spaced(header)}`" in example


def test_causal_is_specified_as_the_code_reads_it() -> None:
    causal = section("6.12 CAUSAL delivery")
    code = GUARANTEE_CODES[DeliveryGuarantee.CAUSAL]
    assert code == max(GUARANTEE_CODES.values()) == 4
    assert f"Guarantee code {code}, CAUSAL," in causal
    assert f"| guarantee codes | 0..{code} (DATA: 1..{code}) |" in section("7.4")
    assert "| `causal` | 1.6 |" in section("9.3")
    limit = NodeConfig().causal_dependencies_max_count
    assert f"`causal_dependencies_max_count`\n({limit})" in causal


#: the stamp of the worked example in section 6.12
EXAMPLE_DEPENDENCIES = (("a", 0, "b", 7, 1, 3), ("c", 1, "news", 9, 0, 12))


def test_causal_stamp_example_matches_the_code() -> None:
    body = MsgpackSerializer().serialize("hello")
    payload = stamps.stamp(EXAMPLE_DEPENDENCIES, body)
    assert stamps.read_stamp(payload, NodeConfig().causal_dependencies_max_count) == (
        EXAMPLE_DEPENDENCIES,
        body,
    )
    causal = section("6.12 CAUSAL delivery")
    assert f"`{spaced(payload)}`" in causal
    # annotated, a dependency per line
    annotated = re.findall(r"^((?:[0-9a-f]{2} )*[0-9a-f]{2})  ", causal, re.M)
    assert " ".join(annotated) == spaced(payload)
    assert f"(`{spaced(stamps.stamp((), b''))}` if it is empty)" in causal


def test_transactions_are_specified_as_the_code_reads_them() -> None:
    transactions = section("6.13 Transactions")
    assert (Kind.PREPARE, Kind.TXN) == (28, 29)
    rows = kind_rows()
    assert rows["PREPARE"] == (
        28,
        "direct",
        "`[uint number, name handler, participants participants, uint timeout_ms]`",
        "message",
    )
    assert rows["TXN"] == (
        29,
        "direct",
        "`[name coordinator, uint incarnation, uint number, txn_state state, str reason]`",
        "empty",
    )
    for state in TxnState:
        assert f"\n| {int(state)} | {state.name} |" in transactions, state
    assert f"| txn_state (TXN) | integer 0..{max(TxnState)} (section 6.13) |" in SPEC
    participants = f"| participants (PREPARE) | array of 1 to {MAX_PARTICIPANTS_COUNT} elements,"
    assert participants in section("7.2 Field types")
    assert f"It has 1 to {MAX_PARTICIPANTS_COUNT} participants" in transactions
    assert f"`reason` (at most {MAX_REASON_CHARS} characters)" in transactions
    assert "| `txn` | 1.6 |" in section("9.3")
    assert "Revision 1.6 defines PREPARE (28) and TXN (29),\nunder `txn`." in section("9.5")


def test_transaction_example_matches_the_encoder() -> None:
    prepare = Prepare(5, "book", ("b", "c"), 10_000)
    header = encode_header(Kind.PREPARE, "a", 1, 3, encode_body(prepare))
    vote = Txn("a", 1, 5, TxnState.PREPARED, "")
    answer = encode_header(Kind.TXN, "b", 2, 4, encode_body(vote))
    example = section("6.13 Transactions").split("Example:")[1]
    assert f"(header `seq` 3):\n`{spaced(header)}`" in example
    assert f"(header `seq` 4): `{spaced(answer)}`" in example
    # the same bytes from each node's encoder
    assert numbered(Encoder("a", 1), 3).direct(prepare, b"message")[0] == header
    assert numbered(Encoder("b", 2), 4).direct(vote, b"")[0] == answer
