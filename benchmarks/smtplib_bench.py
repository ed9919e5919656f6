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

It then measures the tracemalloc peak of one 10 MB send in each mode. It also times 1 KB
sends to a client that gets canned replies instead of talking to a server, which leaves
only the client's own CPU work. It prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import shlex
import smtplib
import sys
from pathlib import Path

import requests
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sinks import sink
from _timing import (
    METRICS,
    TRACES,
    Mode,
    Providers,
    Timings,
    build_message,
    format_ms,
    interleave,
    machine_description,
    modes_for,
    parse_rounds,
    peak_memory,
    peak_memory_table,
    smtp_modes,
    target_lines,
    timing_table,
)

# Name, size in bytes, and timed calls per mode and round.
SIZES = (("1 KB", 1_000, 200), ("100 KB", 100_000, 40), ("10 MB", 10_000_000, 3))


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
    providers.shutdown()
    return smtp_results, http_results, peaks


def report(
    smtp: dict[str, Timings], http: dict[str, Timings], peaks: dict[str, int], rounds: int
) -> list[str]:
    command = shlex.join(["python", "benchmarks/smtplib_bench.py", *sys.argv[1:]])
    lines = ["## smtplib", "", f"Command: `{command}` ({rounds} rounds)", "", "Machine:", ""]
    lines += [f"- {line}" for line in machine_description()]
    lines += [
        "",
        "`SMTP.sendmail` over one connection (median of every call; ratio of medians, "
        "with the smallest and largest per-round ratio in brackets):",
        "",
    ]
    lines += timing_table(smtp, "size")
    lines += ["", "Reference: opentelemetry-instrumentation-requests, `Session.post` of the"]
    lines += ["same bytes over one keep-alive connection to a loopback HTTP server:", ""]
    lines += timing_table(http, "size")
    lines += target_lines(smtp)
    lines += peak_memory_table(peaks, SIZES[-1][1])

    lines += ["", "## Metrics cost", ""]
    lines += ["| size | traces (ms) | traces+metrics (ms) | difference (µs) | ratio |"]
    lines += ["| --- | --- | --- | --- | --- |"]
    for name, timings in smtp.items():
        traces, metrics = timings.median_wall(TRACES), timings.median_wall(METRICS)
        lines.append(
            f"| {name} | {format_ms(traces)} | {format_ms(metrics)} "
            f"| {(metrics - traces) / 1e3:.1f} | {metrics / traces:.3f} |"
        )
    return lines


def main() -> None:
    rounds = parse_rounds(__doc__.splitlines()[0])
    smtp, http, peaks = run(rounds)
    print("\n".join(report(smtp, http, peaks, rounds)))


if __name__ == "__main__":
    main()
