"""Every tunable of the live runtime in one place, with units in the names and documented defaults.

``live.py`` fills a :class:`LiveParams` from its flags; tests and benchmarks build one directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from extractors.whisper import BEAM_SIZE, DEFAULT_MODEL, WINDOW_S

if TYPE_CHECKING:
    from extractors.diarize import ClusterParams


@dataclass(frozen=True)
class VadParams:
    """Energy voice-activity segmentation of microphone audio (used when no VAD extractor is available)."""

    frame_ms: int = 30
    """Analysis frame length."""
    threshold_dbfs: float = -42.0
    """A frame is speech when its RMS level is above this (dB relative to full scale)."""
    min_speech_ms: int = 200
    """Shorter bursts (clicks, coughs) are not utterances."""
    vad_silence_ms: int = 600
    """This much silence ends an utterance (energy VAD)."""
    silero_silence_ms: int = 500
    """The same for silero-vad: its speech probability falls off more slowly than the energy, so the
    silence it sees between turns is shorter (500 ms is its own default)."""
    silero_pad_ms: int = 30
    """Audio silero-vad keeps before and after each segment it detects."""
    pre_roll_ms: int = 150
    """Audio kept before the detected onset, so the first phoneme is not cut."""
    max_utterance_s: float = 15.0
    """An utterance longer than this is cut (a speaker who never pauses still gets predictions)."""


@dataclass(frozen=True)
class MicParams:
    """Microphone capture (sounddevice); the VAD, ASR and diarisation choices also apply to audio files."""

    sample_rate_hz: int = 16000
    block_ms: int = 30
    """Callback block length (also the block length audio files are fed in)."""
    device: str | int | None = None
    """sounddevice device name or index; None = the system default input."""
    speaker: str | None = None
    """One fixed speaker name for every utterance (no diarisation); None = diarise (see :class:`SpeakerParams`)."""
    vad: str = "auto"
    """Segmentation: "silero" (extractors.vad), "energy" (VadParams thresholds), "auto" = silero when installed."""
    asr: str = "auto"
    """Speech to text (see :class:`AsrParams`): "whisper-tiny.en", "whisper-base", "pocketsphinx", "none",
    "faster-whisper:DIR", "vosk:DIR"; "auto" = :data:`DEFAULT_ASR` when installed, else none."""


DEFAULT_ASR = f"whisper-{DEFAULT_MODEL}"
"""Chosen by measurement (docs/live.md, "Speech to text"); set in :mod:`extractors.whisper` with the decoding
defaults below."""


@dataclass(frozen=True)
class AsrParams:
    """How utterance audio is transcribed (shared by every audio session of the process)."""

    workers: int = 2
    """Transcriptions running at once (each on one CPU thread; CTranslate2 releases the GIL), shared by all
    audio sessions; calls beyond wait their turn. One session uses one at a time."""
    beam_size: int = BEAM_SIZE
    """Whisper beam width (1 = greedy)."""
    window_s: float | None = WINDOW_S
    """Whisper encoder window: the segment plus this many seconds; None = the fixed 30 s."""
    prompt_previous: bool = False
    """Give Whisper the session's previous utterance text as its prompt. Off: measured on voiced MELD dev it
    did not lower the WER (docs/live.md)."""


@dataclass(frozen=True)
class SpeakerParams:
    """Online diarisation of audio sessions (one diariser per session)."""

    max_speakers: int = 9
    """At most this many speakers per session (``--speakers N``); PCGNet has fixed speaker slots."""
    min_speakers: int = 1
    """Speakers are never merged below this many, and open without the prior on few speakers until there are
    (``--speakers-exact N`` sets both to N)."""
    voices: tuple[tuple[str, str], ...] = ()
    """(name, audio file) pairs enrolled before the session starts (``--voice NAME=FILE``)."""
    cluster: ClusterParams | None = None
    """The diariser's bars; None: tuned on real voices (extractors/diarize.py). Tests on espeak-ng voices pass
    ``extractors.diarize.SYNTHETIC_VOICES``, whose voices are too alike for the real-voice bars."""


@dataclass(frozen=True)
class CameraParams:
    """Camera capture (OpenCV)."""

    device: str | int = 0
    """OpenCV VideoCapture index, or a video file path (tests use a generated mp4)."""
    fps_hz: float = 15.0
    """Frames kept per second (the capture thread drops the rest)."""
    buffer_s: float = 30.0
    """How much video is kept to attach to utterances."""
    max_frames_per_utterance: int = 8
    """Frames attached to one utterance, evenly spaced over it."""


@dataclass(frozen=True)
class InferenceParams:
    """Incremental inference and micro-batching across sessions."""

    device: str = "cpu"
    """"cpu", "cuda", "cuda:1" or "auto" (cuda when available)."""
    max_batch_size: int = 32
    """At most this many sessions' steps run in one ``model.step_many`` call."""
    batch_wait_ms: float = 0.0
    """Wait up to this long for more steps before running a batch (0: take only what is already queued)."""
    torch_threads: int = 1
    """Intra-op threads for the inference and feature threads (CPU is shared with capture)."""
    feature_workers: int = 1
    """Threads running feature extractors."""
    text_dtype: str = "auto"
    """Text encoder dtype (``--text-dtype``): "auto" = bfloat16 only where the CPU computes it natively
    (avx512_bf16 / amx_bf16) and the encoder is validated in it, float32 elsewhere (:mod:`extractors.cpu`)."""
    text_backend: str = "torch"
    """Text encoder runtime (``--text-backend``): "torch", or "onnx" (ONNX Runtime, float32, ~2.5x faster than
    torch float32 on one thread; :mod:`extractors.onnx_backend`)."""


@dataclass(frozen=True)
class PersonaParams:
    """Per-speaker persona (the 5-d apparent-personality vector the model conditions on)."""

    smoothing: float = 0.2
    """Exponential smoothing weight of a new estimate (0 < smoothing <= 1; 1 = no smoothing)."""
    neutral_value: float = 0.3
    """Each dimension of the default persona when nothing better is known (MELD's mean is ~0.29)."""


@dataclass(frozen=True)
class QueueParams:
    """Sizes of the bounded queues; each queue's full policy is fixed where it is made (docs/live.md)."""

    utterances_per_session: int = 64
    """Utterances waiting for a session's worker (policy: block the source)."""
    inference_requests: int = 256
    """Steps waiting for the inference worker (policy: block the session)."""
    sink_events: int = 4096
    """Events waiting in each sink (policy: drop oldest, counted and logged)."""
    audio_blocks: int = 512
    """Microphone blocks waiting for segmentation (policy: drop newest, counted)."""


@dataclass(frozen=True)
class UiParams:
    """Terminal UI."""

    ui_refresh_hz: float = 4.0
    transcript_lines: int = 14
    alert_lines: int = 4
    latency_window: int = 500
    """Latency percentiles are over the last this many events."""
    rate_window_s: float = 10.0
    """utterances/s is measured over this window."""


@dataclass(frozen=True)
class WebParams:
    """The web dashboard (``--web``): how much it keeps and how much one browser may lag."""

    history_events_per_session: int = 3000
    """Events kept per session so a page opened late sees the session so far (~1000 utterances)."""
    history_sessions: int = 64
    """Sessions whose history is kept; beyond, the least recently active session's history is dropped."""
    client_queue_events: int = 1024
    """Events waiting for one browser (policy: drop oldest, counted and shown on that page)."""
    max_clients: int = 32
    """Open event streams (pages) at once; one more replaces the oldest, which is told so and closed."""
    max_connections: int = 256
    """Sockets open at once (never more than half the file descriptors left); beyond, the oldest idle one
    is closed to make room, or the new one when all are busy."""
    max_connections_per_client: int = 64
    """Sockets open at once from one address, with the same policy."""
    idle_timeout_s: float = 10.0
    """A connection must send a complete request head within this long of opening or of its previous
    response, else it is closed (half-sent requests, silent sockets, idle keep-alive)."""
    stall_timeout_s: float = 10.0
    """An event stream whose write has not drained this long (the browser stopped reading) is closed."""
    figures_period_s: float = 1.0
    """How often the latency and queue figures are pushed."""
    heartbeat_s: float = 15.0
    """An idle event stream sends a comment this often, so a closed browser is noticed."""
    min_token_chars: int = 16
    """Shortest ``--web-token`` accepted."""


@dataclass(frozen=True)
class LiveParams:
    """Everything one ``live.py`` process needs besides its sources and sinks."""

    checkpoint: str = "checkpoints/default"
    session_id: str = "live"
    """Session id for local sources (mic, camera, stdin/file transcript)."""
    speed: float = 1.0
    """Replay/transcript-file pacing: 1.0 real time, 2.0 twice as fast, 0 as fast as possible."""
    topic_prefix: str = "pcgnet"
    worker_id: str | None = None
    """Copied into every event (scale-out workers set it)."""
    process_id: str | None = None
    """This analyzer process's id (its MQTT client id and status topic level), named in session events and
    speaker records so that a client can link retained state to the process's will."""
    shift_profile: str | None = None
    """The shift rule's operating profile (``sensitive`` / ``balanced`` / ``precise``: docs/events.md);
    None: the checkpoint's default."""
    vad: VadParams = field(default_factory=VadParams)
    mic: MicParams = field(default_factory=MicParams)
    asr: AsrParams = field(default_factory=AsrParams)
    speakers: SpeakerParams = field(default_factory=SpeakerParams)
    camera: CameraParams = field(default_factory=CameraParams)
    inference: InferenceParams = field(default_factory=InferenceParams)
    persona: PersonaParams = field(default_factory=PersonaParams)
    queues: QueueParams = field(default_factory=QueueParams)
    ui: UiParams = field(default_factory=UiParams)
    web: WebParams = field(default_factory=WebParams)
    session_idle_s: float = 1800.0
    """A session with no utterance for this long is closed and its state freed (0: never); bounds memory
    when many sessions come and go over MQTT. A later utterance starts it afresh."""
    max_sessions: int = 1000
    """Sessions open at once; an utterance that would open one more is refused with a (rate-limited) error
    event. Bounds memory (~64 KiB per open session) when any client may post to the MQTT input topic."""
    speaker_expiry_s: int = 3600
    """MQTT 5 message expiry of the retained speaker state (0: never), so a killed run's state goes away;
    a clean exit clears it at once (docs/events.md)."""
    drain_timeout_s: float = 10.0
    """At the end of a replay, how long sinks get to deliver what they hold."""
    cancel_timeout_s: float = 5.0
    """How long a cancelled task gets to finish before it is reported as dangling."""


@dataclass(frozen=True)
class WorkerParams:
    """Tunables of one cluster worker (``live.py --worker``, stream/cluster/: JetStream; units in the names).

    Args:
        worker_id: Stable name (in events as ``worker_id``).
        member / members: This worker's index in the static partition mapping, and the mapping's size.
        standby: Also pull every other partition (taken over when its worker stops pulling).
        standby_delay_s: Standby pulls start this late, so that at a cluster start each partition is
            pinned to its own member.
        state_every: Save the state blob every N steps (replay after a takeover is at most N - 1 steps).
        idle_release_s: A conversation without input for this long leaves memory (its progress stays).
        batch: Inputs per pull request.
        max_state_bytes: Bound of a state blob.
    """

    worker_id: str
    member: int = 0
    members: int = 1
    standby: bool = True
    standby_delay_s: float = 30.0
    state_every: int = 8
    idle_release_s: float = 600.0
    batch: int = 64
    max_state_bytes: int = 1 << 20  # 1 MiB

    def __post_init__(self) -> None:
        if not self.worker_id or any(c in self.worker_id for c in "/+#\x00") or len(self.worker_id) > 64:
            raise ValueError(f"bad worker id {self.worker_id!r}: 1-64 characters, no '/', '+', '#'")
        if not 0 <= self.member < self.members or self.state_every < 1 or self.batch < 1:
            raise ValueError("0 <= member < members, state_every >= 1 and batch >= 1 are required")
