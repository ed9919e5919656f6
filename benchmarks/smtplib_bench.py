"""Cost of the smtplib instrumentation, with opentelemetry-instrumentation-requests as reference.

Run from the repository root (needs aiosmtpd, requests and
opentelemetry-instrumentation-requests in the environment)::

    python benchmarks/smtplib_bench.py

It times ``SMTP.sendmail`` over one open connection to an aiosmtpd server in a child
process, for 1 KB, 100 KB and 10 MB messages, and ``requests.Session.post`` of the same
bytes to a loopback HTTP server, in three modes run interleaved:

- ``off``: not instrumented;
- ``traces``: instrumented with the SDK's TracerProvider, a BatchSpanProcessor and an
  exporter that drops the spans, and no meter provider (a no-op meter);
- ``traces+metrics``: the same plus the SDK's MeterProvider with an in-memory reader.

It then measures the tracemalloc peak of one 10 MB send in each mode, times 1 KB sends
to a client that gets canned replies instead of talking to a server (the client's own
CPU work only), and prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shlex
import smtplib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sinks import sink
from _timing import (
    Mode,
    NoOpSpanExporter,
    Timings,
    interleave,
    machine_description,
    peak_memory,
)

from opentelemetry_instrumentation_smtp import SmtpInstrumentor

OFF, TRACES, METRICS = "off", "traces", "traces+metrics"
MODES = (OFF, TRACES, METRICS)

# Name, size in bytes, and timed calls per mode and round.
SIZES = (("1 KB", 1_000, 200), ("100 KB", 100_000, 40), ("10 MB", 10_000_000, 3))
TARGET_RATIO = {"1 KB": 1.05, "10 MB": 1.02}


def build_message(size: int) -> bytes:
    """Build a CRLF message of exactly ``size`` bytes with 78-character body lines."""
    header = (
        b"From: bench@example.test\r\nTo: sink@example.test\r\nSubject: benchmark\r\n"
        b"Message-ID: <bench@example.test>\r\n\r\n"
    )
    line = b"x" * 76 + b"\r\n"
    body_size = size - len(header)
    body = line * (body_size // len(line))
    body += b"y" * (body_size - len(body))
    return header + body


class ScriptedSMTP(smtplib.SMTP):
    """An SMTP client that talks to no server: every command gets a canned reply.

    Timing ``sendmail`` on it isolates the client's own CPU work, which the network
    and the server process hide in the loopback numbers.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_command = ""
        self.ehlo_resp = b"scripted"
        self.does_esmtp = True
        self.esmtp_features = {"size": "", "8bitmime": ""}

    def putcmd(self, cmd: str, args: str = "") -> None:
        self._last_command = cmd

    def send(self, s: object) -> None:
        return None

    def getreply(self) -> tuple[int, bytes]:
        if self._last_command == "data":
            self._last_command = "message"
            return 354, b"End data with <CR><LF>.<CR><LF>"
        return 250, b"2.0.0 Ok: queued as BENCH0001"


@dataclass
class Providers:
    """The SDK providers shared by every instrumented mode."""

    tracer: TracerProvider
    meter: SdkMeterProvider

    @classmethod
    def create(cls) -> Providers:
        tracer = TracerProvider()
        tracer.add_span_processor(BatchSpanProcessor(NoOpSpanExporter()))
        meter = SdkMeterProvider(metric_readers=[InMemoryMetricReader()])
        return cls(tracer, meter)


def modes_for(
    instrument: Callable[[TracerProvider, MeterProvider], None],
    uninstrument: Callable[[], None],
    providers: Providers,
) -> list[Mode]:
    nothing: Callable[[], None] = lambda: None  # noqa: E731
    return [
        Mode(OFF, nothing, nothing),
        Mode(TRACES, lambda: instrument(providers.tracer, NoOpMeterProvider()), uninstrument),
        Mode(METRICS, lambda: instrument(providers.tracer, providers.meter), uninstrument),
    ]


def smtp_modes(providers: Providers) -> list[Mode]:
    instrumentor = SmtpInstrumentor()

    def instrument(tracer: TracerProvider, meter: MeterProvider) -> None:
        instrumentor.instrument(tracer_provider=tracer, meter_provider=meter)

    return modes_for(instrument, instrumentor.uninstrument, providers)


def http_modes(providers: Providers) -> list[Mode]:
    instrumentor = RequestsInstrumentor()

    def instrument(tracer: TracerProvider, meter: MeterProvider) -> None:
        instrumentor.instrument(tracer_provider=tracer, meter_provider=meter)

    return modes_for(instrument, instrumentor.uninstrument, providers)


def run(rounds: int) -> tuple[dict[str, Timings], dict[str, Timings], dict[str, int]]:
    providers = Providers.create()
    smtp_results: dict[str, Timings] = {}
    http_results: dict[str, Timings] = {}
    peaks: dict[str, int] = {}
    with sink("smtp") as smtp_port, sink("http") as http_port:
        client = smtplib.SMTP("127.0.0.1", smtp_port)
        client.ehlo()
        session = requests.Session()
        url = f"http://127.0.0.1:{http_port}/"
        for name, size, calls in SIZES:
            message = build_message(size)

            def send_mail(payload: bytes = message) -> None:
                client.sendmail("bench@example.test", ["sink@example.test"], payload)

            def post(payload: bytes = message) -> None:
                session.post(url, data=payload).raise_for_status()

            print(f"timing {name} ...", file=sys.stderr, flush=True)
            smtp_results[name] = interleave(send_mail, smtp_modes(providers), rounds, calls)
            http_results[name] = interleave(post, http_modes(providers), rounds, calls)

        big = build_message(SIZES[-1][1])
        print("measuring peak memory ...", file=sys.stderr, flush=True)
        for mode in smtp_modes(providers):
            peaks[mode.name] = peak_memory(
                lambda: client.sendmail("bench@example.test", ["sink@example.test"], big), mode
            )
        client.quit()
        session.close()

    print("timing without a network ...", file=sys.stderr, flush=True)
    scripted = ScriptedSMTP()
    small = build_message(SIZES[0][1])
    smtp_results["1 KB, no network"] = interleave(
        lambda: scripted.sendmail("bench@example.test", ["sink@example.test"], small),
        smtp_modes(providers),
        rounds,
        1000,
    )
    providers.tracer.shutdown()
    providers.meter.shutdown()
    return smtp_results, http_results, peaks


def _ms(nanoseconds: float) -> str:
    return f"{nanoseconds / 1e6:.3f}"


def _ratio(timings: Timings, mode: str) -> str:
    low, high = timings.round_ratio_range(mode, OFF)
    return f"{timings.ratio(mode, OFF):.3f} ({low:.2f}-{high:.2f})"


def timing_table(results: dict[str, Timings]) -> list[str]:
    lines = [
        "| size | off (ms) | traces (ms) | traces / off | traces+metrics (ms) "
        "| traces+metrics / off | client CPU off / traces / traces+metrics (µs) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, timings in results.items():
        cpu = " / ".join(f"{timings.median_cpu(mode) / 1e3:.0f}" for mode in MODES)
        lines.append(
            f"| {name} | {_ms(timings.median_wall(OFF))} | {_ms(timings.median_wall(TRACES))} "
            f"| {_ratio(timings, TRACES)} | {_ms(timings.median_wall(METRICS))} "
            f"| {_ratio(timings, METRICS)} | {cpu} |"
        )
    return lines


def report(
    smtp: dict[str, Timings], http: dict[str, Timings], peaks: dict[str, int], rounds: int
) -> list[str]:
    command = shlex.join(["python", "benchmarks/smtplib_bench.py", *sys.argv[1:]])
    lines = ["## smtplib", "", f"Command: `{command}` ({rounds} rounds)", "", "Machine:", ""]
    lines += [f"- {line}" for line in machine_description()]
    lines += ["", "`SMTP.sendmail` over one connection (median of every call; ratio of", ""]
    lines[-2] += " medians, with the smallest and largest per-round ratio in brackets):"
    lines += timing_table(smtp)
    lines += ["", "Reference: opentelemetry-instrumentation-requests, `Session.post` of the"]
    lines += ["same bytes over one keep-alive connection to a loopback HTTP server:", ""]
    lines += timing_table(http)
    lines += ["", "Targets:", ""]
    for name, target in TARGET_RATIO.items():
        for mode in (TRACES, METRICS):
            ratio = smtp[name].ratio(mode, OFF)
            verdict = "met" if ratio <= target else "missed"
            lines.append(f"- {name}, {mode}: {ratio:.3f} (target <= {target}): {verdict}")
    size = SIZES[-1][1]
    lines += ["", "Peak memory of one 10 MB send (tracemalloc, bytes above the start):", ""]
    lines += ["| mode | peak | above off | above off / message size |", "| --- | --- | --- | --- |"]
    for mode, peak in peaks.items():
        above = peak - peaks[OFF]
        lines.append(f"| {mode} | {peak:,} | {above:,} | {above / size:.4f} |")
    lines += ["", "## Metrics cost", ""]
    lines += ["| size | traces (ms) | traces+metrics (ms) | difference (µs) | ratio |"]
    lines += ["| --- | --- | --- | --- | --- |"]
    for name, timings in smtp.items():
        traces, metrics = timings.median_wall(TRACES), timings.median_wall(METRICS)
        lines.append(
            f"| {name} | {_ms(traces)} | {_ms(metrics)} | {(metrics - traces) / 1e3:.1f} "
            f"| {metrics / traces:.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=10, help="rounds of interleaved modes (default 10)"
    )
    args = parser.parse_args()
    smtp, http, peaks = run(args.rounds)
    print("\n".join(report(smtp, http, peaks, args.rounds)))


if __name__ == "__main__":
    main()
