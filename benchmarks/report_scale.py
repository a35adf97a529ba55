"""How ``pcgnet report`` scales with speakers and events (not a test).

Writes synthetic ``--events`` logs (emotion events spread over S speakers, a shift on every 5th utterance),
then runs ``python -m prepare.cli report LOG --out X.html [--png X.png]`` once per setting, each in its own
process, and prints the wall time and the peak RSS of that process. The issue this answers: 100 speakers
took 66 s, 400 speakers 234 s, 2,000 speakers over 300 s and 2.1 GB (one chart per speaker).

    .venv/bin/python benchmarks/report_scale.py                 # 100/400/1,000/2,000 speakers, up to 100k events
    .venv/bin/python benchmarks/report_scale.py --quick         # 1,000 speakers x 100k events only

The machine's CPUs are shared: the CPU model and the load average are printed with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.machine
LABELS = ["neutral", "happiness", "surprise", "fear", "sadness", "disgust", "anger"]
SETTINGS = [(100, 10_000), (400, 40_000), (1_000, 100_000), (2_000, 100_000)]


def write_log(path: Path, speakers: int, events: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    last: dict[int, str] = {}
    with path.open("w", encoding="utf-8") as f:
        for i in range(events):
            spk = min(int(rng.paretovariate(1.2)) - 1, speakers - 1) if i % 2 else rng.randrange(speakers)
            expr = rng.choice(LABELS)
            t0 = 2.0 * i
            f.write(json.dumps({
                "type": "emotion", "event_id": f"e{i}", "session": "bench", "utterance_id": f"u{i}",
                "speaker": f"speaker {spk:04d}", "t_start": t0, "t_end": t0 + 1.5, "index": i,
                "text": f"utterance {i} of a long meeting", "expression": expr, "confidence": rng.random(),
                "valence": rng.uniform(-1, 1), "arousal": rng.uniform(-1, 1), "latency_ms": rng.uniform(5, 80)}) + "\n")
            if i % 5 == 0 and spk in last and last[spk] != expr:
                f.write(json.dumps({
                    "type": "shift", "event_id": f"s{i}", "session": "bench", "utterance_id": f"u{i}",
                    "speaker": f"speaker {spk:04d}", "t_end": t0 + 1.5, "from": last[spk], "to": expr,
                    "probability": rng.random(), "previous_utterance_id": "u0"}) + "\n")
            last[spk] = expr


def run(log: Path, out: Path, png: bool) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS MiB of the report process, exit status)."""
    cmd = [sys.executable, "-m", "prepare.cli", "report", str(log), "--out", str(out)]
    if png:
        cmd += ["--png", str(out.with_suffix(".png"))]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=600)
    wall = time.perf_counter() - t0
    # ru_maxrss of children is the largest of any child so far: each setting runs larger than the last
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)
    return wall, cpu, ru1.ru_maxrss / 1024, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 1,000 speakers x 100k events")
    args = ap.parse_args()
    settings = [(1_000, 100_000)] if args.quick else SETTINGS
    from benchmarks.machine import header, load

    print(header())
    print("wall s = elapsed, cpu s = the report process's user+sys (less sensitive to the load)")
    print(f"{'speakers':>8} {'events':>8} {'log MB':>7} {'html wall s':>11} {'cpu s':>6} {'html MB':>8} "
          f"{'+png wall s':>11} {'cpu s':>6} {'peak RSS MiB':>12}  load")
    with tempfile.TemporaryDirectory(prefix="report_scale.") as tmp:
        for speakers, events in settings:
            log = Path(tmp) / f"ev_{speakers}_{events}.jsonl"
            write_log(log, speakers, events)
            html_s, html_cpu, _, rc1 = run(log, Path(tmp) / "a.html", png=False)
            png_s, png_cpu, peak, rc2 = run(log, Path(tmp) / "b.html", png=True)
            status = "" if rc1 == rc2 == 0 else f"  FAILED (exit {rc1}, {rc2})"
            print(f"{speakers:>8} {events:>8} {log.stat().st_size / 1e6:>7.1f} {html_s:>11.1f} {html_cpu:>6.1f} "
                  f"{(Path(tmp) / 'a.html').stat().st_size / 1e6:>8.1f} {png_s:>11.1f} {png_cpu:>6.1f} "
                  f"{peak:>12.0f}  {load()}{status}", flush=True)
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
