"""Who spoke when, through the live path's diarization (silero -> speaker turns -> online clustering), per material.

    python benchmarks/diarization.py                          # all materials, held-out Fish Fillets levels
    python benchmarks/diarization.py --material fillets --tune  # the tuning levels instead
    python benchmarks/diarization.py --material espeak --limit 10

Materials (generated here, nothing committed; turns 0.1-0.3 s apart, under the VAD's end-of-turn silence):

* ``fillets``: real acted Czech dialogue (Debian ``fillets-ng-data-cs``, tests/realvoices.py), the first 14
  lines of each level; the held-out levels (corals, floppy, ...) unless ``--tune``;
* ``flite``: MELD dev dialogues voiced with flite's slt/rms/awb/kal16; ``espeak``: the same with espeak-ng.

Per material and setting (defaults; ``--speakers N`` = the true count as a cap; ``--speakers-exact N``), over all
conversations: speakers found = true (share of conversations) and found - true on average; DER (10 ms frames,
no collar, best one-to-one name mapping) with its parts (missed speech, false alarm, wrong speaker); pair
accuracy (of the pairs a shift event compares, the share that are one person) and pair recall (of the true
pairs, the share the labels keep), over the found utterances; the CPU seconds per second of audio (VAD,
turns, voice prints, clustering; one thread), with the CPU model and load average. ``--before`` adds the path
as it was (espeak-tuned bars, one speaker per VAD segment).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extractors.diarize import SYNTHETIC_VOICES, ClusterParams  # noqa: E402
from tests.diarscore import DerParts, add_pairs, der_parts  # noqa: E402
from tests.voicing import SpeakerScores, VoicedDialogue  # noqa: E402

FLITE = ("flite:slt", "flite:rms", "flite:kal16", "flite:awb")
ESPEAK = ("en-us+m3", "en-us+f3", "en+m4", "en+f2", "en-us+m5")


def fillets(tune: bool, limit: int, vad: object) -> list[VoicedDialogue]:
    from tests.realvoices import HELD_OUT, level_conversation, tuning_levels

    names = tuning_levels()[::7] if tune else list(HELD_OUT)
    out = [c for c in (level_conversation(lv, vad=vad, seed=i) for i, lv in enumerate(names)) if c is not None]
    return out[: limit or None]


def meld(voices: tuple[str, ...], limit: int) -> list[VoicedDialogue]:
    import numpy as np

    from pcgnet.config import MELD_LABELS
    from tests.voicing import Line, meld_dialogues, voice_lines

    rng = np.random.default_rng(0)
    out = []
    for d in meld_dialogues("dev", min_speakers=2)[: limit or 10]:
        lines = [Line(u.speaker, u.text, MELD_LABELS[u.label]) for u in d.utterances[:12]]
        if len(lines) < 2 or len({x.speaker for x in lines}) > len(voices):
            continue
        gaps = [float(g) for g in rng.uniform(0.1, 0.3, len(lines) - 1)]
        out.append(voice_lines(lines, name=f"meld-dev-{d.dialogue}", voices=voices, gaps=gaps))
    return out


def run(material: str, convs: list[VoicedDialogue], setting: str, make: Callable[[int], object], vad: object) -> str:
    from extractors.speaker import diarize_recording

    turns = not setting.startswith("before")
    der, pairs, exact, extra, cpu, seconds = DerParts(), SpeakerScores(), 0, 0, 0.0, 0.0
    for c in convs:
        t0 = time.process_time()
        found = diarize_recording(c.audio, c.sample_rate, make(len(c.speakers)), vad=vad, turns=turns)  # type: ignore[arg-type]
        cpu += time.process_time() - t0
        seconds += c.audio.size / c.sample_rate
        der.add(der_parts(c.segments, found))
        add_pairs(pairs, c.segments, found)
        n = len({f[2] for f in found})
        exact += n == len(c.speakers)
        extra += n - len(c.speakers)
    sp = max(der.speech, 1e-9)
    return (f"{material:<8} {setting:<20} {exact:>3}/{len(convs):<3} {extra / len(convs):+6.2f} "
            f"{100 * der.der:6.1f} {100 * der.missed / sp:6.1f} {100 * der.false_alarm / sp:6.1f} "
            f"{100 * der.confusion / sp:6.1f} {100 * pairs.pair_accuracy:6.1f} ({pairs.pairs_ok}/{pairs.pairs})"
            f" {100 * pairs.pair_recall:6.1f} {cpu / max(seconds, 1e-9):7.3f}")


HEADER = (f"{'material':<8} {'setting':<20} {'exact':>7} {'spk+':>6} {'DER%':>6} {'miss':>6} {'FA':>6} "
          f"{'conf':>6} {'pairs%':>6} {'(ok/n)':>8} {'recall':>6} {'cpu s/s':>7}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--material", choices=("all", "fillets", "flite", "espeak"), default="all")
    ap.add_argument("--tune", action="store_true", help="Fish Fillets tuning levels instead of the held-out ones")
    ap.add_argument("--limit", type=int, default=0, help="conversations per material (0: all; MELD: 10)")
    ap.add_argument("--before", action="store_true", help="also the path before this work (espeak-tuned, no turns)")
    ap.add_argument("--only", default="", help="only the settings whose name contains this")
    args = ap.parse_args(argv)
    from benchmarks.machine import cpu_model, header, load
    print(header(), flush=True)  # CPU, flags, text dtype, load: speed figures depend on them
    import torch

    torch.set_num_threads(1)
    from extractors.speaker import OnlineDiarizer, VoiceEncoder
    from extractors.vad import SileroVad

    encoder, vad = VoiceEncoder(), SileroVad()
    settings: dict[str, Callable[[int], object]] = {
        "default": lambda n: OnlineDiarizer(encoder=encoder),
        "--speakers N": lambda n: OnlineDiarizer(encoder=encoder, max_speakers=n),
        "--speakers-exact N": lambda n: OnlineDiarizer(encoder=encoder, max_speakers=n, min_speakers=n),
    }
    if args.before:  # the espeak-tuned bars, one speaker per VAD segment: the path before turn finding
        settings["before: 0.7, no turns"] = lambda n: OnlineDiarizer(encoder=encoder, params=SYNTHETIC_VOICES)
    materials = ("fillets", "flite", "espeak") if args.material == "all" else (args.material,)
    print(f"{cpu_model()}; defaults {ClusterParams()}")
    print(HEADER)
    for m in materials:
        convs = fillets(args.tune, args.limit, vad) if m == "fillets" else meld(FLITE if m == "flite" else ESPEAK, args.limit)
        label = f"{m}{'-tune' if args.tune and m == 'fillets' else ''}"
        for name, make in settings.items():
            if args.only not in name:
                continue
            print(run(label, convs, name, make, vad), flush=True)
    print(f"load average (1, 5, 15 min): {load()}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
