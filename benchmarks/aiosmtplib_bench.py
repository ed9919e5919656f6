"""Cost of the aiosmtplib instrumentation: sequential sends and 100 concurrent sends.

Run from the repository root (needs aiosmtpd and aiosmtplib in the environment)::

    python benchmarks/aiosmtplib_bench.py

Every send goes to an aiosmtpd server in a child process that discards the message. It
times, in three modes run interleaved on one event loop:

- ``SMTP.sendmail`` of a 1 KB and of a 10 MB message over one open connection;
- 100 concurrent 1 KB ``sendmail`` calls from 100 tasks over 10 open connections, which
  aiosmtplib serialises per connection (one timed call is the whole batch);
- a 1 KB ``sendmail`` on a client whose protocol object returns canned replies, which
  leaves only the client's own CPU work ("no network").

The modes are ``off`` (not instrumented), ``traces`` (the SDK's TracerProvider with a
BatchSpanProcessor and an exporter that drops the spans, and a no-op meter) and
``traces+metrics`` (the same plus the SDK's MeterProvider with an in-memory reader). It
also measures the tracemalloc peak of one 10 MB send per mode, and prints Markdown for
docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sinks import sink
from _timing import (
    Providers,
    Timings,
    build_message,
    interleave,
    machine_description,
    parse_rounds,
    peak_memory,
    peak_memory_table,
    smtp_modes,
    target_lines,
    timing_table,
)

SENDER = "bench@example.test"
RECIPIENTS = ["sink@example.test"]
CONCURRENT_SENDS = 100
CONNECTIONS = 10

# Name, message size in bytes, concurrent sends per timed call, timed calls per mode and round.
CASES = (
    ("1 KB", 1_000, 1, 200),
    ("10 MB", 10_000_000, 1, 3),
    (f"{CONCURRENT_SENDS} x 1 KB concurrent", 1_000, CONCURRENT_SENDS, 10),
)
NO_NETWORK = "1 KB, no network"
NO_NETWORK_CALLS = 1000


class CannedProtocol:
    """Stands in for aiosmtplib's SMTPProtocol: every command gets a positive reply at once."""

    is_connected = True

    async def execute_command(self, *args: bytes, timeout: float | None = None) -> Any:
        return aiosmtplib.SMTPResponse(250, "2.1.0 OK")

    async def execute_data_command(self, message: bytes, timeout: float | None = None) -> Any:
        return aiosmtplib.SMTPResponse(250, "2.0.0 Ok: queued as BENCH0001")


def canned_client() -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=25, start_tls=False)
    client.protocol = CannedProtocol()  # type: ignore[assignment]
    client.last_ehlo_response = aiosmtplib.SMTPResponse(250, "sink\nSIZE 67108864")
    return client


class Clients:
    """Open aiosmtplib connections, driven from one event loop outside any coroutine."""

    def __init__(self, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = port
        self.clients: list[aiosmtplib.SMTP] = []
        for _ in range(CONNECTIONS):
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            self.run(client.connect())
            self.run(client.ehlo())
            self.clients.append(client)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    def operation(self, message: bytes, concurrent: int) -> Callable[[], object]:
        """Return a call that sends ``concurrent`` copies of ``message`` and waits for all."""
        if concurrent == 1:
            client = self.clients[0]
            return lambda: self.run(client.sendmail(SENDER, RECIPIENTS, message))

        async def batch() -> None:
            await asyncio.gather(
                *(
                    self.clients[index % CONNECTIONS].sendmail(SENDER, RECIPIENTS, message)
                    for index in range(concurrent)
                )
            )

        return lambda: self.run(batch())

    def close(self) -> None:
        for client in self.clients:
            self.run(client.quit())
        self.loop.close()


def run(rounds: int) -> tuple[dict[str, Timings], dict[str, int]]:
    providers = Providers.create()
    results: dict[str, Timings] = {}
    peaks: dict[str, int] = {}
    with sink("smtp") as port:
        clients = Clients(port)
        for name, size, concurrent, calls in CASES:
            print(f"timing {name} ...", file=sys.stderr, flush=True)
            operation = clients.operation(build_message(size), concurrent)
            results[name] = interleave(operation, smtp_modes(providers), rounds, calls)

        print(f"timing {NO_NETWORK} ...", file=sys.stderr, flush=True)
        canned = canned_client()
        message = build_message(1_000)
        operation = lambda: clients.run(canned.sendmail(SENDER, RECIPIENTS, message))  # noqa: E731
        results[NO_NETWORK] = interleave(operation, smtp_modes(providers), rounds, NO_NETWORK_CALLS)

        print("measuring peak memory ...", file=sys.stderr, flush=True)
        big = clients.operation(build_message(10_000_000), 1)
        for mode in smtp_modes(providers):
            peaks[mode.name] = peak_memory(big, mode)
        clients.close()
    providers.shutdown()
    return results, peaks


def report(results: dict[str, Timings], peaks: dict[str, int], rounds: int) -> list[str]:
    command = shlex.join(["python", "benchmarks/aiosmtplib_bench.py", *sys.argv[1:]])
    lines = ["## aiosmtplib", "", f"Command: `{command}` ({rounds} rounds)", ""]
    lines += [f"aiosmtplib {aiosmtplib.__version__}. Machine:", ""]
    lines += [f"- {line}" for line in machine_description()]
    lines += [
        "",
        "`SMTP.sendmail` over one connection, and a batch of "
        f"{CONCURRENT_SENDS} concurrent sends from",
        f"{CONCURRENT_SENDS} tasks over {CONNECTIONS} connections (one timed call is the "
        "whole batch). Median of every",
        "call; ratio of medians, with the smallest and largest per-round ratio in brackets:",
        "",
    ]
    lines += timing_table(results, "case")
    lines += target_lines(results)
    lines += peak_memory_table(peaks, 10_000_000)
    return lines


def main() -> None:
    rounds = parse_rounds(__doc__.splitlines()[0])
    results, peaks = run(rounds)
    print("\n".join(report(results, peaks, rounds)))


if __name__ == "__main__":
    main()
