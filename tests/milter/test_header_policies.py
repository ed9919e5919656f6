"""Trace headers as the milter reads them, and every header policy, over a real socket."""

from __future__ import annotations

import pytest

from opentelemetry_instrumentation_smtp.milter import HeaderPolicy, MilterConfig
from opentelemetry_instrumentation_smtp.milter.policy import is_internal, recipient_domain
from tests.conftest import Telemetry

from .conftest import StartMilter
from .driver import HeaderModification, MtaDriver

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
OTHER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "b7ad6b7169203331"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"
OTHER = f"00-{OTHER_TRACE_ID}-00f067aa0ba902b7-01"


async def send_raw(
    server_address: object, headers: list[tuple[str, str]], **options: object
) -> tuple[list[HeaderModification], MtaDriver]:
    """Send one message whose header values go out exactly as given."""
    driver = await MtaDriver.open(server_address)  # type: ignore[arg-type]
    await driver.start_session()
    await driver.mail("<a@example.com>")
    for recipient in options.get("recipients", ["<b@example.org>"]):  # type: ignore[union-attr]
        await driver.rcpt(recipient)
    await driver.data(macros={"i": "QHDR"})
    for name, value in headers:
        await driver.header(name, value)
    await driver.end_of_headers()
    modifications, reply = await driver.end_of_message()
    assert reply.code == b"c"
    await driver.abort()
    await driver.quit()
    return modifications, driver


@pytest.mark.parametrize(
    ("headers", "status", "trace_id"),
    [
        ([("traceparent", " " + VALID)], "present", TRACE_ID),
        ([("traceparent", VALID)], "present", TRACE_ID),
        ([("TraceParent", " " + VALID)], "present", TRACE_ID),
        ([("TRACEPARENT", " " + VALID)], "present", TRACE_ID),
        ([("traceparent", "\r\n " + VALID)], "present", TRACE_ID),
        ([("traceparent", "\n\t" + VALID)], "present", TRACE_ID),
        ([("traceparent", " " + VALID + "\r")], "present", TRACE_ID),
        ([("traceparent", " " + VALID + " \t")], "present", TRACE_ID),
        ([("traceparent", " " + VALID), ("traceparent", " " + OTHER)], "present", TRACE_ID),
        ([("traceparent", " garbage"), ("traceparent", " " + OTHER)], "present", OTHER_TRACE_ID),
        (
            [("traceparent", f" 00-{'0' * 32}-{PARENT_ID}-01"), ("traceparent", " " + OTHER)],
            "present",
            OTHER_TRACE_ID,
        ),
        ([("traceparent", f" 00-{'0' * 32}-{PARENT_ID}-01")], "invalid", None),
        ([("traceparent", f" 00-{TRACE_ID}-{'0' * 16}-01")], "invalid", None),
        ([("traceparent", f" ff-{TRACE_ID}-{PARENT_ID}-01")], "invalid", None),
        ([("traceparent", f" 00-{TRACE_ID}-\r\n {PARENT_ID}-01")], "invalid", None),
        ([("traceparent", "")], "invalid", None),
        ([("x-traceparent", " " + VALID)], "absent", None),
        ([], "absent", None),
    ],
    ids=[
        "space",
        "no-space",
        "mixed-case",
        "upper-case",
        "folded-after-colon-crlf",
        "folded-after-colon-lf",
        "trailing-cr",
        "trailing-blanks",
        "duplicates-first-wins",
        "invalid-then-valid",
        "zero-trace-id-then-valid",
        "zero-trace-id",
        "zero-span-id",
        "version-ff",
        "folded-inside",
        "empty",
        "other-name",
        "none",
    ],
)
async def test_trace_context_cases(
    start_milter: StartMilter,
    telemetry: Telemetry,
    headers: list[tuple[str, str]],
    status: str,
    trace_id: str | None,
) -> None:
    server = await start_milter()
    await send_raw(server.address, headers)
    span = telemetry.one_span("smtp receive")
    assert span.attributes["smtp.trace_context"] == status
    assert span.context is not None
    if trace_id is None:
        assert span.parent is None
    else:
        assert span.parent is not None
        assert f"{span.context.trace_id:032x}" == trace_id


async def test_tracestate_fields_are_joined(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter()
    headers = [("traceparent", " " + VALID), ("tracestate", " a=1"), ("TraceState", "\r\n b=2")]
    await send_raw(server.address, headers)
    span = telemetry.one_span("smtp receive")
    assert span.context is not None
    assert list(span.context.trace_state.items()) == [("a", "1"), ("b", "2")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(" <m@example.com>", "<m@example.com>"), ("\r\n\t<m@example.com>\r", "<m@example.com>")],
)
async def test_message_id_unfolded(
    start_milter: StartMilter, telemetry: Telemetry, value: str, expected: str
) -> None:
    server = await start_milter()
    await send_raw(server.address, [("MESSAGE-ID", value), ("Message-ID", " <second@example.com>")])
    assert telemetry.one_span("smtp receive").attributes["messaging.message.id"] == expected


def policy_config(**flags: object) -> MilterConfig:
    return MilterConfig(policy=HeaderPolicy(**flags))  # type: ignore[arg-type]


def span_traceparent(telemetry: Telemetry) -> str:
    context = telemetry.one_span("smtp receive").context
    assert context is not None
    return f" 00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def test_inject_into_message_without_traceparent(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter(policy_config(inject_traceparent=True))
    modifications, _ = await send_raw(server.address, [("Subject", " hi")])
    assert modifications == [
        HeaderModification("h", None, "traceparent", span_traceparent(telemetry))
    ]
    span = telemetry.one_span("smtp receive")
    assert span.parent is None
    assert span.attributes["smtp.milter.header_action"] == "inserted"


@pytest.mark.parametrize("value", [" " + VALID, " garbage"])
async def test_inject_leaves_existing_traceparent(
    start_milter: StartMilter, telemetry: Telemetry, value: str
) -> None:
    server = await start_milter(policy_config(inject_traceparent=True))
    modifications, _ = await send_raw(server.address, [("traceparent", value)])
    assert modifications == []
    assert "smtp.milter.header_action" not in telemetry.one_span("smtp receive").attributes


async def test_rewrite_replaces_traceparent(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter(policy_config(rewrite_traceparent=True))
    headers = [
        ("TraceParent", " " + VALID),
        ("X-A", " b"),
        ("traceparent", " " + OTHER),
        ("traceparent", " x"),
    ]
    modifications, _ = await send_raw(server.address, headers)
    assert modifications == [
        HeaderModification("m", 3, "traceparent", ""),
        HeaderModification("m", 2, "traceparent", ""),
        HeaderModification("m", 1, "traceparent", span_traceparent(telemetry)),
    ]
    span = telemetry.one_span("smtp receive")
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.attributes["smtp.milter.header_action"] == "rewritten"


async def test_rewrite_replaces_invalid_traceparent(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter(policy_config(rewrite_traceparent=True))
    modifications, _ = await send_raw(server.address, [("traceparent", " garbage")])
    assert modifications == [HeaderModification("m", 1, "traceparent", span_traceparent(telemetry))]


async def test_rewrite_without_traceparent_changes_nothing(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter(policy_config(rewrite_traceparent=True))
    modifications, _ = await send_raw(server.address, [("Subject", " hi")])
    assert modifications == []


async def test_rewrite_and_inject_together(start_milter: StartMilter, telemetry: Telemetry) -> None:
    server = await start_milter(policy_config(rewrite_traceparent=True, inject_traceparent=True))
    modifications, _ = await send_raw(server.address, [])
    assert modifications == [
        HeaderModification("h", None, "traceparent", span_traceparent(telemetry))
    ]


STRIP = {
    "strip_external": True,
    "rewrite_traceparent": True,
    "internal_domains": frozenset({"example.org"}),
}


async def test_strip_for_external_recipient(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter(policy_config(**STRIP))
    headers = [
        ("traceparent", " " + VALID),
        ("tracestate", " a=1"),
        ("Tracestate", " b=2"),
        ("TRACEPARENT", " x"),
    ]
    recipients = ["<b@example.org>", "<c@Elsewhere.example>"]
    modifications, _ = await send_raw(server.address, headers, recipients=recipients)
    assert modifications == [
        HeaderModification("m", 2, "traceparent", ""),
        HeaderModification("m", 1, "traceparent", ""),
        HeaderModification("m", 2, "tracestate", ""),
        HeaderModification("m", 1, "tracestate", ""),
    ]
    span = telemetry.one_span("smtp receive")
    assert span.attributes["smtp.milter.header_action"] == "stripped"
    # Stripping happens after the span read its parent from the headers.
    assert span.parent is not None


async def test_no_strip_for_internal_recipients(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter(policy_config(**STRIP))
    recipients = ["<b@example.org>", "<c@mail.EXAMPLE.org.>"]
    modifications, _ = await send_raw(
        server.address, [("traceparent", " " + VALID)], recipients=recipients
    )
    # Every recipient is internal, so the rewrite policy applies instead.
    assert modifications == [HeaderModification("m", 1, "traceparent", span_traceparent(telemetry))]


async def test_strip_without_trace_headers_changes_nothing(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter(policy_config(**STRIP, inject_traceparent=True))
    modifications, _ = await send_raw(
        server.address, [("Subject", " hi")], recipients=["<x@other.example>"]
    )
    # An external recipient blocks the insertion too.
    assert modifications == []


async def test_policy_without_granted_action_changes_nothing(
    start_milter: StartMilter, telemetry: Telemetry
) -> None:
    server = await start_milter(policy_config(inject_traceparent=True))
    driver = await MtaDriver.open(server.address)
    await driver.negotiate(actions=0x100)
    await driver.connect()
    await driver.helo()
    modifications, reply = await driver.send_message([])
    await driver.quit()
    assert (modifications, reply.code) == ([], b"c")
    assert "smtp.milter.header_action" not in telemetry.one_span("smtp receive").attributes


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("<user@Example.COM>", "example.com"),
        ("user@example.com.", "example.com"),
        ("<@relay.example,@r2.example:user@final.example>", "final.example"),
        ('<"a@b"@quoted.example>', "quoted.example"),
        ("<postmaster>", None),
        ("<>", None),
        ("<user@>", None),
    ],
)
def test_recipient_domain(address: str, domain: str | None) -> None:
    assert recipient_domain(address) == domain


def test_internal_domain_matching() -> None:
    internal = {"example.org"}
    assert is_internal("example.org", internal)
    assert is_internal("mail.example.org", internal)
    assert not is_internal("badexample.org", internal)
    assert not is_internal("example.org.evil.example", internal)
    assert not is_internal(None, internal)
