#!/usr/bin/env python3
"""Live conversation emotion analyzer: ``python live.py --help`` (docs/live.md)."""

from __future__ import annotations

import sys

from stream.app import main

if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:  # headless scale-out worker: `live.py --worker --help` (docs/deployment.md)
        from stream.cluster.cli import main as worker_main

        sys.exit(worker_main([a for a in sys.argv[1:] if a != "--worker"]))
    sys.exit(main())
