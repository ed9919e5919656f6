"""Every aiosmtplib entry point gives one span and one inserted line per message."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable

import aiosmtplib
import pytest
from aiosmtplib import send as send_imported_early
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.aiosmtplib.support import (
    RAW,
    RECIPIENTS,
    SENDER,
    connected_client,
    inserted_line,
    make_message,
    new_client,
    size_option,
    split_traceparent,
)
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer

POSITIONAL_ONLY = (
    inspect.signature(aiosmtplib.SMTP.sendmail).parameters["message"].kind
    is inspect.Parameter.POSITIONAL_ONLY
)


async def test_hand_driven_transaction(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    with telemetry.tracer.start_as_current_span("parent") as parent:
        await client.mail(SENDER, options=["SIZE=100"])
        await client.rcpt("b@example.com")
        await client.rcpt("c@example.com")
        reply = await client.data(RAW)

    assert reply.code == 250
    span = telemetry.one_span("smtp send")
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    line, rest = split_traceparent(server.messages[0].content)
    assert line == inserted_line(span)
    assert rest == RAW
    # MAIL declared its size before the message was known, so it grew by the line.
    assert size_option(server.messages[0].mail_options) == 100 + len(line)
    attributes = dict(span.attributes or {})
    assert attributes["smtp.recipients.count"] == 2
    assert attributes["smtp.queue_id"] == "4Xb1Kq0cZ5z9v"


async def test_hand_driven_then_rset_aborts(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    await client.mail(SENDER)
    await client.rset()

    span = telemetry.one_span("smtp send")
    assert dict(span.attributes or {})["error.type"] == "smtp.transaction_aborted"
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    assert len(telemetry.spans("smtp send")) == 2


async def test_hand_driven_data_refused(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    server.script.data_reply = "554 5.7.1 spam"
    await client.mail(SENDER)
    await client.rcpt("b@example.com")
    with pytest.raises(aiosmtplib.SMTPDataError):
        await client.data(RAW)

    span = telemetry.one_span("smtp send")
    assert dict(span.attributes or {})["error.type"] == "554"
    assert span.status.status_code is StatusCode.ERROR


async def test_module_send_str_and_message(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    with telemetry.tracer.start_as_current_span("parent") as parent:
        await aiosmtplib.send(
            RAW.decode(),
            sender=SENDER,
            recipients=RECIPIENTS,
            hostname="127.0.0.1",
            port=server.port,
            start_tls=False,
        )
        await aiosmtplib.send(
            make_message(), hostname="127.0.0.1", port=server.port, start_tls=False
        )

    spans = telemetry.spans("smtp send")
    assert len(spans) == 2
    for span, message in zip(spans, server.messages, strict=True):
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert split_traceparent(message.content)[0] == inserted_line(span)
    assert len(telemetry.spans("smtp connect")) == 2


async def test_send_imported_before_instrument(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    await send_imported_early(
        RAW, sender=SENDER, recipients=RECIPIENTS, hostname="127.0.0.1", port=server.port
    )
    span = telemetry.one_span("smtp send")
    assert split_traceparent(server.messages[0].content)[0] == inserted_line(span)


@pytest.mark.parametrize("method", ["sendmail_sync", "send_message_sync"])
def test_sync_methods_keep_caller_parent(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer, method: str
) -> None:
    client = new_client(server)
    arguments = (SENDER, RECIPIENTS, RAW) if method == "sendmail_sync" else (make_message(),)
    outcome: list[object] = []

    def run() -> None:
        # A thread without an event loop, as a synchronous application has.
        with telemetry.tracer.start_as_current_span("caller") as caller:
            outcome.append(caller)
            outcome.append(getattr(client, method)(*arguments))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()

    caller = outcome[0]
    assert isinstance(caller, trace.Span)
    span = telemetry.one_span("smtp send")
    assert span.parent is not None
    assert span.parent.span_id == caller.get_span_context().span_id
    assert split_traceparent(server.messages[0].content)[0] == inserted_line(span)
    connect = telemetry.one_span("smtp connect")
    assert connect.parent is not None
    assert connect.parent.span_id == caller.get_span_context().span_id


async def test_subclass_calling_super_gives_one_span(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    class Custom(aiosmtplib.SMTP):
        async def send_message(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            return await super().send_message(*args, **kwargs)  # type: ignore[arg-type]

        async def sendmail(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            return await super().sendmail(*args, **kwargs)  # type: ignore[arg-type]

    client = Custom(hostname="127.0.0.1", port=server.port, start_tls=False)
    await client.connect()
    await client.send_message(make_message())
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.quit()

    spans = telemetry.spans("smtp send")
    assert len(spans) == 2
    for span, message in zip(spans, server.messages, strict=True):
        line, rest = split_traceparent(message.content)
        assert line == inserted_line(span)
        assert not rest.lower().startswith(b"traceparent")


async def test_keyword_options_passed_through(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    await client.sendmail(
        SENDER, RECIPIENTS, RAW, mail_options=["BODY=8BITMIME"], rcpt_options=[], timeout=30
    )
    assert server.messages[0].mail_options[1:] == ["BODY=8BITMIME"]
    assert split_traceparent(server.messages[0].content)[0] == inserted_line(
        telemetry.one_span("smtp send")
    )


@pytest.mark.skipif(POSITIONAL_ONLY, reason="aiosmtplib 3.0 and later take these positionally")
async def test_keyword_message_on_2x(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    client: aiosmtplib.SMTP,
) -> None:
    await client.sendmail(sender=SENDER, recipients=RECIPIENTS, message=RAW)  # type: ignore[call-arg]
    await client.send_message(message=make_message())  # type: ignore[call-arg]

    spans = telemetry.spans("smtp send")
    assert len(spans) == 2
    for span, message in zip(spans, server.messages, strict=True):
        assert split_traceparent(message.content)[0] == inserted_line(span)


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.sendmail(SENDER, RECIPIENTS, message=RAW),
        lambda client: client.sendmail(SENDER, RECIPIENTS),
        lambda client: client.send_message(),
        lambda client: client.data(),
        lambda client: client.sendmail(SENDER, RECIPIENTS, RAW, unknown=1),
    ],
    ids=["message-keyword", "message-missing", "no-message", "data-empty", "unknown-keyword"],
)
async def test_invalid_call_raises_library_error(
    instrument_with: Callable[..., SmtpInstrumentor],
    server: RecordingServer,
    call: Callable[[aiosmtplib.SMTP], object],
) -> None:
    plain = await connected_client(server)
    expected: BaseException | None = None
    try:
        await call(plain)  # type: ignore[misc]
    except TypeError as exc:
        expected = exc
    plain.close()

    instrument_with()
    traced = await connected_client(server)
    raised: BaseException | None = None
    try:
        await call(traced)  # type: ignore[misc]
    except TypeError as exc:
        raised = exc
    traced.close()

    if expected is None:
        assert raised is None
    else:
        assert raised is not None
        assert str(raised) == str(expected)
