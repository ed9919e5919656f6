"""Run the milter with ``python -m opentelemetry_instrumentation_smtp.milter``."""

import sys

from .cli import main

sys.exit(main())
