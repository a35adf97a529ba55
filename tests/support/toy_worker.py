"""``python -m tests.support.toy_worker ARGS``: ``live.py --worker ARGS`` with the toy backend instead of PCGNet.

The cluster tests and benchmarks start real worker processes with it, so the coordination is tested
end to end in seconds, without torch, and without the toy shipping in the package.
"""

from __future__ import annotations

import sys

from stream.cluster.cli import main
from tests.support.toy_backend import ToyBackend

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], backend_factory=lambda _args, worker_id: ToyBackend(worker_id)))
