"""Send one real message through instrumented smtplib and print its trace.

Run with ``python -m opentelemetry_instrumentation_smtp.demo`` after installing the
``demo`` extra. The demo starts an aiosmtpd server on 127.0.0.1 (an ephemeral port) and
sends a message inside a parent span. It prints the trace as a tree and the headers as
the server received them. It exits with status 1 unless the received ``traceparent``
names the send span.
"""

from __future__ import annotations

import argparse
import re
import smtplib
import socket
import sys
import threading
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import Any

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_SHOWN_ATTRIBUTES = (
    "server.address",
    "server.port",
    "smtp.response.status_code",
    "smtp.queue_id",
    "smtp.recipients.count",
    "smtp.message.size",
    "smtp.trace_context.injected",
    "error.type",
)


def _require_demo_extra() -> None:
    try:
        import aiosmtpd  # noqa: F401
        import opentelemetry.sdk  # noqa: F401
    except ImportError as exc:
        sys.exit(
            f"The demo needs the 'demo' extra ({exc.name} is missing): "
            "pip install 'opentelemetry-instrumentation-smtp[demo]'"
        )


class _Inbox:
    """An aiosmtpd handler that keeps each received message and replies like Postfix."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.received = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.original_content or b"")
        self.received.set()
        return "250 2.0.0 Ok: queued as 4DemoQ1d"


def _print_tree(spans: list[Any], out: Any) -> None:
    by_parent: dict[int | None, list[Any]] = {}
    ids = {span.context.span_id for span in spans}
    for span in sorted(spans, key=lambda s: s.start_time):
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(span)

    def show(parent: int | None, depth: int) -> None:
        for span in by_parent.get(parent, []):
            duration_ms = (span.end_time - span.start_time) / 1e6
            kind = span.kind.name
            print(
                f"{'  ' * depth}{span.name} [{kind}] {duration_ms:.1f} ms"
                f"  span_id={span.context.span_id:016x}",
                file=out,
            )
            attributes = dict(span.attributes or {})
            for key in _SHOWN_ATTRIBUTES:
                if key in attributes:
                    print(f"{'  ' * depth}    {key} = {attributes[key]!r}", file=out)
            show(span.context.span_id, depth + 1)

    show(None, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    _require_demo_extra()

    from aiosmtpd.controller import Controller
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from opentelemetry_instrumentation_smtp import SmtpInstrumentor

    out = sys.stdout
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "smtp-demo"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=provider)

    inbox = _Inbox()
    # aiosmtpd's controller needs a concrete port number, so ask the OS for a free one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        message = EmailMessage()
        message["From"] = "app@example.com"
        message["To"] = "user@example.com"
        message["Subject"] = "Your password reset link"
        message["Message-ID"] = "<demo-1@example.com>"
        message.set_content("Click the link to reset your password.\n")

        tracer = provider.get_tracer("demo")
        with (
            tracer.start_as_current_span("POST /password-reset"),
            smtplib.SMTP("127.0.0.1", port, timeout=10) as client,
        ):
            client.send_message(message)
        inbox.received.wait(5)
    finally:
        controller.stop()
        instrumentor.uninstrument()

    spans = list(exporter.get_finished_spans())
    print(f"Sent one message to the SMTP server on 127.0.0.1:{port}.\n", file=out)
    print("Trace:", file=out)
    _print_tree(spans, out)

    if not inbox.messages:
        print("\nFAIL: the server received no message.", file=out)
        return 1
    received = BytesHeaderParser().parsebytes(inbox.messages[0])
    print("\nHeaders as the server received them:", file=out)
    for name, value in received.items():
        print(f"  {name}: {value}", file=out)

    send_spans = [span for span in spans if span.name == "smtp send"]
    match = _TRACEPARENT.match(str(received.get("traceparent", "")).strip())
    if not send_spans or not match:
        print("\nFAIL: no traceparent header, or no send span.", file=out)
        return 1
    send = send_spans[0]
    expected = (f"{send.context.trace_id:032x}", f"{send.context.span_id:016x}")
    if match.groups() != expected:
        print(f"\nFAIL: traceparent names {match.groups()}, send span is {expected}.", file=out)
        return 1
    print(
        f"\nOK: the received traceparent names the send span "
        f"(trace {expected[0]}, span {expected[1]}).",
        file=out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
