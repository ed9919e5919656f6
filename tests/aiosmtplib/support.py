"""Helpers shared by the aiosmtplib tests: clients, messages and wire checks."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from opentelemetry.sdk.trace import ReadableSpan

from tests.smtpserver import RecordingServer

RAW = (
    b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <m1@example.com>\r\n\r\nline one\r\n.dot line\r\n"
)
SENDER = "a@example.com"
RECIPIENTS = ["b@example.com"]

TRACEPARENT_LINE = re.compile(rb"^traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]\r\n")

# aiosmtplib 5.1 declares SIZE= from the message with its line endings normalised to
# CRLF; earlier versions declare len(message) as given.
SIZE_COUNTS_NORMALIZED = tuple(int(part) for part in aiosmtplib.__version__.split(".")[:2]) >= (
    5,
    1,
)


def make_message(message_id: str = "<abc@example.com>") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "rcpt@example.com"
    message["Subject"] = "Test"
    message["Message-ID"] = message_id
    message.set_content("Hello.\n")
    return message


def new_client(server: RecordingServer, **kwargs: Any) -> aiosmtplib.SMTP:
    """Return an unconnected client for ``server`` that does not try STARTTLS."""
    options: dict[str, Any] = {"hostname": "127.0.0.1", "port": server.port, "start_tls": False}
    options.update(kwargs)
    return aiosmtplib.SMTP(**options)


async def connected_client(server: RecordingServer, **kwargs: Any) -> aiosmtplib.SMTP:
    client = new_client(server, **kwargs)
    await client.connect()
    return client


def traceparent_of(span: ReadableSpan) -> str:
    context = span.context
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def inserted_line(span: ReadableSpan, line_ending: bytes = b"\r\n") -> bytes:
    """Return the header line that the instrumentation inserts for ``span``."""
    return b"traceparent: " + traceparent_of(span).encode() + line_ending


def split_traceparent(data: bytes) -> tuple[bytes, bytes]:
    """Split a received message into its leading traceparent line and the rest."""
    match = TRACEPARENT_LINE.match(data)
    assert match, data[:120]
    return data[: match.end()], data[match.end() :]


def size_option(options: list[str]) -> int:
    sizes = [int(option[5:]) for option in options if option.lower().startswith("size=")]
    assert len(sizes) == 1, options
    return sizes[0]
