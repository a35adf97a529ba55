#!/usr/bin/env python3
"""Live conversation emotion analyzer: ``python live.py --help`` (docs/live.md)."""

from __future__ import annotations

import sys

from stream.app import main

if __name__ == "__main__":
    sys.exit(main())
