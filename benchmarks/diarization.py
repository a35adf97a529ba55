"""Online diarization on espeak-ng voiced MELD dialogues, fed the true segments in order.

    python -m tests.voicing --split dev --dialogues 200 --min-speakers 2 --out runs/voiced/dev
    python benchmarks/diarization.py runs/voiced/dev [--dialogues 20] [--sweep]

Figures, over all dialogues (each one session, one fresh clusterer):

* pairs: of the utterance pairs a shift event compares (an utterance and the previous one given the same
  label), the share that really are one person (the issue's metric; all-one-label scores the share of
  consecutive turns by one person, a new label per utterance scores no pairs at all);
* pair recall: of the true pairs (an utterance and its speaker's previous one), the share the labels keep;
* purity / coverage: utterance-weighted cluster purity and speaker coverage;
* speakers: mean labels found - true speakers per dialogue, and the share of dialogues with exactly right.

Rows: the d-vector alone at 0.78 (the clusterer before voice prints), what the timbre, the pitch and the late
merging each add, the default, and the default with the true number of speakers as the cap (``--speakers N``).
``--sweep`` shows the trade-off over the threshold (tune on train, report on dev). Voice prints are computed
once per utterance (the time is reported).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extractors.diarize import ClusterParams, SpeakerClusterer, VoicePrint  # noqa: E402
from stream.record import read_session  # noqa: E402
from tests.voicing import SpeakerScores  # noqa: E402

# the clusterer before voice prints: d-vector cosine >= 0.78, no pitch, no short-utterance rule, no merging
BASELINE = ClusterParams(threshold=0.78, merge_threshold=None, w_timbre=0.0, w_pitch=0.0, short_slope=0.0)


@dataclass
class Dialogue:
    name: str
    speakers: list[str]  # true speaker per utterance
    prints: list[VoicePrint]


HEADER = f"{'':<34} {'pairs':>17} {'recall':>7} {'purity':>7} {'cover':>7} {'spk+':>6} {'exact':>6}"


def load(folders: list[Path], min_speakers: int, limit: int) -> tuple[list[Dialogue], list[float]]:
    """Voice prints of the first ``limit`` (0: all) sessions with >= ``min_speakers``, and the time of each."""
    from tqdm import tqdm

    from extractors.speaker import VoicePrinter

    sessions = [rec for rec in map(read_session, folders) if len({u.speaker for u in rec.utterances}) >= min_speakers]
    printer = VoicePrinter()
    out, times = [], []
    for rec in tqdm(sessions[: limit or None], desc="voice prints", unit="dialogue"):
        if rec.audio is None or rec.sample_rate is None:
            raise SystemExit(f"{rec.path}: no audio.wav")
        prints = []
        for u in rec.utterances:
            clip = rec.audio[int(round(u.t_start * rec.sample_rate)):int(round(u.t_end * rec.sample_rate))]
            t0 = time.perf_counter()
            prints.append(printer(clip, rec.sample_rate))
            times.append(time.perf_counter() - t0)
        out.append(Dialogue(rec.path.name, [u.speaker for u in rec.utterances], prints))
    return out, times


def score(dialogues: list[Dialogue], params: ClusterParams, *, cap_true: bool = False) -> SpeakerScores:
    s = SpeakerScores()
    for d in dialogues:
        c = SpeakerClusterer(params, max_speakers=len(set(d.speakers)) if cap_true else 9)
        s.add(d.speakers, [c.assign(p) for p in d.prints])
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sessions", type=Path, help="folder of voiced session folders (python -m tests.voicing ...)")
    ap.add_argument("--dialogues", type=int, default=0, help="use the first N (default: all)")
    ap.add_argument("--min-speakers", type=int, default=2)
    ap.add_argument("--sweep", action="store_true", help="also sweep the threshold (d-vector alone and voice prints)")
    args = ap.parse_args(argv)
    from benchmarks.machine import header
    print(header(), flush=True)  # CPU, flags, text dtype, load: speed figures depend on them
    import torch

    torch.set_num_threads(1)
    folders = sorted((p for p in args.sessions.iterdir() if (p / "meta.json").is_file()),
                     key=lambda p: (len(p.name), p.name))
    if not folders:
        raise SystemExit(f"{args.sessions}: no session folders (make them with python -m tests.voicing)")
    dialogues, times = load(folders, args.min_speakers, args.dialogues)
    n_utt = sum(len(d.speakers) for d in dialogues)
    n_spk = np.array([len(set(d.speakers)) for d in dialogues])
    print(f"{args.sessions}: {len(dialogues)} dialogues, {n_utt} utterances, speakers per dialogue "
          f"{n_spk.min()}-{n_spk.max()} (mean {n_spk.mean():.1f})")
    print(f"voice print per utterance: p50 {1000 * np.median(times):.0f} ms, p95 {1000 * np.percentile(times, 95):.0f}"
          f" ms over {len(times)}")
    same, other = [], []
    for d in dialogues:
        for i, j in itertools.combinations(range(len(d.prints)), 2):
            cos = float(d.prints[i].dvector @ d.prints[j].dvector)
            (same if d.speakers[i] == d.speakers[j] else other).append(cos)
    print(f"d-vector cosine of utterance pairs: one speaker p10/p50 {np.percentile(same, 10):.2f}/"
          f"{np.median(same):.2f}, two speakers p50/p90 {np.median(other):.2f}/{np.percentile(other, 90):.2f}")
    print(HEADER)
    print(score(dialogues, BASELINE).row("d-vector alone, 0.78"))
    for name, p in (("d-vector + timbre", replace(ClusterParams(), w_pitch=0.0)),
                    ("d-vector + timbre + pitch, no merge", replace(ClusterParams(), merge_threshold=None))):
        print(score(dialogues, p).row(name))
    print(score(dialogues, ClusterParams()).row("voice prints (default)"))
    print(score(dialogues, ClusterParams(), cap_true=True).row("voice prints, cap = true speakers"))
    if args.sweep:  # the trade-off: a higher threshold buys pair accuracy with lost pairs and extra speakers
        for name, params in (("d-vector alone", BASELINE), ("voice prints", ClusterParams())):
            cells = []
            for th in (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85):
                merge = None if params.merge_threshold is None else max(params.merge_threshold, th)
                s = score(dialogues, replace(params, threshold=th, merge_threshold=merge))
                cells.append(f"{th}: {100 * s.pair_accuracy:.0f}/{100 * s.pair_recall:.0f}/{s.extra / s.dialogues:+.1f}")
            print(f"sweep {name:<15} threshold: pairs/recall/speakers+  " + "  ".join(cells))
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
