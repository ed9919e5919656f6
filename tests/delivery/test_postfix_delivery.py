"""A real Postfix relays one message to a sink that accepts, defers and rejects recipients.

The milter runs in this process with the Postfix log follower, and the test reads the
spans of client, milter and delivery from one in-memory exporter.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from opentelemetry_instrumentation_smtp.milter import cli, delivery
from opentelemetry_instrumentation_smtp.milter.sdk import Providers
from tests.conftest import Telemetry
from tests.milter.postfix import Postfix, free_port, postfix_binary

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(
        postfix_binary() is None and not os.environ.get("CI"),
        reason="postfix is not installed (CI installs it with .ci/run)",
    ),
]

SENDER = "sender@app.example"
ACCEPTED = "ok@dest.example"
DEFERRED = "defer@dest.example"
REJECTED = "reject@dest.example"
WAIT_SECONDS = 60.0


class SelectiveHandler:
    """Sink that replies 451 to DEFERRED, 550 to REJECTED, and accepts other recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str]]] = []

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address == DEFERRED:
            return f"451 4.3.0 <{DEFERRED}> mailbox busy, try again later"
        if address == REJECTED:
            return f"550 5.1.1 <{REJECTED}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return f"250 2.0.0 Ok: queued as SINK{len(self.messages)}"


class MilterThread:
    """The milter CLI's ``run()`` on an event loop in a thread, with the test's providers."""

    def __init__(self, argv: list[str], telemetry: Telemetry) -> None:
        parser = cli.build_parser()
        delivery.add_arguments(parser)
        self.args = parser.parse_args(argv)
        self.config = cli.config_from_args(self.args)
        self.providers = Providers(telemetry.tracer_provider, telemetry.meter_provider)
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="milter", daemon=True)
        self.ready = threading.Event()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to the test by stop()
            self.error = error
            self.ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self.stop_event = asyncio.Event()
        self.loop.call_soon(self.ready.set)
        await cli.run(self.args, self.config, self.providers, delivery, self.stop_event)

    def start(self) -> MilterThread:
        self.thread.start()
        assert self.ready.wait(WAIT_SECONDS)
        return self

    def stop(self) -> None:
        if self.stop_event is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(WAIT_SECONDS)
        if self.error is not None:
            raise self.error


def wait_until(condition: Callable[[], bool], description: str, postfix: Postfix) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{description} did not happen; Postfix log:\n{postfix.log()}")
        time.sleep(0.05)


@pytest.fixture
def postfix_directory() -> Iterator[Path]:
    # Postfix's daemons run as the postfix user, which cannot enter pytest's tmp_path
    # (its root is mode 0700), so the instance gets a directory of its own under /tmp.
    with tempfile.TemporaryDirectory(prefix="postfix-delivery-") as directory:
        yield Path(directory)


@pytest.fixture
def mail_system(
    postfix_directory: Path, telemetry: Telemetry, instrument: SmtpInstrumentor
) -> Iterator[tuple[Postfix, MilterThread]]:
    handler = SelectiveHandler()
    sink = Controller(handler, hostname="127.0.0.1", port=free_port())
    sink.start()
    milter_port = free_port()
    postfix = Postfix(
        postfix_directory, relay_port=sink.port, milter=f"inet:127.0.0.1:{milter_port}"
    )
    milter = MilterThread(
        [
            "--listen",
            f"inet:127.0.0.1:{milter_port}",
            "--postfix-log",
            str(postfix.log_file),
            "--postfix-log-poll-interval",
            "0.05",
        ],
        telemetry,
    ).start()
    try:
        with postfix:
            yield postfix, milter
    finally:
        milter.stop()
        sink.stop()


def attributes_of(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def deliver_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return telemetry.spans("smtp deliver")


def test_delivery_spans_join_client_trace(
    telemetry: Telemetry, mail_system: tuple[Postfix, MilterThread]
) -> None:
    postfix, _ = mail_system
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = ", ".join((ACCEPTED, DEFERRED, REJECTED))
    message["Subject"] = "delivery spans"
    message.set_content("hello\n")

    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=WAIT_SECONDS) as client:
        client.send_message(message, SENDER, [ACCEPTED, DEFERRED, REJECTED])

    # Three attempts, and the non-delivery notification for the rejected recipient.
    wait_until(lambda: len(deliver_spans(telemetry)) >= 4, "four delivery spans", postfix)

    client_span = telemetry.one_span("smtp send")
    milter_span = telemetry.one_span("smtp receive")
    assert client_span.kind is SpanKind.CLIENT
    assert client_span.context is not None
    assert milter_span.context is not None
    trace_id = client_span.context.trace_id
    queue_id = attributes_of(milter_span)["smtp.queue_id"]
    assert attributes_of(client_span)["smtp.queue_id"] == queue_id
    assert milter_span.kind is SpanKind.SERVER
    assert milter_span.parent is not None
    assert milter_span.parent.span_id == client_span.context.span_id

    spans = deliver_spans(telemetry)
    assert all(span.context is not None and span.context.trace_id == trace_id for span in spans)
    attempts = {
        str(attributes_of(span)["smtp.delivery.status"]): span
        for span in spans
        if attributes_of(span)["smtp.queue_id"] == queue_id
    }
    assert sorted(attempts) == ["bounced", "deferred", "sent"]
    for span in attempts.values():
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == milter_span.context.span_id
        attributes = attributes_of(span)
        assert attributes["smtp.recipient.domain"] == "dest.example"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["network.peer.address"] == "127.0.0.1"
        assert isinstance(attributes["server.port"], int)
        assert "smtp.recipient.address" not in attributes
        assert span.start_time is not None
        assert span.end_time is not None
        assert span.start_time <= span.end_time

    sent = attributes_of(attempts["sent"])
    assert sent["smtp.response.status_code"] == 250
    assert sent["smtp.response.enhanced_status_code"] == "2.0.0"
    assert sent["smtp.response.message"] == "2.0.0 Ok: queued as SINK1"
    assert attempts["sent"].status.status_code is StatusCode.UNSET

    deferred = attributes_of(attempts["deferred"])
    assert deferred["smtp.response.status_code"] == 451
    assert deferred["smtp.response.enhanced_status_code"] == "4.3.0"
    assert deferred["smtp.response.message"] == "4.3.0 <redacted> mailbox busy, try again later"
    assert deferred["error.type"] == "4.3.0"
    assert attempts["deferred"].status.status_code is StatusCode.ERROR

    bounced = attributes_of(attempts["bounced"])
    assert bounced["smtp.response.status_code"] == 550
    assert bounced["smtp.response.enhanced_status_code"] == "5.1.1"
    assert bounced["smtp.response.message"] == (
        "5.1.1 <redacted>: Recipient address rejected: User unknown"
    )
    assert bounced["error.type"] == "5.1.1"
    assert attempts["bounced"].status.status_code is StatusCode.ERROR

    (notice,) = [span for span in spans if attributes_of(span)["smtp.queue_id"] != queue_id]
    notice_attributes = attributes_of(notice)
    assert notice_attributes["smtp.delivery.handoff.kind"] == "notification"
    assert notice_attributes["smtp.delivery.handoff.from_queue_id"] == queue_id
    assert notice_attributes["smtp.recipient.domain"] == "app.example"
    assert notice_attributes["smtp.delivery.status"] == "sent"
    assert notice.parent is not None
    assert attempts["bounced"].context is not None
    assert notice.parent.span_id == attempts["bounced"].context.span_id

    # Retrying the queue gives the deferred recipient a further attempt in the same trace.
    postfix.flush()
    wait_until(lambda: len(deliver_spans(telemetry)) >= 5, "a fifth delivery span", postfix)

    retry = deliver_spans(telemetry)[-1]
    assert retry.context is not None
    assert retry.context.trace_id == trace_id
    assert retry.parent is not None
    assert retry.parent.span_id == milter_span.context.span_id
    retry_attributes = attributes_of(retry)
    assert retry_attributes["smtp.queue_id"] == queue_id
    assert retry_attributes["smtp.delivery.status"] == "deferred"
    assert retry_attributes["smtp.response.status_code"] == 451
    assert retry.status.status_code is StatusCode.ERROR
