"""A Django view that sends mail, served over HTTP with opentelemetry-instrumentation-django."""

from __future__ import annotations

import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

pytest.importorskip("django")
pytest.importorskip("opentelemetry.instrumentation.django")

from django.core.wsgi import get_wsgi_application
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.trace import SpanKind

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.conftest import Telemetry
from tests.frameworks.mailcheck import (
    INCOMING_PARENT_ID,
    INCOMING_TRACE_ID,
    INCOMING_TRACEPARENT,
    serving_once,
    span_traceparent,
    split_traceparent,
)
from tests.smtpserver import RecordingServer


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_view_send_is_child_of_server_span(
    instrument: SmtpInstrumentor, telemetry: Telemetry, django_smtp: RecordingServer
) -> None:
    DjangoInstrumentor().instrument(tracer_provider=telemetry.tracer_provider)
    try:
        # The handler loads the middleware list when it is built, so after instrument().
        application = get_wsgi_application()

        def build(host: str, port: int) -> WSGIServer:
            return make_server(host, port, application, handler_class=_QuietHandler)

        with serving_once(build) as port:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/signup/?to=new.user@example.com",
                headers={"traceparent": INCOMING_TRACEPARENT},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                status = response.status
                body = response.read()
    finally:
        DjangoInstrumentor().uninstrument()

    assert status == 201
    assert body == b"sent 1\n"
    server_spans = [span for span in telemetry.spans() if span.kind is SpanKind.SERVER]
    assert len(server_spans) == 1
    server_span = server_spans[0]
    assert server_span.parent is not None
    assert server_span.parent.is_remote
    assert format(server_span.parent.span_id, "016x") == INCOMING_PARENT_ID

    send = telemetry.one_span("smtp send")
    connect = telemetry.one_span("smtp connect")
    for span in (send, connect):
        assert span.parent is not None
        assert span.parent.span_id == server_span.context.span_id
        assert format(span.context.trace_id, "032x") == INCOMING_TRACE_ID

    received = django_smtp.messages[0]
    assert received.rcpt_tos == ["new.user@example.com"]
    traceparent, _ = split_traceparent(received.content)
    assert traceparent == span_traceparent(send)
    assert traceparent.split("-")[1] == INCOMING_TRACE_ID
