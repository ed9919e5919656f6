"""Random messages arrive byte-identical to an untraced send, except for the inserted line."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.instrumentation.utils import suppress_instrumentation

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.aiosmtplib.support import RECIPIENTS, SENDER, connected_client, inserted_line
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer

LINE_BREAKS = st.sampled_from(["\r\n", "\n", "\r"])
FIELD_NAMES = st.sampled_from(["Subject", "From", "X-Mixed-Case", "Message-ID", "Received"])
TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Draw a message with a header section, mixed line breaks, dots and an odd ending."""
    parts: list[str] = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        parts.append(f"{draw(FIELD_NAMES)}: {draw(TEXT)}{draw(LINE_BREAKS)}")
        if draw(st.booleans()):
            parts.append(f" {draw(TEXT)}{draw(LINE_BREAKS)}")
    parts.append(draw(LINE_BREAKS))
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        prefix = draw(st.sampled_from(["", ".", "..", "From "]))
        parts.append(prefix + draw(TEXT) + draw(LINE_BREAKS))
    parts.append(draw(st.sampled_from(["", "no final line break", "."])))
    return "".join(parts).encode("ascii")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=messages(), as_text=st.booleans())
def test_random_message_identical_but_for_line(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server: RecordingServer,
    payload: bytes,
    as_text: bool,
) -> None:
    message: str | bytes = payload.decode("ascii") if as_text else payload
    telemetry.exporter.clear()

    async def send_twice() -> None:
        client = await connected_client(server)
        with suppress_instrumentation():
            await client.sendmail(SENDER, RECIPIENTS, message)
        await client.sendmail(SENDER, RECIPIENTS, message)
        await client.quit()

    asyncio.run(send_twice())

    plain, traced = server.messages[-2].content, server.messages[-1].content
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    if attributes["smtp.trace_context.injected"]:
        assert traced == inserted_line(span) + plain
    else:
        assert traced == plain
    # aiosmtplib normalises line breaks to CRLF and ends the message with CRLF; the
    # server's copy is that text after dot-unstuffing, so its length is the DATA size.
    assert attributes["smtp.message.size"] == len(traced)
