"""Under ``opentelemetry-instrument``: smtplib is traced whether or not aiosmtplib exists.

The environment without aiosmtplib is a real virtual environment whose site-packages
links every distribution of the running environment except aiosmtplib, so it needs no
package index and takes well under a second to build.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path
from typing import Any

import pytest

from tests.aiosmtplib.support import split_traceparent
from tests.smtpserver import RecordingServer

SMTPLIB_SCRIPT = """
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as client:
    client.sendmail("a@example.com", ["b@example.com"], b"Subject: auto\\r\\n\\r\\nbody\\r\\n")
"""

AIOSMTPLIB_SCRIPT = """
import asyncio, sys
import aiosmtplib
asyncio.run(aiosmtplib.send(
    b"Subject: auto\\r\\n\\r\\nbody\\r\\n", sender="a@example.com",
    recipients=["b@example.com"], hostname="127.0.0.1", port=int(sys.argv[1]),
))
"""

# Executed at interpreter start through a .pth file, so that INFO lines logged while
# opentelemetry-instrument loads the instrumentors reach standard error.
LOGGING_PTH = (
    "import logging; logging.basicConfig(level=logging.INFO, "
    "format='LOG %(name)s %(levelname)s %(message)s')\n"
)

ADAPTER_LOGGER = "opentelemetry_instrumentation_smtp._aiosmtplib"


def venv_without_aiosmtplib(root: Path) -> Path:
    """Create a virtual environment with everything installed here but aiosmtplib."""
    venv.create(root, with_pip=False, symlinks=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = root / "lib" / version / "site-packages"
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.lower().startswith("aiosmtplib"):
            continue
        (site_packages / entry.name).symlink_to(entry)
    (site_packages / "zz_test_logging.pth").write_text(LOGGING_PTH)

    write_console_script(root / "bin", root / "bin" / "python")
    return root / "bin"


def write_console_script(bin_dir: Path, python: Path) -> None:
    """Write ``opentelemetry-instrument`` into ``bin_dir`` as pip would, for ``python``."""
    script = bin_dir / "opentelemetry-instrument"
    script.write_text(
        f"#!{python}\n"
        "import sys\n"
        "from opentelemetry.instrumentation.auto_instrumentation import run\n"
        "sys.exit(run())\n"
    )
    script.chmod(0o755)


def run_instrumented(
    bin_dir: Path, python: Path, code: str, port: int, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "send.py"
    script.write_text(code)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    environment.update(
        {
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "auto-instrument-test",
            "PATH": f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}",
        }
    )
    environment.pop("PYTHONPATH", None)
    return subprocess.run(
        [
            str(bin_dir / "opentelemetry-instrument"),
            str(python),
            str(script),
            str(port),
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def exported_spans(stdout: str) -> list[dict[str, Any]]:
    """Parse the console exporter's output: JSON objects, one after another."""
    decoder = json.JSONDecoder()
    spans: list[dict[str, Any]] = []
    position = 0
    while True:
        start = stdout.find("{", position)
        if start < 0:
            return spans
        value, position = decoder.raw_decode(stdout, start)
        spans.append(value)


def check_one_traced_send(
    result: subprocess.CompletedProcess[str], server: RecordingServer
) -> None:
    assert result.returncode == 0, result.stderr
    sends = [span for span in exported_spans(result.stdout) if span["name"] == "smtp send"]
    assert len(sends) == 1, result.stdout
    line, rest = split_traceparent(server.messages[0].content)
    assert rest == b"Subject: auto\r\n\r\nbody\r\n"
    match = re.match(rb"traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-", line)
    assert match is not None
    assert sends[0]["context"]["trace_id"] == "0x" + match.group(1).decode()
    assert sends[0]["context"]["span_id"] == "0x" + match.group(2).decode()


@pytest.mark.slow
def test_smtplib_traced_without_aiosmtplib(server: RecordingServer, tmp_path: Path) -> None:
    bin_dir = venv_without_aiosmtplib(tmp_path / "venv")
    missing = subprocess.run(
        [str(bin_dir / "python"), "-c", "import aiosmtplib"], capture_output=True, check=False
    )
    assert missing.returncode != 0

    result = run_instrumented(bin_dir, bin_dir / "python", SMTPLIB_SCRIPT, server.port, tmp_path)

    check_one_traced_send(result, server)
    adapter_lines = [line for line in result.stderr.splitlines() if ADAPTER_LOGGER in line]
    assert adapter_lines == [
        f"LOG {ADAPTER_LOGGER} INFO aiosmtplib is not installed, so only smtplib is instrumented"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_aiosmtplib_traced_when_installed(server: RecordingServer, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_console_script(bin_dir, Path(sys.executable))
    result = run_instrumented(
        bin_dir, Path(sys.executable), AIOSMTPLIB_SCRIPT, server.port, tmp_path
    )

    check_one_traced_send(result, server)
    assert "Traceback" not in result.stderr
