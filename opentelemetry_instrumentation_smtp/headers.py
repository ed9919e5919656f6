"""Insertion of trace context header lines at the top of a message's header section.

The functions here work on the payload as the SMTP client will transmit it (``str`` or
``bytes``), never on the caller's ``email.message.Message``. So the caller's object stays
untouched, and the bytes on the wire are the original bytes plus the inserted lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# RFC 5322 section 2.1.1 recommends lines of at most 78 characters and forbids more
# than 998; servers reject longer lines ("500 Line too long").
FOLD_WIDTH = 78
MAX_LINE_LENGTH = 998

# Fields that describe the message itself. A propagator must never write them, because
# they would change who the message is from, to whom it goes, or how it is parsed.
_RESERVED_FIELDS = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "received",
        "return-path",
        "mime-version",
        "dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "authentication-results",
        "comments",
        "keywords",
    }
)
_RESERVED_PREFIXES = ("content-", "resent-", "list-")

# A field name is printable US-ASCII other than ":" (RFC 5322 section 3.6.8).
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_FIELD_LINE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# Header values may carry only printable ASCII and horizontal white space: nothing that
# would need RFC 2047 encoding, and no CR or LF that could end the line early.
_SAFE_VALUE = re.compile(r"[\x20-\x7e\t]*")
# The only fields that insertion needs, each with its continuation lines. Matching them
# directly is several times faster than splitting every field of the header section.
_WANTED_FIELDS = re.compile(
    rb"^(traceparent|tracestate|message-id)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)",
    re.IGNORECASE | re.MULTILINE,
)
_TRACEPARENT_VALUE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

Payload = TypeVar("Payload", str, bytes)


@dataclass(frozen=True)
class HeaderSummary:
    """The facts about a payload's header section that insertion depends on."""

    can_insert: bool
    line_ending: bytes
    traceparent: str | None
    message_id: str | None
    has_tracestate: bool = False


def _as_bytes(payload: str | bytes) -> bytes:
    if isinstance(payload, bytes):
        return payload
    # Only the header section is inspected, so only it is encoded, not a large body.
    # It must be ASCII to be valid mail, and any other character is replaced so that
    # inspection never raises. Replacement keeps one byte per character, so the
    # positions in the bytes match those in the str.
    ends = [pos for pos in (payload.find("\r\n\r\n"), payload.find("\n\n")) if pos >= 0]
    cut = min(ends) + 4 if ends else len(payload)
    return payload[:cut].encode("ascii", errors="replace")


def _header_section(data: bytes) -> bytes:
    """Return the header section without the blank line that ends it."""
    if data.startswith((b"\r\n", b"\n")):
        return b""
    # An LF-only blank line is searched only in front of the first CRLF one, so a large
    # CRLF message is read no further than its header section. There is no size limit:
    # a traceparent deep in a large header section must still be found.
    end = data.find(b"\r\n\r\n")
    lf_end = data.find(b"\n\n", 0, end if end >= 0 else len(data))
    if lf_end >= 0:
        end = lf_end
    return data[:end] if end >= 0 else data


def _unfold(raw_value: bytes) -> str:
    value = b" ".join(part.strip() for part in raw_value.splitlines())
    return value.decode("ascii", errors="replace").strip()


def summarize(payload: str | bytes) -> HeaderSummary:
    """Inspect a payload's header section for insertion."""
    data = _as_bytes(payload)
    first_line_end = data.find(b"\n")
    first_line = data if first_line_end < 0 else data[:first_line_end]
    if first_line_end > 0 and data[first_line_end - 1 : first_line_end] == b"\r":
        line_ending = b"\r\n"
    else:
        line_ending = b"\n"

    # Insert only in front of a header field, or in front of the blank line that ends an
    # empty header section. A parser would read anything else differently once a field is
    # put in front of it: an mbox "From " line, a continuation line, a body with no header
    # section, or a payload using bare CR line breaks. Such a payload is sent as it is.
    blank_first_line = data.startswith((b"\r\n", b"\n"))
    if not data or b"\r" in first_line.rstrip(b"\r"):
        can_insert = False
    else:
        can_insert = blank_first_line or _FIELD_LINE.match(first_line) is not None

    traceparent: str | None = None
    message_id: str | None = None
    has_tracestate = False
    for match in _WANTED_FIELDS.finditer(_header_section(data)):
        name = match.group(1).lower()
        if name == b"traceparent":
            if traceparent is None:
                traceparent = _unfold(match.group(2))
        elif name == b"tracestate":
            has_tracestate = True
        elif message_id is None:
            message_id = _unfold(match.group(2))
    return HeaderSummary(can_insert, line_ending, traceparent, message_id, has_tracestate)


def is_valid_traceparent(value: str) -> bool:
    """Check a traceparent value against W3C Trace Context level 1."""
    match = _TRACEPARENT_VALUE.match(value.strip())
    if not match:
        return False
    version, trace_id, span_id, _flags = match.groups()
    return version != "ff" and trace_id != "0" * 32 and span_id != "0" * 16


def _fold_after_commas(name: str, value: str) -> list[str]:
    """Split ``name: value`` into physical lines of at most 78 characters, at commas."""
    lines: list[str] = []
    current = f"{name}: "
    members = value.split(",")
    for index, member in enumerate(members):
        piece = member if index == len(members) - 1 else member + ","
        if len(current) + len(piece) > FOLD_WIDTH and current.strip() not in (f"{name}:", ""):
            lines.append(current.rstrip())
            current = " "
        current += piece
    lines.append(current)
    return lines


def format_fields(carrier: Mapping[Any, Any]) -> tuple[list[str], list[str]]:
    """Turn a propagator's carrier into header lines.

    Returns ``(lines, rejected_field_names)``. ``traceparent`` comes first and
    ``tracestate`` second when present and non-empty; other fields follow in carrier order.
    A field is rejected, never written, in these cases:

    - its name or value cannot be written as plain ASCII header lines (CR, LF, other
      control or non-ASCII characters);
    - one of its lines would exceed 998 characters;
    - it names a field of the message itself (``From``, ``Subject``, ``Content-*`` and
      the like);
    - a field of the same name in another letter case came first;
    - it is a ``traceparent`` that is not valid W3C Trace Context.
    """
    order = {TRACEPARENT: 0, TRACESTATE: 1}
    items = sorted(carrier.items(), key=lambda item: order.get(str(item[0]).lower(), 2))
    lines: list[str] = []
    rejected: list[str] = []
    seen: set[str] = set()
    for name, raw_value in items:
        if not isinstance(name, str) or not isinstance(raw_value, str):
            rejected.append(repr(name))
            continue
        value = raw_value.strip()
        if not value:
            continue
        lower = name.lower()
        name_ok = name.isascii() and _FIELD_NAME.fullmatch(name.encode("ascii")) is not None
        if (
            not name_ok
            or not _SAFE_VALUE.fullmatch(value)
            or lower in seen
            or lower in _RESERVED_FIELDS
            or lower.startswith(_RESERVED_PREFIXES)
            or (lower == TRACEPARENT and not is_valid_traceparent(value))
        ):
            rejected.append(name)
            continue
        field_lines = (
            _fold_after_commas(name, value) if lower == TRACESTATE else [f"{name}: {value}"]
        )
        if any(len(line) > MAX_LINE_LENGTH for line in field_lines):
            rejected.append(name)
            continue
        seen.add(lower)
        lines.extend(field_lines)
    return lines, rejected


def insert_lines(payload: Payload, lines: list[str], line_ending: bytes) -> Payload:
    """Return ``payload`` with ``lines`` put in front of it, each ended by ``line_ending``."""
    if isinstance(payload, bytes):
        prefix = b"".join(line.encode("ascii") + line_ending for line in lines)
        return prefix + payload
    ending = line_ending.decode("ascii")
    return "".join(line + ending for line in lines) + payload


def header_length(lines: list[str], line_ending: bytes = b"\r\n") -> int:
    """Return the number of bytes ``lines`` take in the message."""
    return sum(len(line) + len(line_ending) for line in lines)
