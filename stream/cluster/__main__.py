"""``python -m stream.cluster`` = ``live.py --worker``."""

from __future__ import annotations

import sys

from stream.cluster.cli import main

sys.exit(main())
