"""Live text-encoding cost, one thread: the shipped model's text encoder per utterance, as the runtime calls it.

Real inputs: MELD dev dialogues (``--csv-dir``), exactly the ``UtteranceMedia`` the live session builds
(text, speaker, the dialogue so far). Each pass encodes the same utterances one call each; the table prints
the median and 95th/99th percentiles over all calls, the spread of per-pass medians, and the ratio to a
second encoder (``--against``, default the previous shipped one) timed in the same process on the same
utterances. ``--dtypes float32,bfloat16`` times the shipped encoder in each dtype instead (same process, same
utterances, passes alternating): bfloat16 wins only on a CPU with native bfloat16 (AVX512-BF16, AMX), which
is why ``--text-dtype auto`` decides by the CPU (docs/live.md, "CPU classes"). Also prints the install size
(the virtual environment's site-packages plus the shipped checkpoints); the header names the CPU, its flags
and the load.

    .venv/bin/python benchmarks/text_encoding.py [--utterances 200] [--passes 5]
    .venv/bin/python benchmarks/text_encoding.py --dtypes float32,bfloat16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def du(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed: a shared venv counts once)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def make_encoders(args: argparse.Namespace, create: Any) -> dict[str, Any]:
    """Label -> encoder: ``--extractor`` in each of ``--dtypes``, else ``--extractor`` and ``--against``."""
    if args.dtypes:
        return {f"{args.extractor} {d}": create(args.extractor, dtype=d) for d in args.dtypes.split(",")}
    return {name: create(name) for name in dict.fromkeys([args.extractor, args.against])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv-dir", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    ap.add_argument("--extractor", default=None, help="registry name (default: what checkpoints/default reads)")
    ap.add_argument("--against", default="minilm-l6-meld", help="the encoder timed beside it, same process")
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--dtypes", default=None, help="comma-separated dtypes of --extractor to time against each other")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from benchmarks.machine import header
    from extractors.base import UtteranceMedia
    from extractors.registry import create
    from pcgnet.checkpoint import read_meta
    from prepare.meld import dialogue_media, read_meld

    torch.set_num_threads(1)
    if args.extractor is None:
        args.extractor = read_meta(ROOT / "checkpoints" / "default")["extractors"]["t"]["name"]
    print(header(extractor=args.extractor))
    encoders = make_encoders(args, create)
    media: list[UtteranceMedia] = []
    for d in read_meld(args.csv_dir).values():
        if d.split == "dev":
            media.extend(dialogue_media(d))  # text, speaker and the dialogue so far, as the live session has
        if len(media) >= args.utterances:
            break
    media = media[: args.utterances]
    for ex in encoders.values():
        for m in media[:10]:  # warm-up
            ex(m)

    times: dict[str, list[float]] = {name: [] for name in encoders}
    medians: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.passes):  # passes alternate between the encoders, so load changes hit both
        for name, ex in encoders.items():
            per = []
            for m in media:
                t0 = time.perf_counter()
                ex(m)
                per.append(1000 * (time.perf_counter() - t0))
            times[name].extend(per)
            medians[name].append(float(np.median(per)))
    print(f"{len(media)} MELD dev utterances x {args.passes} passes, one call per utterance, 1 torch thread")
    w = max(22, *map(len, encoders))
    print(f"{'encoder':<{w}} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}   per-pass p50 min..max")
    for name in encoders:
        p50, p95, p99 = np.percentile(times[name], [50, 95, 99])
        print(f"{name:<{w}} {p50:8.1f} {p95:8.1f} {p99:8.1f}   {min(medians[name]):.1f}..{max(medians[name]):.1f}")
    if len(encoders) == 2:
        a, b = (np.array(times[n]) for n in encoders)
        print(f"{' / '.join(encoders)}: p50 {np.median(a) / np.median(b):.2f}x, "
              f"p95 {np.percentile(a, 95) / np.percentile(b, 95):.2f}x")
    venv = Path(sys.prefix)
    site = next(venv.glob("lib/python*/site-packages"), venv)
    ck = ROOT / "checkpoints"
    print(f"install size: site-packages {du(site) / 1e6:,.0f} MB ({site}), checkpoints/ {du(ck) / 1e6:.1f} MB")
    print(f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
