#!/usr/bin/env python3
"""Peak memory of ``live.py --video`` on a 1080p recording, next to ``live.py --audio`` on the same file.

Makes a 1080p/25 fps H.264 mp4 (a moving test pattern, FFmpeg's testsrc in spirit, through PyAV) whose
stereo 48 kHz AAC track is espeak-ng speech (turns of two voices, pauses between), ``--seconds`` long, then
runs ``live.py --audio clip.mp4`` and ``live.py --video clip.mp4`` on it (speed 0, one process each) and
prints each run's peak RSS (``wait4``) and its RSS at quartiles of the run; with several lengths, each run's
peak fitted against the clip's length (MB per minute of clip) and extrapolated to an hour of video. The
target (issue 26): an hour of 1080p within about 1.5 GB over the audio-only run (a 40 s clip once peaked at
8.5 GB).

    python benchmarks/video_memory.py --seconds 120                 # ~5 min of CPU on 2 loaded cores
    python benchmarks/video_memory.py --seconds 60,240,600          # peaks against length, fitted to an hour
    python benchmarks/video_memory.py --seconds 60 --asr none       # the frame path alone

Files are kept in ``--work`` (default runs/video_memory), so a rerun skips making the clip.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE, FPS, W, H = 48000, 25, 1920, 1080
LINES = [("A", "Let us go through the numbers for the third quarter before lunch."),
         ("B", "Sales went up in the north, but the south is still behind the plan."),
         ("A", "Why is the south behind again? We talked about this last month."),
         ("B", "Two people left the team and the new ones only started in October."),
         ("A", "Fine. Then I want a plan from them by Friday, with dates."),
         ("B", "I will ask them today and send it to you tomorrow morning.")]


def speech(seconds: float) -> np.ndarray:
    """Voiced turns repeated to ``seconds`` at 48 kHz stereo (the second channel a little quieter)."""
    from extractors.audio import resample
    from tests.voicing import Line, voice_lines

    v = voice_lines([Line(s, t) for s, t in LINES], name="video-memory", pause_s=0.8)
    reps = int(np.ceil(seconds * 16000 / v.audio.size))
    mono = resample(np.tile(v.audio, reps)[: int(seconds * 16000)], 16000, RATE)
    return np.stack([mono, 0.8 * mono]).astype(np.float32)


def make_clip(path: Path, seconds: float) -> None:
    """1080p test pattern (colour bars, a moving box, a frame counter band) + the speech, H.264 + AAC."""
    import av

    audio = speech(seconds)
    bars = np.zeros((H, W, 3), np.uint8)
    colours = [(255, 255, 255), (0, 255, 255), (255, 255, 0), (0, 255, 0), (255, 0, 255), (0, 0, 255),
               (255, 0, 0), (0, 0, 0)]
    for i, c in enumerate(colours):
        bars[:, i * W // 8:(i + 1) * W // 8] = c
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "28"})
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        a = c.add_stream("aac", rate=RATE, layout="stereo")
        n_frames = int(seconds * FPS)
        step = a.codec_context.frame_size or 1024
        pos = 0
        for i in range(n_frames):
            img = bars.copy()
            x = (i * 16) % (W - 200)
            img[400:600, x:x + 200] = (i * 7) % 256
            img[H - 60:, :] = (i % 256, (i // 256) % 256, 128)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
            while pos < min(audio.shape[1], int((i + 1) / FPS * RATE)):  # interleave audio with the video
                chunk = np.ascontiguousarray(audio[:, pos:pos + step])
                f = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                f.sample_rate, f.pts = RATE, pos
                for p in a.encode(f):
                    c.mux(p)
                pos += step
        for s in (vs, a):
            for p in s.encode():
                c.mux(p)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(flag: str, clip: Path, args: argparse.Namespace, checkpoint: Path) -> tuple[float, list[tuple[float, float]],
                                                                                   float, str]:
    """(peak RSS MB from wait4, [(seconds since start, RSS MB)], wall seconds, live.py's summary line)."""
    cmd = [sys.executable, str(ROOT / "live.py"), flag, str(clip), "--speed", "0", "--no-tui", "--asr", args.asr,
           "--vad", "silero", "--speaker", "Ann", "--checkpoint", str(checkpoint)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    err = args.work / f"{flag[2:]}.stderr"
    t0 = time.monotonic()
    with open(err, "w") as e:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=e)
        samples = []
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)  # this child's own peak, not the largest so far
            if pid:
                break
            r = rss_mb(p.pid)
            if r is not None:
                samples.append((time.monotonic() - t0, r))
            time.sleep(0.25)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    peak = max(usage.ru_maxrss / 1024, max((r for _, r in samples), default=0.0))
    summary = next((x for x in err.read_text().splitlines() if x.startswith("live.py: done")), "(no summary)")
    if p.returncode != 0:
        print(err.read_text()[-2000:])
        raise SystemExit(f"{flag} run failed (rc {p.returncode})")
    return peak, samples, wall, summary


def clip_for(seconds: float, work: Path) -> Path:
    clip = work / f"hd-{int(seconds)}s.mp4"
    if not clip.exists():
        t = time.monotonic()
        make_clip(clip.with_suffix(".tmp.mp4"), seconds)
        clip.with_suffix(".tmp.mp4").rename(clip)
        print(f"made {clip.name}: {W}x{H} {FPS} fps H.264 + stereo AAC, {seconds:.0f} s, "
              f"{clip.stat().st_size / 1e6:.1f} MB in {time.monotonic() - t:.0f} s")
    return clip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", default="120",
                    help="clip length(s), comma-separated (default 120); with several, the peaks are fitted "
                         "against the length and extrapolated to an hour")
    ap.add_argument("--asr", default="whisper-tiny.en", help="live.py --asr (default whisper-tiny.en)")
    ap.add_argument("--checkpoint", type=Path, help="live.py --checkpoint (default: the tests' tiny MiniLM model)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "video_memory")
    ap.add_argument("--only", choices=("audio", "video"), help="run one of the two (to measure one change)")
    args = ap.parse_args(argv)
    lengths = [float(x) for x in str(args.seconds).split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    from benchmarks.machine import header, load

    print(header())
    checkpoint = args.checkpoint
    if checkpoint is None:
        from tests.support.checkpoints import make_tiny_checkpoint

        checkpoint = args.work / "tiny"
        if not (checkpoint / "config.json").exists():
            make_tiny_checkpoint(checkpoint)
    peaks: dict[str, list[tuple[float, float]]] = {"--audio": [], "--video": []}
    for seconds in lengths:
        clip = clip_for(seconds, args.work)
        for flag in ("--audio", "--video"):
            if args.only and flag != f"--{args.only}":
                continue
            peak, samples, wall, summary = run(flag, clip, args, checkpoint)
            peaks[flag].append((seconds, peak))
            print(f"{seconds:5.0f} s {flag:8s} peak RSS {peak:7.0f} MB  wall {wall:5.0f} s  | {summary}")
            qs = [samples[min(len(samples) - 1, int(q * len(samples)))] for q in (0.25, 0.5, 0.75)] + [samples[-1]]
            print("         RSS at quartiles of the run: " + ", ".join(f"{t:4.0f} s {r:6.0f} MB" for t, r in qs))
    for flag, pts in peaks.items():
        if len(pts) >= 2:  # peak against clip length: what an hour would take if it kept growing at that rate
            x, y = np.array([p[0] / 60 for p in pts]), np.array([p[1] for p in pts])
            slope, icpt = np.polyfit(x, y, 1)
            print(f"{flag:8s} peak vs clip length: {slope:+.1f} MB per minute of clip; an hour -> "
                  f"{icpt + 60 * slope:.0f} MB")
    both = [(s, v - a) for (s, a), (_, v) in zip(peaks["--audio"], peaks["--video"], strict=False)]
    for seconds, diff in both:
        print(f"{seconds:5.0f} s clip: video - audio {diff:+.0f} MB peak RSS (target: within ~1500 MB for an hour)")
    print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
