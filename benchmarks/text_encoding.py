"""Live text-encoding cost, one thread: the shipped context-reading encoder per utterance, as the runtime calls it.

Real inputs: MELD dev dialogues (``--csv-dir``), each utterance with the 3 utterances before it, exactly
the ``UtteranceMedia`` the live session builds. Each pass encodes the same utterances one call each; the
table prints the median and 95th percentile over all calls, the spread of per-pass medians, and the ratio
to the same encoder reading the utterance alone (same process, same utterances). Also prints the install
size (the virtual environment's site-packages plus the shipped checkpoints) and the machine load.

    .venv/bin/python benchmarks/text_encoding.py [--utterances 200] [--passes 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv-dir", type=Path, default=ROOT.parent.parent / "shared" / "data" / "meld")
    ap.add_argument("--extractor", default="minilm-l6-meld-ctx")
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--passes", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from extractors.base import UtteranceMedia
    from extractors.registry import create
    from prepare.meld import dialogue_media, read_meld

    torch.set_num_threads(1)
    ex = create(args.extractor)
    media: list[UtteranceMedia] = []
    for d in read_meld(args.csv_dir).values():
        if d.split == "dev":
            media.extend(dialogue_media(d))
        if len(media) >= args.utterances:
            break
    media = media[: args.utterances]
    alone = [UtteranceMedia(text=m.text, speaker=m.speaker) for m in media]
    for m in media[:10]:  # warm-up
        ex(m)

    def run(items: list[UtteranceMedia]) -> tuple[np.ndarray, list[float]]:
        times, medians = [], []
        for _ in range(args.passes):
            per = []
            for m in items:
                t0 = time.perf_counter()
                ex(m)
                per.append(1000 * (time.perf_counter() - t0))
            times.extend(per)
            medians.append(float(np.median(per)))
        return np.array(times), medians

    # Interleaved passes would be fairer under changing load; alternating whole runs keeps each warm.
    ctx, ctx_medians = run(media)
    solo, solo_medians = run(alone)
    n_past = getattr(ex, "context_utterances", 0)
    print(f"{args.extractor}: {len(media)} MELD dev utterances x {args.passes} passes, 1 torch thread")
    print(f"{'input':<34} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}   per-pass p50 min..max")
    for name, t, meds in ((f"utterance + {n_past} before it (live)", ctx, ctx_medians),
                          ("utterance alone", solo, solo_medians)):
        p50, p95, p99 = np.percentile(t, [50, 95, 99])
        print(f"{name:<34} {p50:8.1f} {p95:8.1f} {p99:8.1f}   {min(meds):.1f}..{max(meds):.1f}")
    print(f"context / alone, p50: {np.median(ctx) / np.median(solo):.2f}x; p95: "
          f"{np.percentile(ctx, 95) / np.percentile(solo, 95):.2f}x")
    venv = Path(sys.prefix)
    site = next(venv.glob("lib/python*/site-packages"), venv)
    ck = ROOT / "checkpoints"
    print(f"install size: site-packages {du(site) / 1e6:,.0f} MB ({site}), checkpoints/ {du(ck) / 1e6:.1f} MB")
    print(f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
