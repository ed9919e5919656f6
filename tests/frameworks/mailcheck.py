"""Checks shared by the framework tests: the trace context a server received, and spans."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage

from opentelemetry.sdk.trace import ReadableSpan

from tests.smtpserver import RecordingServer

TRACEPARENT_LINE = re.compile(
    rb"^traceparent: (00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2})(\r?\n)"
)

# The W3C traceparent that a web client sends with its request, as if it came from an
# upstream service. Its trace id must reach the mail.
INCOMING_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT_ID = "00f067aa0ba902b7"
INCOMING_TRACEPARENT = f"00-{INCOMING_TRACE_ID}-{INCOMING_PARENT_ID}-01"


def span_traceparent(span: ReadableSpan) -> str:
    """Return the traceparent value that names ``span`` as the parent."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def split_traceparent(content: bytes) -> tuple[str, bytes]:
    """Return the inserted traceparent value and the message as it was before insertion.

    Fails unless the message starts with exactly one traceparent line, ended like the
    message's own first line.
    """
    match = TRACEPARENT_LINE.match(content)
    assert match is not None, content[:200]
    rest = content[match.end() :]
    first_line_end = rest.find(b"\n")
    message_ending = b"\r\n" if rest[first_line_end - 1 : first_line_end] == b"\r" else b"\n"
    assert match.group(4) == message_ending, "the inserted line has another line ending"
    assert b"\ntraceparent:" not in rest.lower().split(b"\r\n\r\n")[0], rest[:400]
    return match.group(1).decode(), rest


def parse(content: bytes) -> EmailMessage:
    message = message_from_bytes(content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_names(content: bytes) -> list[str]:
    """Return the names of the header fields of a received message, lower-cased, in order."""
    return [name.lower() for name in parse(content)]


def send_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.name == "smtp send"]


def client_connections(server: RecordingServer) -> int:
    """Count the SMTP connections that sent anything (the server's start-up probe sends nothing)."""
    with server.lock:
        return sum(1 for wire in server.wire if wire)


def received_traceparents(server: RecordingServer) -> list[str]:
    return [split_traceparent(message.content)[0] for message in server.messages]


@contextmanager
def serving_once(
    make_server: Callable[[str, int], object],
) -> Iterator[int]:
    """Serve exactly one HTTP request on 127.0.0.1 in a thread and yield the port.

    ``make_server(host, port)`` builds a server with ``handle_request()`` and
    ``server_close()`` (``wsgiref`` and ``werkzeug`` both qualify). Leaving the block
    waits until that request was handled completely, so every span of the request has
    ended by then.
    """
    server = make_server("127.0.0.1", 0)
    port = int(server.server_address[1])  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.handle_request, daemon=True)  # type: ignore[attr-defined]
    thread.start()
    try:
        yield port
    finally:
        thread.join(timeout=30)
        server.server_close()  # type: ignore[attr-defined]
    assert not thread.is_alive(), "the HTTP server did not finish the request"


def free_socket() -> socket.socket:
    """Return a listening TCP socket on 127.0.0.1 with a port chosen by the system."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock
