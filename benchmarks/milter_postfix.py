"""End-to-end Postfix throughput with and without the milter, as a ratio.

Run from the repository root, as root (it starts two private Postfix instances)::

    python benchmarks/milter_postfix.py [--messages 400] [--rounds 3]

Both instances relay to the same local aiosmtpd sink. One calls the milter, which runs
alone in a child process (benchmarks/milter_server.py); the other has no milter. Each
round sends ``--messages`` messages from 4 threads, each over one SMTP session, to one
instance and then the other (the order alternates), and times until the sink has them all.
It prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.milter.postfix import Postfix, Sink, free_port  # noqa: E402

THREADS = 4
MESSAGE = (
    "From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: benchmark\r\n"
    "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
    + "x" * 1000
    + "\r\n"
)


def send(port: int, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        for _ in range(count):
            client.sendmail("sender@example.com", ["rcpt@example.org"], MESSAGE)


def one_round(postfix: Postfix, sink: Sink, messages: int) -> float:
    before = len(sink.messages)
    started = time.perf_counter()
    threads = [
        threading.Thread(target=send, args=(postfix.smtp_port, messages // THREADS))
        for _ in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.wait_for(before + messages // THREADS * THREADS, timeout=600)
    return messages / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per instance")
    args = parser.parse_args()

    milter_port = free_port()
    milter = subprocess.Popen(
        [sys.executable, "benchmarks/milter_server.py", str(milter_port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert milter.stdout is not None and milter.stdout.readline().strip() == "ready"
    sink = Sink().start()
    directories = [Path(tempfile.mkdtemp(prefix="postfix-bench-")) for _ in range(2)]
    with_milter = Postfix(
        directories[0], relay_port=sink.port, milter=f"inet:127.0.0.1:{milter_port}"
    )
    without_milter = Postfix(directories[1], relay_port=sink.port, milter=None)
    rates: dict[str, list[float]] = {"with milter": [], "without milter": []}
    try:
        with_milter.start()
        without_milter.start()
        one_round(with_milter, sink, 40)
        one_round(without_milter, sink, 40)
        for number in range(args.rounds):
            pairs = [("with milter", with_milter), ("without milter", without_milter)]
            if number % 2:
                pairs.reverse()
            for name, instance in pairs:
                rates[name].append(one_round(instance, sink, args.messages))
                print(f"{name}: {rates[name][-1]:.0f} messages/s", flush=True)
    finally:
        with_milter.stop()
        without_milter.stop()
        sink.stop()
        milter.terminate()
        milter.wait(timeout=30)
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)

    best_with = max(rates["with milter"])
    best_without = max(rates["without milter"])
    version = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print()
    print(f"Postfix {version}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print("| Postfix | messages/s (best of rounds) | all rounds |")
    print("|---|---:|---|")
    for name, values in rates.items():
        listed = ", ".join(f"{rate:,.0f}" for rate in values)
        print(f"| {name} | {max(values):,.0f} | {listed} |")
    print(f"\nRatio with/without: {best_with / best_without:.2f}")


if __name__ == "__main__":
    main()
