"""Attribute names and the parsing of SMTP replies into attribute values.

Names that the OpenTelemetry semantic conventions define are used as they are. The
attributes that only SMTP has live under ``smtp.*`` and are listed in docs/attributes.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Semantic-convention attributes.
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
NETWORK_PEER_ADDRESS = "network.peer.address"
NETWORK_PEER_PORT = "network.peer.port"
NETWORK_TRANSPORT = "network.transport"
NETWORK_PROTOCOL_NAME = "network.protocol.name"
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_MESSAGE_ID = "messaging.message.id"
ERROR_TYPE = "error.type"

# SMTP attributes.
SMTP_RESPONSE_STATUS_CODE = "smtp.response.status_code"
SMTP_RESPONSE_ENHANCED_STATUS_CODE = "smtp.response.enhanced_status_code"
SMTP_RESPONSE_MESSAGE = "smtp.response.message"
SMTP_QUEUE_ID = "smtp.queue_id"
SMTP_RECIPIENTS_COUNT = "smtp.recipients.count"
SMTP_RECIPIENTS_REJECTED_COUNT = "smtp.recipients.rejected.count"
SMTP_MESSAGE_SIZE = "smtp.message.size"
SMTP_TRACE_CONTEXT_INJECTED = "smtp.trace_context.injected"
SMTP_ENVELOPE_FROM = "smtp.envelope.from"
SMTP_ENVELOPE_TO = "smtp.envelope.to"
SMTP_RECIPIENT_STATUS = "smtp.recipient.status"
SMTP_RECIPIENT_ADDRESS = "smtp.recipient.address"

# Event emitted once per recipient that the server refused.
EVENT_RECIPIENT_REFUSED = "smtp.recipient.refused"

MESSAGING_SYSTEM_SMTP = "smtp"

# error.type for a hand-driven transaction that ended (RSET, QUIT, close, a new MAIL)
# before the server accepted the message.
ERROR_TRANSACTION_ABORTED = "smtp.transaction_aborted"

_ENHANCED_CODE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")

# Queue ids in the final reply to DATA, per MTA:
#   Postfix:  "2.0.0 Ok: queued as 4Xb1Kq0cZ5z9v"
#   Sendmail: "2.0.0 4B3Jx1aB012345 Message accepted for delivery"
#   Exim:     "OK id=1t2AbC-000Xyz-9Q"
_QUEUE_ID_PATTERNS = (
    re.compile(r"\bqueued as ([A-Za-z0-9][A-Za-z0-9._-]{3,63})\b"),
    re.compile(r"^([A-Za-z0-9]{8,20}) Message accepted for delivery\b"),
    re.compile(r"\bid=([A-Za-z0-9]{4,}-[A-Za-z0-9]{4,}-[A-Za-z0-9]{2,})\b"),
)

# An addr-spec as it appears in reply texts, with or without angle brackets. It covers
# quoted local parts ("john doe"@example.com) and domain literals (user@[192.0.2.1]). The
# pattern is deliberately loose, because redaction must err on the side of removing too
# much. A local part does not start with a quote or a brace, and a domain contains
# neither, so the punctuation around an address in a repr ({'a@example.com': ...}) stays.
_ADDRESS = re.compile(
    r"<?(?:\"[^\"\r\n]*\"|[^\s<>@\"'(){}\[\],;:][^\s<>@\"(){}\[\],;:]*)"
    r"@(?:\[[^\]\s]*\]|[^\s<>@\"'(){}\[\],;:]+)>?"
)
REDACTED_ADDRESS = "<redacted>"


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: its three-digit code and its text with the lines joined."""

    code: int
    text: str

    @property
    def enhanced_status_code(self) -> str | None:
        match = _ENHANCED_CODE.match(self.text)
        return match.group(1) if match else None

    @property
    def queue_id(self) -> str | None:
        text = self.text
        enhanced = _ENHANCED_CODE.match(text)
        if enhanced:
            text = text[enhanced.end() :]
        for pattern in _QUEUE_ID_PATTERNS:
            match = pattern.search(text)
            if match:
                return match.group(1)
        return None

    @property
    def is_positive_completion(self) -> bool:
        return 200 <= self.code < 300


def decode_reply_text(text: bytes | str) -> str:
    """Decode a reply text as smtplib (bytes) or aiosmtplib (str) hands it over."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    # Multi-line replies arrive joined by LF; one attribute value reads better on one line.
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def reply_from_pair(result: object) -> Reply | None:
    """Return the reply in a ``(code, text)`` pair.

    smtplib's ``mail``/``rcpt``/``data`` return such a tuple, and aiosmtplib's
    ``SMTPResponse`` is a named tuple of the same shape.
    """
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int):
        return Reply(result[0], decode_reply_text(result[1]))
    return None


def redact_addresses(text: str) -> str:
    """Replace every email address in ``text`` with ``<redacted>``."""
    return _ADDRESS.sub(REDACTED_ADDRESS, text)


def reply_attributes(reply: Reply, capture_addresses: bool) -> dict[str, str | int]:
    """Build the ``smtp.response.*`` and ``smtp.queue_id`` attributes of one reply."""
    attributes: dict[str, str | int] = {SMTP_RESPONSE_STATUS_CODE: reply.code}
    enhanced = reply.enhanced_status_code
    if enhanced:
        attributes[SMTP_RESPONSE_ENHANCED_STATUS_CODE] = enhanced
    text = reply.text if capture_addresses else redact_addresses(reply.text)
    if text:
        attributes[SMTP_RESPONSE_MESSAGE] = text
    return attributes


def error_type_of(exception: BaseException) -> str:
    """Return ``error.type`` for an exception: its fully qualified class name."""
    cls = type(exception)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
