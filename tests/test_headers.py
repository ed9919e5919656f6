"""Unit tests of header inspection, formatting and insertion, and of reply parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opentelemetry_instrumentation_smtp import headers
from opentelemetry_instrumentation_smtp.attributes import Reply, redact_addresses

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_summary_finds_first_traceparent_any_case() -> None:
    payload = f"Subject: x\r\nTRACEPARENT:{TP}\r\ntraceparent: other\r\n\r\nbody".encode()
    summary = headers.summarize(payload)
    assert summary.traceparent == TP
    assert summary.can_insert
    assert summary.line_ending == b"\r\n"


def test_summary_ignores_body_traceparent() -> None:
    summary = headers.summarize(f"Subject: x\n\ntraceparent: {TP}\n")
    assert summary.traceparent is None
    assert summary.line_ending == b"\n"


def test_summary_unfolds_message_id() -> None:
    summary = headers.summarize(b"Message-ID:\r\n <abc@example.com>\r\n\r\n")
    assert summary.message_id == "<abc@example.com>"


@pytest.mark.parametrize(
    "value",
    [
        TP,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        f"  {TP}  ",
    ],
)
def test_valid_traceparents(value: str) -> None:
    assert headers.is_valid_traceparent(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
    ],
)
def test_invalid_traceparents(value: str) -> None:
    assert not headers.is_valid_traceparent(value)


def test_format_orders_and_rejects() -> None:
    lines, rejected = headers.format_fields(
        {"x-other": "1", "tracestate": "", "traceparent": TP, "bad name": "v", "x-crlf": "a\r\nb"}
    )
    assert lines == [f"traceparent: {TP}", "x-other: 1"]
    assert sorted(rejected) == ["bad name", "x-crlf"]


def test_insert_keeps_type() -> None:
    assert headers.insert_lines("A: b\n", ["t: 1"], b"\n") == "t: 1\nA: b\n"
    assert headers.insert_lines(b"A: b\r\n", ["t: 1"], b"\r\n") == b"t: 1\r\nA: b\r\n"


@given(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,10}=[!-+\--~]{1,30}", fullmatch=True), max_size=32))
def test_tracestate_folding_round_trips(members: list[str]) -> None:
    value = ",".join(members)
    if not value:
        return
    lines, rejected = headers.format_fields({"tracestate": value})
    assert rejected == []
    assert all("\r" not in line and "\n" not in line for line in lines)
    rejoined = "".join(line if i == 0 else line[1:] for i, line in enumerate(lines))
    assert rejoined == f"tracestate: {value}"
    for line in lines:
        # A single member longer than the width cannot be split and stays on its line.
        assert len(line) <= headers.FOLD_WIDTH or "," not in line[:-1]


@pytest.mark.parametrize(
    ("text", "enhanced", "queue_id"),
    [
        ("2.0.0 Ok: queued as 4Xb1Kq0cZ5z9v", "2.0.0", "4Xb1Kq0cZ5z9v"),
        ("2.0.0 4B3Jx1aB012345 Message accepted for delivery", "2.0.0", "4B3Jx1aB012345"),
        ("OK id=1t2AbC-000Xyz-9Q", None, "1t2AbC-000Xyz-9Q"),
        ("OK", None, None),
        ("2.6.0 <abc@example.com> [InternalId=1] Queued mail for delivery", "2.6.0", None),
    ],
)
def test_reply_parsing(text: str, enhanced: str | None, queue_id: str | None) -> None:
    reply = Reply(250, text)
    assert reply.enhanced_status_code == enhanced
    assert reply.queue_id == queue_id


def test_redaction() -> None:
    text = "5.1.1 <bob@example.com>: Recipient address rejected; try alice@example.org"
    assert redact_addresses(text) == (
        "5.1.1 <redacted>: Recipient address rejected; try <redacted>"
    )


@pytest.mark.parametrize(
    "text",
    [
        '5.1.1 <"john doe"@example.com>: rejected',
        "5.1.1 <user@[192.0.2.1]>: rejected",
        "5.1.1 user@[IPv6:2001:db8::1] rejected",
    ],
)
def test_redaction_of_quoted_and_literal(text: str) -> None:
    redacted = redact_addresses(text)
    assert "@" not in redacted
    assert "<redacted>" in redacted


def test_redaction_keeps_surrounding_punctuation() -> None:
    text = str({"b@example.com": (550, b"5.1.1 <b@example.com> no such user")})
    assert redact_addresses(text) == "{'<redacted>': (550, b'5.1.1 <redacted> no such user')}"
    assert redact_addresses("['x@example.com', 'y@example.com']") == "['<redacted>', '<redacted>']"


def test_summary_of_str_matches_bytes() -> None:
    for payload in [
        "Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody traceparent: no\r\n" + "y" * 5000,
        "Subject: x\n\ncaf\u00e9 body\n",
        "Subject: caf\u00e9\r\ntraceparent: " + TP + "\r\n\r\nb",
        "Subject: no blank line",
        "\r\nbody only",
    ]:
        assert headers.summarize(payload) == headers.summarize(
            payload.encode("ascii", errors="replace")
        )
