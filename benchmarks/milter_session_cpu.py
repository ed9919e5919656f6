"""CPU time per message of the milter's session, codec and span, without sockets.

Run from the repository root::

    python benchmarks/milter_session_cpu.py [--messages N] [--rounds N] [--profile]

It builds the frames that benchmarks/milter_throughput.py sends for one message: the
macros Postfix sends, six header fields with a traceparent, a 1 KB body, then ABORT. It
feeds them to one ``MilterSession`` one write at a time, as separate socket reads would
deliver them, and also all writes of a message in one call. The telemetry is the same as
in benchmarks/milter_server.py: the SDK's ``TracerProvider`` with the bounded batch span
processor and an exporter that drops the spans, and the SDK's ``MeterProvider``.
``--profile`` prints the top of a cProfile run of the one-write-per-call loop instead.
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from milter_server import DroppingExporter  # noqa: E402
from milter_throughput import BODY, HEADERS  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from opentelemetry_instrumentation_smtp.milter.config import MilterConfig  # noqa: E402
from opentelemetry_instrumentation_smtp.milter.export import (  # noqa: E402
    BoundedBatchSpanProcessor,
)
from opentelemetry_instrumentation_smtp.milter.session import MilterSession  # noqa: E402
from opentelemetry_instrumentation_smtp.milter.tracing import MilterTelemetry  # noqa: E402
from tests.milter.driver import (  # noqa: E402
    ALL_ACTIONS,
    ALL_PROTOCOL_FLAGS,
    POSTFIX_CONNECT_MACROS,
    frame,
    macro_frame,
    strings,
)


def message_frames(queue_id: str) -> list[bytes]:
    """Return the writes that tests.milter.driver.MtaDriver.send_message makes."""
    sender = "<sender@example.com>"
    writes = [
        macro_frame(b"M", {"{mail_addr}": sender.strip("<>")}) + frame(b"M", strings(sender)),
        macro_frame(b"R", {}) + frame(b"R", strings("<rcpt@example.org>")),
        macro_frame(b"T", {"i": queue_id}) + frame(b"T"),
    ]
    writes += [frame(b"L", strings(name, " " + value)) for name, value in HEADERS]
    writes.append(macro_frame(b"N", {"i": queue_id}) + frame(b"N"))
    writes.append(frame(b"B", BODY))
    writes.append(macro_frame(b"E", {"i": queue_id}) + frame(b"E"))
    writes.append(frame(b"A"))
    return writes


def new_session() -> tuple[MilterSession, TracerProvider]:
    meter_provider = MeterProvider()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        BoundedBatchSpanProcessor(DroppingExporter(), meter_provider=meter_provider)
    )
    config = MilterConfig()
    session = MilterSession(config, MilterTelemetry(tracer_provider, meter_provider))
    session.receive_data(frame(b"O", struct.pack(">III", 6, ALL_ACTIONS, ALL_PROTOCOL_FLAGS)))
    connect = strings("client.example.test") + b"4" + struct.pack(">H", 54321)
    connect += strings("192.0.2.10")
    session.receive_data(macro_frame(b"C", POSTFIX_CONNECT_MACROS) + frame(b"C", connect))
    session.receive_data(frame(b"H", strings("client.example.test")))
    return session, tracer_provider


def run(session: MilterSession, messages: list[list[bytes]], joined: bool) -> float:
    """Feed every message and return the process CPU seconds per message."""
    receive = session.receive_data
    started = time.process_time()
    for writes in messages:
        if joined:
            receive(b"".join(writes))
        else:
            for data in writes:
                receive(data)
    return (time.process_time() - started) / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (default: 5)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    args = parser.parse_args()
    messages = [message_frames(f"4B{number:08X}") for number in range(args.messages)]
    session, tracer_provider = new_session()
    run(session, messages[:1000], joined=False)  # warm-up
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(session, messages, joined=False)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        tracer_provider.shutdown()
        return
    results: dict[str, list[float]] = {"one write per call": [], "one message per call": []}
    for _ in range(args.rounds):
        results["one write per call"].append(run(session, messages, joined=False))
        results["one message per call"].append(run(session, messages, joined=True))
    tracer_provider.shutdown()
    print(f"Python {platform.python_version()}, {args.messages} messages x {args.rounds} rounds")
    print("| input | CPU per message, best round (µs) | median round (µs) |")
    print("|---|---:|---:|")
    for mode, values in results.items():
        values.sort()
        print(f"| {mode} | {values[0] * 1e6:.1f} | {values[len(values) // 2] * 1e6:.1f} |")


if __name__ == "__main__":
    main()
