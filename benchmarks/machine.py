"""The header every benchmark prints first: the CPU, its flags of interest, the text encoder's dtype, the load.

Why: speed figures differ by CPU class (native bfloat16 or not: 2.8x on the text encoder) and by what else
the machine runs; a number without them cannot be compared (docs/live.md, "CPU classes").

    from benchmarks.machine import header; print(header())          # or: print(header(text_dtype="float32"))
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before benchmarks/ itself, whose extractors.py would shadow the package


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere the machine type)."""
    from extractors.cpu import detect

    return detect().model


def header(text_dtype: str | None = None, extractor: str = "mpnet-base-meld") -> str:
    """Two lines: the CPU (model, flags of interest, native bfloat16 or not, cores) and the load average; the
    text dtype in use (``text_dtype``, else what ``auto`` picks here for ``extractor``)."""
    from extractors.cpu import detect
    from extractors.registry import auto_dtype

    cap = detect()
    dtype = text_dtype or f"{auto_dtype(extractor, cap)} ({extractor}, auto)"
    return (f"cpu: {cap.describe()}, {os.cpu_count()} cores\n"
            f"text encoder dtype: {dtype}; load average (1/5/15 min): {load()}")


if __name__ == "__main__":
    print(header())
