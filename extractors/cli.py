"""`pcgnet extractors`: the feature extractors and live-audio tools, their dims and whether models are present.

(`pcgnet extract`, recorded sessions -> feature pickles, is :mod:`prepare.extract`.)
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    q = subparsers.add_parser("extractors", help="list feature extractors, their dims and whether models are present")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from extractors import registry
    from extractors.cpu import detect

    cap = detect()
    infos = registry.available(include_tools=True, capability=cap)
    if args.json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="extractors (modality t/a/v = features; vad/asr/speaker = live-audio tools)")
    table.caption = (f"cpu: {cap.describe()}; dtype = what --text-dtype auto picks here (bfloat16 only with "
                     "native support, docs/live.md)")
    for col in ("name", "modality", "dim", "dtype", "models present", "note"):
        table.add_column(col)
    for i in infos:
        table.add_row(i.name, i.modality, "-" if i.dim is None else str(i.dim), i.dtype or "-",
                      "yes" if i.models_present else "no", i.note)
    Console(width=170).print(table)
    return 0
