"""Ordinary recordings in: mono to 8 channels, 8-96 kHz, any level, wav/flac/ogg/mp3/m4a/mkv/webm. Each decodes
to the same 16 kHz mono speech as the mono file, within [-1, 1] (the VAD refused stereo files peaking above
0.7: FFmpeg's downmix added the channels at -3 dB each), and ``live.py`` gives the same events for each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.stream.recording_media import RATE, Variant, make, need

ROOT = Path(__file__).resolve().parents[2]

LINES = [("Ann", "I cannot believe you sold the car without asking me first."),
         ("Bob", "It was my car and I needed the money for the rent."),
         ("Ann", "Well, next time you could at least tell me before you do it.")]

VARIANTS = {v.name: v for v in [
    Variant("mono16", "wav"),
    Variant("stereo44", "wav", 44100, ("1", "1")),
    Variant("stereo48_hot", "wav", 48000, ("1", "1"), "max"),
    Variant("stereo48_quiet", "flac", 48000, ("1", "1"), -30),
    Variant("left_only", "ogg", 44100, ("1", "0")),
    Variant("antiphase", "wav", 48000, ("1", "1v-1"), "max"),
    Variant("surround51_centre", "flac", 48000, ("0", "0", "1", "0", "0", "0"), "max"),
    Variant("eight96_hot", "wav", 96000, ("1", "1", "0", "0", "0", "0", "0", "0"), "max"),
    Variant("mono8k", "wav", 8000),
    Variant("float_over_1", "wav", 44100, ("1", "1"), 10, "pcm_f32le"),
    Variant("mp3_stereo_hot", "mp3", 44100, ("1", "1"), "max", "libmp3lame"),
    Variant("m4a_stereo", "m4a", 44100, ("1", "1"), None, "aac"),
    Variant("mkv_51", "mkv", 48000, ("0", "0", "1", "0", "0", "0"), "max", "ac3"),
    Variant("webm_video", "webm", 48000, ("1", "1"), "max", "libopus", video=True),
]}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """Three turns of two espeak-ng voices, 16 kHz mono, and the folder their variants are written to."""
    from tests.extractors.extractor_media import write_wav
    from tests.voicing import Line, VoicingError, voice_lines

    try:
        v = voice_lines([Line(s, t) for s, t in LINES], name="recording")
    except VoicingError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(str(e))
        pytest.skip(str(e))
    d = tmp_path_factory.mktemp("recordings")
    write_wav(d / "ref.wav", v.audio)
    return v, d


def variant(speech: tuple[Any, Path], name: str) -> Path:
    v, d = speech
    out = d / f"{name}.{VARIANTS[name].suffix}"
    if not out.exists():
        make(d / "ref.wav", v.audio, d, VARIANTS[name])
    return out


def _aligned_corr(x: np.ndarray, ref: np.ndarray) -> float:
    """Correlation after the codec's delay (up to 0.1 s) is taken out."""
    probe = ref[RATE // 2: RATE // 2 + 4000]
    lag = int(np.argmax(np.correlate(x[: RATE // 2 + 4000 + RATE // 10], probe, mode="valid"))) - RATE // 2
    n = min(x.size - max(lag, 0), ref.size - max(-lag, 0))
    a, b = x[max(lag, 0): max(lag, 0) + n], ref[max(-lag, 0): max(-lag, 0) + n]
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "mono16"])
def test_every_layout_rate_and_level_decodes_like_the_mono_file(speech: tuple[Any, Path], name: str) -> None:
    need("av")
    from stream.capture.audiofile import decode_audio

    ref = decode_audio(variant(speech, "mono16"))
    x = decode_audio(variant(speech, name))
    assert np.isfinite(x).all() and float(np.abs(x).max()) <= 1.0, float(np.abs(x).max())
    assert abs(x.size - ref.size) < 0.1 * RATE, (x.size, ref.size)
    # 8 kHz keeps only the band under 4 kHz; lossy codecs lose a little more
    assert _aligned_corr(x, ref) > (0.8 if name in ("mono8k",) else 0.9)
    if VARIANTS[name].gain_db != -30:  # every level comes out at the normaliser's peak
        assert float(np.abs(x).max()) > 0.5


def test_downmix_never_exceeds_the_loudest_channel_and_survives_opposite_phase() -> None:
    from stream.capture.pcm import downmix

    rng = np.random.default_rng(0)
    s = np.sin(np.linspace(0, 200, 4000)).astype(np.float32) * 0.99
    assert np.allclose(downmix(np.stack([s, s])), s)
    assert np.allclose(downmix(np.stack([s, -s])), s) or np.allclose(downmix(np.stack([s, -s])), -s)
    six = np.zeros((6, s.size), np.float32)
    six[2] = s
    assert float(np.abs(downmix(six)).max()) <= 1.0
    noise = rng.uniform(-1, 1, (8, 4000)).astype(np.float32)
    assert float(np.abs(downmix(noise)).max()) <= float(np.abs(noise).max())
    assert np.allclose(downmix(np.stack([s, s * 0.1]), channel=1), s * 0.1)


def test_normaliser_brings_any_level_to_the_target_and_never_clips() -> None:
    from stream.capture.pcm import LevelNormaliser

    n = LevelNormaliser(target=0.9, max_gain=10.0)
    quiet = np.full(100, 0.01, np.float32)
    assert np.allclose(n(quiet), 0.1)  # boosted at most 10x
    loud = np.full(100, 3.0, np.float32)  # a float file above full scale
    assert np.allclose(n(loud), 0.9)
    assert np.allclose(n(quiet), 0.003)  # the gain never rises again
    assert n(np.zeros(0, np.float32)).size == 0


def test_absurd_headers_fail_before_the_model_loads(tmp_path: Path) -> None:
    """A wav header claiming 1 Hz ran until killed at 300 s: now one line and exit 2."""
    need("av")
    import wave

    one = tmp_path / "one_hz.wav"
    with wave.open(str(one), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(1)
        w.writeframes(np.zeros(16000, np.int16).tobytes())
    r = subprocess.run([sys.executable, str(ROOT / "live.py"), "--audio", str(one), "--no-tui"], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "one_hz.wav" in errors[0] and "1 Hz" in errors[0], r.stderr


E2E = ["stereo48_hot", "eight96_hot", "surround51_centre", "mono8k", "mp3_stereo_hot", "m4a_stereo", "webm_video"]


@pytest.mark.slow
def test_live_gives_each_recording_the_events_of_the_mono_file(speech: tuple[Any, Path], tmp_path: Path,
                                                                tiny_checkpoint: Path) -> None:
    """One ``live.py`` process analyses the mono file and seven kinds of recording side by side (one session
    each): every one gives the mono file's utterances at the same times, with its words (ASR tolerance)."""
    need("faster_whisper", "silero_vad", "resemblyzer", "av", "cv2")
    from extractors.asr import word_error_rate

    v, _ = speech
    args = ["--audio", str(variant(speech, "mono16"))]
    for name in E2E:
        args += ["--video" if VARIANTS[name].video else "--audio", str(variant(speech, name))]
    ev = tmp_path / "ev.jsonl"
    r = subprocess.run([sys.executable, str(ROOT / "live.py"), *args, "--speed", "0", "--no-tui", "--asr",
                        "whisper-tiny.en", "--vad", "silero", "--checkpoint", str(tiny_checkpoint), "--events",
                        str(ev)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                       text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    emo: dict[str, list[dict[str, Any]]] = {}
    for e in map(json.loads, ev.read_text().splitlines()):
        if e["type"] == "emotion":
            emo.setdefault(e["session"], []).append(e)
    ref = sorted(emo.pop("mono16"), key=lambda e: e["t_start"])
    assert len(ref) == len(LINES), [(e["t_start"], e["text"]) for e in ref]
    gold = " ".join(t for _, t in LINES)
    assert sorted(emo) == sorted(E2E), sorted(emo)
    for name, events in emo.items():
        events.sort(key=lambda e: e["t_start"])
        assert len(events) == len(ref), (name, [(e["t_start"], e["text"]) for e in events])
        for a, b in zip(events, ref, strict=True):
            assert abs(a["t_start"] - b["t_start"]) < 0.3 and abs(a["t_end"] - b["t_end"]) < 0.3, (name, a, b)
        hyp = " ".join(e["text"] or "" for e in events)
        assert word_error_rate([gold], [hyp]) <= 0.35, (name, hyp)
    # each file's run ends with its summary line
    done = {line.split(": ")[2]: line for line in r.stderr.splitlines() if line.startswith("live.py: done: ")}
    assert sorted(done) == sorted(variant(speech, n).name for n in ["mono16", *E2E]), r.stderr[-2000:]
    assert done["mono16.wav"].startswith(f"live.py: done: mono16.wav: {len(LINES)} utterance(s), "), done
    assert done["mono16.wav"].endswith(f" {v.audio.size / RATE:.1f} s of audio, 0 error(s)"), done


def test_one_channel_of_a_two_track_recording(speech: tuple[Any, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """``--channel N`` analyses one microphone of a two-track file; a channel the file lacks is one line, exit 2."""
    need("av")
    from stream.app import main
    from stream.capture.audiofile import decode_audio, iter_audio

    path = variant(speech, "left_only")  # speech on the left, silence on the right
    ref = decode_audio(variant(speech, "mono16"))
    left = np.concatenate(list(iter_audio(path, channel=0)))
    right = np.concatenate(list(iter_audio(path, channel=1, normalise=False)))
    assert _aligned_corr(left, ref) > 0.9 and float(np.abs(right).max()) < 1e-3
    assert main(["--audio", str(path), "--channel", "3", "--no-tui"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"live.py: error: {path}: has 2 channel(s); --channel 3 does not exist"], err
    assert main(["--audio", str(path), "--channel", "0", "--no-tui"]) == 2
    assert "--channel 0: expected a channel number >= 1" in capsys.readouterr().err


def test_channels_as_speakers_names_each_person_by_their_channel(speech: tuple[Any, Path], tmp_path: Path,
                                                                 tiny_checkpoint: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A two-track recording (Ann on the left, Bob on the right): one session, speakers "Channel 1" and
    "Channel 2" turn by turn, handed to the model in time order although each channel is analysed on its own."""
    need("av", "silero_vad")
    from stream.app import main
    from stream.record import read_session
    from tests.stream.recording_media import encode

    v, _ = speech
    left, right = v.audio.copy(), np.zeros_like(v.audio)
    bob = v.segments[1]
    a, b = int(bob.t_start * RATE) - 800, int(bob.t_end * RATE) + 800
    right[a:b], left[a:b] = left[a:b], 0.0
    path = tmp_path / "call.wav"
    encode(path, np.stack([left, right]), RATE, "pcm_s16le")
    rec = tmp_path / "rec"
    rc = main(["--audio", str(path), "--channels-as-speakers", "--asr", "none", "--vad", "silero", "--speed", "0",
               "--no-tui", "--checkpoint", str(tiny_checkpoint), "--record", str(rec)])
    err = capsys.readouterr().err
    assert rc == 0, err
    utts = read_session(rec).utterances  # in the order the model was given them
    assert [u.speaker for u in utts] == ["Channel 1", "Channel 2", "Channel 1"], [(u.speaker, u.t_start) for u in utts]
    assert [u.utterance_id for u in utts] == ["c1-a0001", "c2-a0001", "c1-a0002"]
    assert [u.t_end for u in utts] == sorted(u.t_end for u in utts)
    for u, seg in zip(utts, v.segments, strict=True):
        assert abs(u.t_start - seg.t_start) < 0.3 and abs(u.t_end - seg.t_end) < 0.3, (u, seg)
    assert "live.py: done: call.wav: 3 utterance(s)" in err and "2 speaker(s)" in err, err
    assert main(["--audio", str(path), "--channels-as-speakers", "--channel", "1", "--no-tui"]) == 2


def test_channel_merger_releases_utterances_in_time_order() -> None:
    """Channel 1 runs ahead (ends at 3 s and 11 s) of channel 2 (7 s): the model still gets 3, 7, 11; a quiet
    channel holds the others back only until it is decoded SLACK_S past them."""
    import asyncio
    from types import SimpleNamespace

    from stream.capture.channels import SLACK_S, _ChannelSink, _Merger
    from stream.frames import Utterance

    got: list[str] = []

    class Sink:
        async def submit(self, u: Utterance) -> None:
            got.append(u.utterance_id)

    def utt(i: str, t_end: float) -> Utterance:
        return Utterance(session_id="s", utterance_id=i, speaker="x", t_start=t_end - 1, t_end=t_end, text="hi")

    async def main() -> None:
        kids = [SimpleNamespace(decoded_s=0.0), SimpleNamespace(decoded_s=0.0)]
        m = _Merger(Sink(), kids)  # type: ignore[arg-type]
        one, two = _ChannelSink(m, 0), _ChannelSink(m, 1)
        await one.submit(utt("a0001", 3.0))
        await one.submit(utt("a0002", 11.0))
        assert got == []  # channel 2 might still say something earlier
        await two.submit(utt("a0001", 7.0))
        assert got == ["c1-a0001", "c2-a0001"]
        kids[1].decoded_s = 11.0 + SLACK_S  # channel 2 decoded far past 11 s without a word
        await m.release()
        assert got == ["c1-a0001", "c2-a0001", "c1-a0002"]

    asyncio.run(main())
