"""The demo runs end to end in a subprocess and checks its own trace."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_prints_trace_and_succeeds() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "opentelemetry_instrumentation_smtp.demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    output = completed.stdout
    assert "POST /password-reset [INTERNAL]" in output
    assert re.search(r"^  smtp send \[CLIENT\] [\d.]+ ms  span_id=([0-9a-f]{16})$", output, re.M)
    send_id = re.search(r"smtp send \[CLIENT\] [\d.]+ ms  span_id=([0-9a-f]{16})", output)
    assert send_id is not None
    header = re.search(r"^  traceparent: 00-[0-9a-f]{32}-([0-9a-f]{16})-0[0-3]$", output, re.M)
    assert header is not None
    assert header.group(1) == send_id.group(1)
    assert "smtp.queue_id = '4DemoQ1d'" in output
    assert output.rstrip().splitlines()[-1].startswith("OK: the received traceparent")
