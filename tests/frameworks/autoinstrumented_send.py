"""Send one message with smtplib and no tracing code, for ``opentelemetry-instrument``.

The server's port comes from the environment variable ``SMTP_PORT``. The send runs with
a baggage entry in the context, which must not reach the message. The script writes to
standard error whether aiosmtplib is importable, because standard output carries the
console exporter's spans.
"""

from __future__ import annotations

import importlib.util
import os
import smtplib
import sys
from email.message import EmailMessage

from opentelemetry import baggage, context


def main() -> None:
    message = EmailMessage()
    message["From"] = "cron@example.com"
    message["To"] = "ops@example.com"
    message["Subject"] = "Nightly report"
    message["Message-ID"] = "<nightly.1@example.com>"
    message.set_content("All jobs finished.\n")

    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with smtplib.SMTP("127.0.0.1", int(os.environ["SMTP_PORT"]), timeout=30) as client:
            client.send_message(message)
    finally:
        context.detach(token)

    available = importlib.util.find_spec("aiosmtplib") is not None
    print(f"aiosmtplib importable: {available}", file=sys.stderr)


if __name__ == "__main__":
    main()
