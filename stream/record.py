"""Recorded session folders (record format v1, docs/architecture.md Seam 6): writer and reader.

The writer flushes after every utterance, so a crash or kill leaves a folder that replays up to the
last complete utterance: ``utterances.jsonl`` and ``events.jsonl`` are appended line by line, the WAV
header is patched to the current length after each append, and ``meta.json`` is replaced atomically.
The reader tolerates a truncated last line and says which line it dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .frames import Utterance

log = logging.getLogger(__name__)

FORMAT = "pcgnet-session"
VERSION = 1


class SessionFormatError(ValueError):
    """A recorded session folder cannot be read; the message names the file and the problem."""


# -- WAV ------------------------------------------------------------------------------------------


class WavAppender:
    """Mono 16-bit PCM WAV written incrementally; the header is valid after every :meth:`append`."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.n_samples = 0
        self._f: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(self._header(0))
        self._f.flush()

    def _header(self, n: int) -> bytes:
        data = n * 2
        return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " +
                struct.pack("<IHHIIHH", 16, 1, 1, self.sample_rate, self.sample_rate * 2, 2, 16) +
                b"data" + struct.pack("<I", data))

    def append(self, samples: np.ndarray, at_sample: int | None = None) -> None:
        """Append float samples in [-1, 1]; with ``at_sample``, pad with silence up to that position first."""
        if at_sample is not None and at_sample > self.n_samples:
            gap = at_sample - self.n_samples
            self._f.write(b"\x00\x00" * gap)
            self.n_samples += gap
        pcm = (np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0).astype("<i2")
        self._f.write(pcm.tobytes())
        self.n_samples += int(pcm.size)
        self._f.seek(0)
        self._f.write(self._header(self.n_samples))
        self._f.seek(0, os.SEEK_END)
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono 16-bit PCM WAV -> (float32 samples in [-1, 1], sample rate); clear errors for anything else."""
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
                raise SessionFormatError(f"{path}: expected 16-bit PCM WAV (got {8 * w.getsampwidth()}-bit "
                                         f"{w.getcomptype()})")
            sr, ch = w.getframerate(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise SessionFormatError(f"{path}: not a readable WAV file ({e})") from None
    except OSError as e:
        raise SessionFormatError(f"{path}: cannot read ({e.strerror})") from None
    a = np.frombuffer(raw[: len(raw) // (2 * ch) * 2 * ch], dtype="<i2").astype(np.float32) / 32768.0
    if ch > 1:
        a = a.reshape(-1, ch).mean(axis=1)
    return a, sr


# -- reader ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedUtterance:
    utterance_id: str
    speaker: str
    t_start: float
    t_end: float
    text: str | None
    emotion: str | None = None


@dataclass
class RecordedSession:
    """A session folder read into memory (audio decoded, video path resolved)."""

    path: Path
    meta: dict[str, Any]
    utterances: list[RecordedUtterance]
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    video_path: Path | None = None
    video_fps: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    dropped_lines: list[str] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return str(self.meta.get("session_id") or self.path.name)


def read_jsonl(path: Path, *, dropped: list[str] | None = None) -> list[dict[str, Any]]:
    """Objects of a JSONL file. A broken *last* line (crash while writing) is dropped and reported;
    a broken line elsewhere is an error naming the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SessionFormatError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise SessionFormatError(f"{path}: not UTF-8 (byte {e.start})") from None
    out: list[dict[str, Any]] = []
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    for k, (no, ln) in enumerate(numbered):
        try:
            obj = json.loads(ln)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than json's limit
            if k == len(numbered) - 1:
                msg = f"{path}:{no}: dropped a truncated last line ({e})"
                log.warning(msg)
                if dropped is not None:
                    dropped.append(msg)
                break
            raise SessionFormatError(f"{path}:{no}: invalid line ({e})") from None
        out.append(obj)
    return out


def _utterance(path: Path, no: int, d: dict[str, Any]) -> RecordedUtterance:
    try:
        uid, spk = d["utterance_id"], d["speaker"]
        t0, t1 = float(d["t_start"]), float(d["t_end"])
    except KeyError as e:
        raise SessionFormatError(f"{path}: utterance {no}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
        raise SessionFormatError(f"{path}: utterance {no}: t_start/t_end must be numbers") from None
    if not isinstance(uid, str) or not uid or not isinstance(spk, str) or not spk:
        raise SessionFormatError(f"{path}: utterance {no}: utterance_id and speaker must be non-empty strings")
    if not (np.isfinite(t0) and np.isfinite(t1)) or t0 < 0 or t1 < t0:
        raise SessionFormatError(f"{path}: utterance {no} ({uid}): bad times t_start={t0} t_end={t1}")
    text = d.get("text")
    emo = d.get("emotion")
    return RecordedUtterance(uid, spk, t0, t1, text if isinstance(text, str) else None,
                             emo if isinstance(emo, str) else None)


def _member(root: Path, meta_path: Path, name: Any) -> Path:
    """A file named in meta.json: a plain name inside the session folder (meta.json is untrusted input)."""
    if not isinstance(name, str) or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise SessionFormatError(f"{meta_path}: file names must be plain names inside the folder, got {name!r:.80}")
    return root / name


def read_session(path: str | Path) -> RecordedSession:
    """Read a session folder (meta.json, utterances.jsonl, optional audio/video/events)."""
    root = Path(path)
    if not root.is_dir():
        raise SessionFormatError(f"{root}: not a recorded session folder (no such directory)")
    meta_path = root / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionFormatError(f"{meta_path}: missing (a session folder needs meta.json and utterances.jsonl)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise SessionFormatError(f"{meta_path}: invalid JSON ({e})") from None
    except OSError as e:
        raise SessionFormatError(f"{meta_path}: cannot read ({e.strerror})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SessionFormatError(f"{meta_path}: not a {FORMAT!r} file")
    if meta.get("version") != VERSION:
        raise SessionFormatError(f"{meta_path}: unsupported version {meta.get('version')!r} (this reads {VERSION})")
    dropped: list[str] = []
    utt_path = root / "utterances.jsonl"
    if not utt_path.is_file():
        raise SessionFormatError(f"{utt_path}: missing")
    utts = [_utterance(utt_path, i + 1, d) for i, d in enumerate(read_jsonl(utt_path, dropped=dropped))]
    seen: set[str] = set()
    for u in utts:
        if u.utterance_id in seen:
            raise SessionFormatError(f"{utt_path}: duplicate utterance_id {u.utterance_id!r}")
        seen.add(u.utterance_id)
    rec = RecordedSession(root, meta, utts, dropped_lines=dropped)
    audio = meta.get("audio")
    if isinstance(audio, dict) and audio.get("file"):
        rec.audio, rec.sample_rate = read_wav(_member(root, meta_path, audio["file"]))
    video = meta.get("video")
    if isinstance(video, dict) and video.get("file"):
        vp = _member(root, meta_path, video["file"])
        if not vp.is_file():
            raise SessionFormatError(f"{vp}: missing (named in meta.json)")
        try:
            fps = float(video.get("fps") or 15.0)
        except (TypeError, ValueError, OverflowError):
            fps = float("nan")
        if not (0 < fps < 1000):
            raise SessionFormatError(f"{meta_path}: video fps must be a number in (0, 1000), got {video.get('fps')!r}")
        rec.video_path, rec.video_fps = vp, fps
    ev_path = root / "events.jsonl"
    if ev_path.is_file():
        try:
            rec.events = read_jsonl(ev_path, dropped=dropped)
        except SessionFormatError as e:  # the events are a by-product: a replay does not need them
            log.warning("%s; recorded events ignored", e)
            dropped.append(str(e))
    return rec


# -- writer ---------------------------------------------------------------------------------------


def _atomic_json(path: Path, obj: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class SessionRecorder:
    """Writes one session folder as utterances and events happen.

    Args:
        path: the folder (created; must be empty or absent so a recording is never mixed with another).
        session_id: written to meta.json.
        checkpoint: the checkpoint path used (for provenance).
        video_fps: frame rate of the video file, when frames are recorded.
    """

    def __init__(self, path: str | Path, session_id: str, *, checkpoint: str | None = None,
                 video_fps: float = 15.0) -> None:
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()):
            raise SessionFormatError(f"{self.path}: --record folder exists and is not empty")
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "session_id": session_id,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "audio": None, "video": None, "speakers": [], "checkpoint": checkpoint, "labels": None,
        }
        self.video_fps = video_fps
        self._wav: WavAppender | None = None
        self._video: Any = None
        self._video_frames = 0
        self._utt = open(self.path / "utterances.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._events = open(self.path / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self.utterances = 0
        _atomic_json(self.path / "meta.json", self.meta)

    def add_utterance(self, utt: Utterance) -> None:
        """Record one utterance (its audio and frames too), flushed before returning."""
        meta_changed = False
        if utt.audio is not None and utt.sample_rate:
            if self._wav is None:
                self._wav = WavAppender(self.path / "audio.wav", int(utt.sample_rate))
                self.meta["audio"] = {"file": "audio.wav", "sample_rate": int(utt.sample_rate)}
                meta_changed = True
            if int(utt.sample_rate) == self._wav.sample_rate:
                self._wav.append(utt.audio, at_sample=int(round(utt.t_start * self._wav.sample_rate)))
            else:
                log.warning("%s: utterance %s has %d Hz audio, the recording %d Hz; audio not recorded",
                            self.path, utt.utterance_id, utt.sample_rate, self._wav.sample_rate)
        if utt.frames:
            self._write_frames(utt)
            if self.meta["video"] is None:
                self.meta["video"] = {"file": "video.mp4", "fps": self.video_fps}
                meta_changed = True
        if utt.speaker not in self.meta["speakers"]:
            self.meta["speakers"].append(utt.speaker)
            meta_changed = True
        rec: dict[str, Any] = {"utterance_id": utt.utterance_id, "speaker": utt.speaker,
                               "t_start": round(utt.t_start, 4), "t_end": round(utt.t_end, 4), "text": utt.text}
        if utt.gold is not None:
            rec["emotion"] = utt.gold
        self._utt.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._utt.flush()
        self.utterances += 1
        if meta_changed:
            _atomic_json(self.path / "meta.json", self.meta)

    def _write_frames(self, utt: Utterance) -> None:
        import cv2

        # Frames are written at their place on the session clock: the gap since the previous frame is
        # filled by repeating the first frame, so video time stays aligned with utterance times.
        first = utt.frames[0]
        if self._video is None:
            h, w = first.shape[:2]
            self._video = cv2.VideoWriter(str(self.path / "video.mp4"), cv2.VideoWriter.fourcc(*"mp4v"),
                                          self.video_fps, (w, h))
            self._size = (w, h)
        target = int(utt.t_start * self.video_fps)
        while self._video_frames < target:
            self._video.write(cv2.resize(first, self._size))
            self._video_frames += 1
        end = max(target + 1, int(utt.t_end * self.video_fps))
        n = end - self._video_frames
        idx = np.linspace(0, len(utt.frames) - 1, num=max(n, 1)).round().astype(int)
        for i in idx[:max(n, 0)]:
            self._video.write(cv2.resize(utt.frames[i], self._size))
            self._video_frames += 1

    def add_events(self, objs: Sequence[dict[str, Any]]) -> None:
        for o in objs:
            self._events.write(json.dumps(o, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._events.flush()

    def set_labels(self, labels: Sequence[str]) -> None:
        self.meta["labels"] = list(labels)
        _atomic_json(self.path / "meta.json", self.meta)

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
        if self._video is not None:
            self._video.release()
            self._video = None
        self._utt.close()
        self._events.close()
