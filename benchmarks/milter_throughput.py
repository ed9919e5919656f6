"""Milter throughput and per-message latency, driven by the in-repo MTA driver.

Run from the repository root::

    python benchmarks/milter_throughput.py [--pymilter-python /tmp/pymilter-venv/bin/python]

The milter runs alone in a child process (benchmarks/milter_server.py): spans go through
the bounded batch span processor to an exporter that drops them. The driver, in this
process, sends Postfix-like messages (6 header fields with a traceparent, a 1 KB body,
the macros Postfix sends) over one connection, then over 50 concurrent connections.
Latency is the time from MAIL FROM to the reply to end of message. With
``--pymilter-python``, the same load also goes to benchmarks/milter_pymilter_app.py, a
minimal pymilter milter run by that interpreter. It prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.milter.driver import MtaDriver  # noqa: E402
from tests.milter.postfix import free_port  # noqa: E402

BODY = (b"x" * 78 + b"\r\n") * 13
HEADERS = [
    ("From", "sender@example.com"),
    ("To", "rcpt@example.org"),
    ("Subject", "benchmark"),
    ("Date", "Fri, 04 Dec 2026 12:00:00 +0000"),
    ("Message-ID", "<bench@example.com>"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
]


async def one_connection(port: int, messages: int, latencies: list[float]) -> None:
    driver = await MtaDriver.open(("127.0.0.1", port))
    await driver.start_session()
    for number in range(messages):
        started = time.perf_counter()
        await driver.send_message(HEADERS, BODY, queue_id=f"4B{number:08X}")
        latencies.append(time.perf_counter() - started)
    await driver.quit()


async def load(
    port: int, connections: int, messages_per_connection: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(one_connection(port, messages_per_connection, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    return connections * messages_per_connection / elapsed, latencies


def start_milter(command: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{command} did not start")
    return process


def measure(name: str, command: list[str], port: int, rounds: int) -> list[str]:
    rows = []
    for connections, per_connection in ((1, 3000), (50, 100)):
        best_rate = 0.0
        all_latencies: list[float] = []
        process = start_milter(command)
        try:
            time.sleep(0.5)
            asyncio.run(load(port, connections, 20))  # warm-up
            for _ in range(rounds):
                rate, latencies = asyncio.run(load(port, connections, per_connection))
                best_rate = max(best_rate, rate)
                all_latencies.extend(latencies)
        finally:
            process.terminate()
            process.wait(timeout=30)
        all_latencies.sort()
        p50 = statistics.median(all_latencies) * 1e6
        p99 = all_latencies[int(len(all_latencies) * 0.99)] * 1e6
        rows.append(f"| {name} | {connections} | {best_rate:,.0f} | {p50:,.0f} | {p99:,.0f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pymilter-python", help="interpreter of a venv with pymilter and opentelemetry-sdk"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="measured rounds per case (default: 3)"
    )
    args = parser.parse_args()
    rows = [
        "| milter | connections | messages/s (best round) | p50 latency (µs) | p99 latency (µs) |",
        "|---|---:|---:|---:|---:|",
    ]
    port = free_port()
    rows += measure(
        "this project",
        [sys.executable, "benchmarks/milter_server.py", str(port)],
        port,
        args.rounds,
    )
    if args.pymilter_python:
        port = free_port()
        rows += measure(
            "pymilter 1.0.5",
            [args.pymilter_python, "benchmarks/milter_pymilter_app.py", str(port)],
            port,
            args.rounds,
        )
    print()
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
