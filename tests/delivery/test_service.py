"""The milter-facing contract: add_arguments() and start() with a real log file."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.trace import SpanContext, SpanKind

from opentelemetry_instrumentation_smtp.milter import delivery
from tests.conftest import Telemetry
from tests.delivery import lines
from tests.delivery.helpers import counter_values

WAIT_SECONDS = 10.0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="milter")
    delivery.add_arguments(parser)
    return parser.parse_args(argv)


async def wait_until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT_SECONDS)


def test_defaults() -> None:
    args = parse([])

    assert args.postfix_log is None
    assert args.postfix_log_from_start is False
    assert args.postfix_log_timezone is None
    assert args.unmatched == "span"
    assert args.unmatched_delay == 2.0
    assert args.queue_map_size == 100_000
    assert args.queue_map_ttl == 6 * 24 * 3600.0
    assert args.handoff_ttl == 600.0
    assert args.metric_recipient_domain is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--queue-map-size", "0"], "must be at least 1, got 0"),
        (["--queue-map-size", "many"], "invalid integer: 'many'"),
        (["--queue-map-ttl", "0"], "must be more than 0 seconds, got 0"),
        (["--unmatched-delay", "-1"], "must be 0 seconds or more, got -1"),
        (["--handoff-ttl", "soon"], "invalid number of seconds: 'soon'"),
        (["--postfix-log-timezone", "Mars/Olympus"], "not an IANA time zone name"),
        (["--unmatched", "drop"], "invalid choice: 'drop'"),
    ],
)
def test_invalid_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(argv)

    assert message in capsys.readouterr().err


async def test_without_postfix_log_does_nothing(telemetry: Telemetry) -> None:
    on_message_done, coroutines, close = delivery.start(
        parse([]), telemetry.tracer_provider, telemetry.meter_provider
    )

    on_message_done("34DE520C0CD", SpanContext(1, 1, is_remote=False))
    await close()

    assert coroutines == []
    assert telemetry.spans() == []


async def test_follows_file_and_joins_trace(
    tmp_path: Path, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "maillog"
    log.write_text(lines.SENT + "\n")  # before start: skipped, because reading starts at the end
    args = parse(["--postfix-log", str(log), "--postfix-log-timezone", "UTC"])
    on_message_done, coroutines, close = delivery.start(
        args, telemetry.tracer_provider, telemetry.meter_provider
    )
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    milter_span = telemetry.tracer.start_span("smtp receive", kind=SpanKind.SERVER)
    milter_span.end()
    on_message_done("34DE520C0CD", milter_span.get_span_context())
    await wait_until(lambda: "Following the Postfix log" in caplog.text)

    with log.open("a") as file:
        file.write("not a log line\n\x00\xff garbage\n")
        file.write(lines.DEFERRED + "\n" + lines.BOUNCED + "\n")
    await wait_until(lambda: len(telemetry.spans("smtp deliver")) == 2)

    for span in telemetry.spans("smtp deliver"):
        assert span.parent is not None
        assert span.parent.span_id == milter_span.get_span_context().span_id
    counts = counter_values(
        telemetry.metric_reader, "smtp.delivery.log_lines", "smtp.delivery.log_line.result"
    )
    assert counts == {"unknown": 2, "event": 2}
    await close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_close_records_waiting_events(tmp_path: Path, telemetry: Telemetry) -> None:
    log = tmp_path / "maillog"
    log.write_text(lines.SENT + "\n")
    args = parse(
        ["--postfix-log", str(log), "--postfix-log-from-start", "--unmatched-delay", "3600"]
    )
    _, coroutines, close = delivery.start(args, telemetry.tracer_provider, telemetry.meter_provider)
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    await wait_until(lambda: _line_count(telemetry) == 1)
    assert telemetry.spans("smtp deliver") == []

    await close()

    (span,) = telemetry.spans("smtp deliver")
    assert span.parent is None
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _line_count(telemetry: Telemetry) -> float:
    counts = counter_values(
        telemetry.metric_reader, "smtp.delivery.log_lines", "smtp.delivery.log_line.result"
    )
    return sum(counts.values())
