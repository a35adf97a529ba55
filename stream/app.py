"""Command line of the live analyzer (``python live.py``): flags -> params, sources, sinks -> Runtime."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import textwrap
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from extractors.asr import ASR_CHOICES, valid_spec

from .ids import safe_path_component
from .params import DEFAULT_ASR, CameraParams, InferenceParams, LiveParams, MicParams, SpeakerParams

if TYPE_CHECKING:
    from .capture.audiofile import AudioFileSource
    from .capture.channels import ChannelSpeakersSource
    from .runtime import SessionTally

log = logging.getLogger("stream")

EPILOG = textwrap.dedent("""\
    examples:
      python live.py --replay examples/demo                      replay the bundled demo in real time (TUI)
      python live.py --replay examples/demo --speed 0 --no-tui   as fast as possible, one line per event
      python live.py --replay examples/demo --mqtt mqtt://127.0.0.1:1883 --events out.jsonl
      python live.py --transcript - --session standup            type "Alice: hello" lines on stdin
      python live.py --transcript meeting.txt --speed 0          a "Speaker: text" file
      python live.py --transcript mqtt --mqtt mqtt://127.0.0.1:1883
                      (an ASR or agent posts {"speaker":..,"text":..} to pcgnet/<session>/in/utterance)
      python live.py --mic --camera --record runs/meeting1       capture and record a session
      python live.py --audio meeting.mp3 --speed 0 --no-tui      analyse a recording: VAD, Whisper, speakers
      python live.py --video meeting.mp4 --voice Ann=ann.wav     a video; Ann's voice is named, others numbered
      python live.py --replay examples/demo --web 8080          live dashboard at http://127.0.0.1:8080/
      mosquitto_sub -t 'pcgnet/#' -v                             watch the events (schema: docs/events.md)
      python live.py --worker --mqtt mqtt://127.0.0.1:1883      headless scale-out worker taking conversations
                  from the broker (`live.py --worker --help`, docs/deployment.md)

    MQTT credentials may come from PCGNET_MQTT_USERNAME / PCGNET_MQTT_PASSWORD instead of the URL.
    Nothing listens on the network unless --web is given (loopback only, unless a token is set); the
    analyzer otherwise only connects out to the broker you name.
""")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="live.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Real-time conversation emotion and emotion-shift analyzer (causal PCGNet). Sources -> "
                    "utterances -> features -> per-session conversation state -> predictions -> sinks "
                    "(terminal UI or lines, MQTT, JSONL).")
    src = p.add_argument_group("sources (any combination; several sessions run in one process)")
    src.add_argument("--replay", metavar="DIR", action="append", default=[],
                     help="replay a recorded session folder (repeat for several sessions), e.g. examples/demo")
    src.add_argument("--speed", type=float, default=1.0,
                     help="replay / transcript-file pace: 1.0 real time (default), 2 twice as fast, 0 as fast as "
                          "possible")
    src.add_argument("--transcript", metavar="-|FILE|mqtt",
                     help="'Speaker: text' lines from stdin (-) or FILE, or 'mqtt': JSON utterances posted to "
                          "pcgnet/<session>/in/utterance on the --mqtt broker")
    src.add_argument("--mic", action="store_true",
                     help="capture the microphone (sounddevice/PortAudio); utterances cut by voice activity")
    src.add_argument("--mic-device", metavar="NAME|INDEX", help="input device (default: the system default)")
    src.add_argument("--audio", metavar="FILE", action="append", default=[],
                     help="analyse a recording (wav, flac, ogg, mp3, ...) through the microphone path (VAD, ASR, "
                          "diarisation) at --speed; times are seconds from the file start (repeat for several)")
    src.add_argument("--video", metavar="FILE", action="append", default=[],
                     help="the same for a video (mp4, ...): its audio track, plus its frames for the visual path")
    src.add_argument("--camera", metavar="INDEX|FILE", nargs="?", const="0",
                     help="attach camera frames (OpenCV) to the local session's utterances; default device 0, "
                          "or a video file")
    src.add_argument("--session", default=None,
                     help="session id of the local sources (mic, camera, stdin/file transcript; default 'live') "
                          "and of a single --audio/--video file (default: the file name)")
    src.add_argument("--session-config", metavar="FILE",
                     help='JSON {"personas": {"Alice": [5 numbers], ...}} fixing speakers\' personas')
    aud = p.add_argument_group("audio path (--mic, --audio, --video)")
    aud.add_argument("--channel", metavar="N", type=int,
                     help="analyse only channel N (1 = left) of each --audio/--video file, e.g. the one microphone "
                          "of a two-track recording (default: the average of all channels)")
    aud.add_argument("--channels-as-speakers", action="store_true",
                     help="each channel of an --audio/--video file is one person (phone calls, podcasts): "
                          "speakers 'Channel 1', 'Channel 2', ... instead of diarisation")
    aud.add_argument("--vad", choices=("auto", "silero", "energy"), default="auto",
                     help="segmentation: silero-vad, an energy threshold, or auto (silero when installed)")
    aud.add_argument("--asr", default="auto", type=_asr_choice, metavar="|".join(("auto", "none", *ASR_CHOICES)),
                     help=f"speech to text (default auto = {DEFAULT_ASR}, chosen by measurement in docs/live.md; "
                          "whisper-base: fewer errors, twice the CPU; pocketsphinx runs in its own process)")
    aud.add_argument("--speaker", metavar="NAME",
                     help="one fixed speaker name for every utterance, no diarisation (default: diarise into "
                          "'Speaker 1', 'Speaker 2', ...)")
    aud.add_argument("--speakers", metavar="N", type=int, default=SpeakerParams.max_speakers,
                     help=f"at most N speakers per audio session (default {SpeakerParams.max_speakers})")
    aud.add_argument("--speakers-exact", metavar="N", type=int, default=None,
                     help="exactly N speakers when known: at most N, and never merged below N")
    aud.add_argument("--voice", metavar="NAME=FILE", action="append", default=[],
                     help="enroll a known voice from a recording of it, so its utterances are named NAME (repeat)")
    out = p.add_argument_group("outputs")
    out.add_argument("--mqtt", metavar="URL",
                     help="broker mqtt://[user:pass@]host:port (mqtts:// for TLS); events at QoS 1 on "
                          "pcgnet/<session>/{emotion,shift,speakers/<speaker>} and pcgnet/$status/<client>")
    out.add_argument("--topic-root", metavar="ROOT", default="pcgnet",
                     help="first topic level(s) of every MQTT topic (default pcgnet; docs/events.md)")
    out.add_argument("--mqtt-keepalive", metavar="S", type=int, default=60,
                     help="MQTT keep-alive: the broker publishes this process's will at most 1.5 x S seconds "
                          "after it stops answering (default 60)")
    out.add_argument("--status-interval", metavar="S", type=float, default=10.0,
                     help="refresh the retained online status record every S seconds (default 10)")
    out.add_argument("--speaker-expiry", metavar="S", type=int, default=3600,
                     help="MQTT 5 expiry of retained speaker state, seconds (0: never; default 3600)")
    out.add_argument("--mqtt-ca", metavar="FILE", help="CA bundle of the broker certificate (mqtts://)")
    out.add_argument("--mqtt-cert", metavar="FILE", help="client certificate for mutual TLS (mqtts://)")
    out.add_argument("--mqtt-key", metavar="FILE", help="private key of --mqtt-cert")
    out.add_argument("--spool", metavar="DIR",
                     help="keep outgoing MQTT events in an on-disk spool in DIR until the broker acknowledges "
                          "them: nothing is lost while the broker is away or if this process is killed "
                          "(bounded, drop-oldest; docs/reliability.md)")
    out.add_argument("--events", metavar="FILE", help="append every event to FILE as JSON lines (same JSON as MQTT)")
    out.add_argument("--record", metavar="DIR",
                     help="record the session (audio.wav, video.mp4, utterances.jsonl, meta.json, events.jsonl) "
                          "into DIR (one subfolder per session when there are several), for --replay")
    out.add_argument("--no-tui", action="store_true",
                     help="print one line per event instead of the terminal UI (the default when stdout is "
                          "not a terminal, or when typing utterances with --transcript -)")
    web = p.add_argument_group("web dashboard")
    web.add_argument("--web", metavar="[HOST:]PORT",
                     help="serve a live dashboard of every session at http://HOST:PORT/ (host 127.0.0.1 unless "
                          "given; port 0 picks a free one); when the sources end it stays up until Ctrl-C")
    web.add_argument("--web-token", metavar="TOKEN",
                     help="token the dashboard requires (open it once as /?token=TOKEN); needed for a "
                          "non-loopback HOST; prefer the PCGNET_WEB_TOKEN environment variable (ps shows flags)")
    mdl = p.add_argument_group("model")
    mdl.add_argument("--checkpoint", metavar="PATH", default="checkpoints/default",
                     help="causal PCGNet checkpoint directory (default checkpoints/default)")
    mdl.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto (cuda when available)")
    mdl.add_argument("--text-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                     help="text encoder dtype: auto (default) = bfloat16 only where the CPU has avx512_bf16 or "
                          "amx_bf16, float32 elsewhere (emulated bfloat16 is ~2.8x slower)")
    mdl.add_argument("--text-backend", choices=("torch", "onnx"), default="torch",
                     help="text encoder runtime: torch (default) or onnx (ONNX Runtime, float32, ~2.5x faster than "
                          "torch float32 on one thread; exported once into the cache on first use)")
    mdl.add_argument("--worker-id", help="copied into every event (scale-out)")
    mdl.add_argument("--shift-profile", metavar="NAME",
                     help="shift operating point stored in the checkpoint: sensitive, balanced (default) or precise "
                          "(docs/events.md lists each one's precision and recall)")
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    return p


def _asr_choice(value: str) -> str:
    if value in ("auto", "none") or valid_spec(value):
        return value
    raise argparse.ArgumentTypeError(f"unknown ASR {value!r} (choose from auto, none, {', '.join(ASR_CHOICES)})")


MIN_VOICE_S = 1.0
"""Shortest --voice recording accepted (enrollment needs a voice print)."""


def speaker_name(flag: str, name: str) -> str:
    """A speaker name given on the command line, checked by the validator of MQTT input's ``speaker`` (no
    control or bidi characters, no lone surrogates, at most 128 characters): a name must not forge output
    lines or reach the terminal as escape codes, whichever way it came in."""
    from .mqtt.inbound import InboundError, parse_utterance
    from .mqtt.topics import input_topic

    try:
        return parse_utterance(input_topic("flags"), json.dumps({"speaker": name, "text": "-"})).speaker
    except InboundError as e:
        raise ValueError(f"{flag} {name!r}: {e.message}") from None


def _voices(specs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """--voice NAME=FILE pairs, every name and file checked before the model loads (ValueError, one line)."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path:
            raise ValueError(f"--voice {spec!r}: expected NAME=FILE")
        name = speaker_name("--voice", name)
        if not Path(path).is_file():
            raise ValueError(f"--voice {name}={path}: no such file")
        from .capture.audiofile import RATE, decode_audio
        from .capture.speech import AudioUnavailable
        try:
            seconds = decode_audio(path).size / RATE
        except (AudioUnavailable, ValueError) as e:
            raise ValueError(f"--voice {name}: {e}") from None
        if seconds < MIN_VOICE_S:
            raise ValueError(f"--voice {name}={path}: {seconds:.2f} s of audio; a voice needs at least "
                             f"{MIN_VOICE_S:g} s of the person speaking")
        out.append((name, path))
    return tuple(out)


def _recording_sessions(audio: Sequence[str], video: Sequence[str], session: str | None
                        ) -> list[tuple[str, bool, str]]:
    """(path, is_video, session id) of each --audio/--video file: --session for a single file, else the
    file name (made unique)."""
    from .mqtt.topics import topic_level

    files = [(f, False) for f in audio] + [(f, True) for f in video]
    out, seen = [], set()
    for path, is_video in files:
        sid = session if (session and len(files) == 1) else topic_level(Path(path).stem or "audio")
        base, n = sid, 1
        while sid in seen:
            n += 1
            sid = f"{base}#{n}"
        seen.add(sid)
        out.append((path, is_video, sid))
    return out


def _fail(msg: str, code: int = 2) -> int:
    print(f"live.py: error: {msg}", file=sys.stderr)
    return code


def file_summary(name: str, tally: SessionTally | None, duration_s: float) -> str:
    """The line ending a file's run: what it gave, so a script can tell a silent file from a full one."""
    utterances, speakers, errors, silent = (tally.utterances, len(tally.speakers), tally.errors, tally.no_event) \
        if tally else (0, 0, 0, 0)
    why = f" ({silent} without usable evidence for the model: no event)" if silent else ""
    return (f"live.py: done: {name}: {utterances} utterance(s){why}, {speakers} speaker(s), "
            f"{duration_s:.1f} s of audio, {errors} error(s)")


def _session_personas(path: str | None, session: str) -> dict[str, dict[str, Any]]:
    if not path:
        return {}
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read session config ({e})") from None
    personas = d.get("personas") if isinstance(d, dict) else None
    if not isinstance(personas, dict):
        raise ValueError(f"{path}: expected {{\"personas\": {{speaker: [5 numbers]}}}}")
    return {str(d.get("session_id") or session): personas}


def encoder_status(extractors: Mapping[str, Any]) -> dict[str, str]:
    """The text encoder's dtype and this CPU, for the startup line and the MQTT status record."""
    from extractors.cpu import detect
    from extractors.registry import backend_of, dtype_of

    text = extractors.get("t")
    dtype = dtype_of(text) if text is not None else None
    backend = backend_of(text) if text is not None else None
    return {"text_dtype": dtype or "none", "text_backend": backend or "none", "cpu": detect().describe()}


async def _amain(args: argparse.Namespace) -> int:  # noqa: C901 - straight-line wiring
    from .analyzer import load_analyzer
    from .capture.base import SessionClock
    from .features import FeatureConfigError
    from .inference import resolve_device_name
    from .record import SessionFormatError, SessionRecorder
    from .runtime import Runtime
    from .sinks.base import SinkSet

    session = args.session or "live"
    try:
        voices = _voices(args.voice)
        if args.speaker is not None:
            args.speaker = speaker_name("--speaker", args.speaker)
    except ValueError as e:
        return _fail(str(e))
    if args.speakers < 1:
        return _fail(f"--speakers must be >= 1 (got {args.speakers})")
    if args.speakers_exact is not None and args.speakers_exact < 1:
        return _fail(f"--speakers-exact must be >= 1 (got {args.speakers_exact})")
    exact = args.speakers_exact
    params = LiveParams(
        checkpoint=args.checkpoint, session_id=session, speed=args.speed, worker_id=args.worker_id,
        shift_profile=args.shift_profile, topic_prefix=args.topic_root, speaker_expiry_s=args.speaker_expiry,
        speakers=SpeakerParams(max_speakers=exact or args.speakers, min_speakers=exact or 1, voices=voices),
        inference=replace(InferenceParams(), device=resolve_device_name(args.device), text_dtype=args.text_dtype,
                          text_backend=args.text_backend),
        mic=replace(MicParams(), speaker=args.speaker, vad=args.vad, asr=args.asr,
                    device=int(args.mic_device) if (args.mic_device or "").isdigit() else args.mic_device),
        camera=replace(CameraParams(), device=int(args.camera) if (args.camera or "").isdigit() else
                       (args.camera or 0)))

    # Everything that can be wrong with the input is checked before the model loads.
    replays = []
    try:
        from .capture.replay import ReplaySource
        seen: dict[str, int] = {}
        for d in args.replay:
            src = ReplaySource(d, speed=args.speed)
            n = seen[src.session_id] = seen.get(src.session_id, 0) + 1
            if n > 1:
                src.session_id = f"{src.session_id}#{n}"
            replays.append(src)
    except (SessionFormatError, ValueError) as e:
        return _fail(str(e))
    from .capture.speech import AsrService, AudioUnavailable
    recordings = _recording_sessions(args.audio, args.video, args.session)
    if args.channel is not None and (args.channel < 1 or not recordings):
        return _fail(f"--channel {args.channel}: expected a channel number >= 1 of an --audio/--video file")
    channel = None if args.channel is None else args.channel - 1
    if args.channels_as_speakers and (channel is not None or args.speaker or not recordings):
        return _fail("--channels-as-speakers names the speakers of --audio/--video files by channel: "
                     "not with --channel or --speaker")
    n_channels = {}
    try:
        from .capture.audiofile import probe
        for path, video, _ in recordings:
            n_channels[path] = probe(path, video=video, channel=channel)
    except AudioUnavailable as e:
        return _fail(str(e))
    mqtt_settings = None
    if args.mqtt:
        from .mqtt.settings import MqttSettings
        try:
            mqtt_settings = MqttSettings.from_url(args.mqtt, ca_file=args.mqtt_ca, cert_file=args.mqtt_cert,
                                                  key_file=args.mqtt_key, keepalive_s=args.mqtt_keepalive)
        except ValueError as e:
            return _fail(f"--mqtt: {e}")
    from .mqtt.topics import check_root
    try:
        check_root(args.topic_root)
    except ValueError as e:
        return _fail(f"--topic-root: {e}")
    if args.status_interval <= 0 or args.speaker_expiry < 0:
        return _fail("--status-interval must be > 0 and --speaker-expiry >= 0")
    # One id for this process: its MQTT client id (status topic) and the `process` of its session events.
    process_id = (mqtt_settings.client_id if mqtt_settings is not None and mqtt_settings.client_id
                  else f"pcgnet-live-{uuid.uuid4().hex[:8]}")
    if mqtt_settings is not None:
        mqtt_settings = mqtt_settings.with_client_id(process_id)
    params = replace(params, process_id=process_id)
    if args.transcript == "mqtt" and mqtt_settings is None:
        return _fail("--transcript mqtt needs --mqtt URL (the broker to subscribe to)")
    if args.transcript not in (None, "-", "mqtt") and not Path(args.transcript).is_file():  # noqa: ASYNC240 - startup, no task runs yet
        return _fail(f"--transcript {args.transcript}: no such file")
    try:
        personas = _session_personas(args.session_config, session)
    except ValueError as e:
        return _fail(str(e))
    if args.events:
        try:
            Path(args.events).parent.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - startup
            with open(args.events, "a", encoding="utf-8"):  # noqa: ASYNC230 - startup: fail now, not mid-run
                pass
        except OSError as e:
            return _fail(f"--events {args.events}: cannot write ({e.strerror})")
    if args.record and Path(args.record).is_dir() and any(Path(args.record).iterdir()):  # noqa: ASYNC240
        return _fail(f"--record {args.record}: folder exists and is not empty (recordings are never mixed)")
    if args.camera is not None and not (args.mic or args.transcript):
        return _fail("--camera adds frames to the utterances of the local session (--mic or --transcript); "
                     "a replay brings its own recorded video")
    web_bind = web_token = None
    if args.web is not None:
        from .web.server import WebAccessError, parse_bind, resolve_token
        try:
            web_bind = parse_bind(args.web)
            web_token = resolve_token(web_bind, args.web_token, dict(os.environ), params.web)
        except WebAccessError as e:
            return _fail(f"--web: {e}")
    elif args.web_token:
        return _fail("--web-token needs --web [HOST:]PORT")
    if not (replays or args.transcript or args.mic or recordings):
        return _fail("nothing to analyse: give --replay DIR, --transcript -|FILE|mqtt, --mic, --audio FILE or "
                     "--video FILE (see --help)")
    asr = AsrService(args.asr, params.asr) if (args.mic or recordings) else None
    if asr is not None:
        try:  # a named ASR that cannot load is an error now, not a session without text later
            await asr.start()
        except AudioUnavailable as e:
            return _fail(str(e))

    from pcgnet.checkpoint import CheckpointError
    ck_path = Path(args.checkpoint)
    if not ck_path.exists():  # noqa: ASYNC240 - startup
        hint = " (the MELD-trained default model is shipped there by the project; see docs/live.md)" \
            if args.checkpoint == "checkpoints/default" else ""
        return _fail(f"checkpoint {args.checkpoint} not found{hint}; pass --checkpoint PATH")
    try:
        analyzer = load_analyzer(ck_path, params, session_personas=personas)
    except (CheckpointError, FeatureConfigError) as e:
        return _fail(str(e))

    sinks = SinkSet()
    # typing utterances on the terminal the UI redraws would garble both: lines then
    use_tui = not args.no_tui and sys.stdout.isatty() and not (args.transcript == "-" and sys.stdin.isatty())
    tui = None
    if use_tui:
        from rich.console import Console
        from rich.logging import RichHandler

        from .sinks.tui import TuiSink
        console = Console()
        logging.getLogger().handlers[:] = [RichHandler(console=console, show_path=False)]
        tui = TuiSink(params.ui, console=console, title=f"PCGNet live · {Path(args.checkpoint).name}")
        sinks.add(tui)
    else:
        from .sinks.lines import LinesSink
        sinks.add(LinesSink())
    if args.events:
        from .sinks.jsonl import JsonlSink
        sinks.add(JsonlSink(args.events, worker_id=params.worker_id))
    if mqtt_settings is not None:
        from .sinks.mqtt import MqttSink
        sinks.add(MqttSink(mqtt_settings, root=params.topic_prefix, worker_id=params.worker_id,
                           spool_dir=args.spool, speaker_expiry_s=params.speaker_expiry_s,
                           status_interval_s=args.status_interval))

    web_server = web_sink = None
    if web_bind is not None:
        from .sinks.web import WebSink
        from .web.hub import DashboardHub
        from .web.server import DashboardServer
        hub = DashboardHub(params.web)
        web_sink = WebSink(hub, params.web, params.ui, worker_id=params.worker_id)
        sinks.add(web_sink)
        web_server = DashboardServer(hub, web_bind, token=web_token, params=params.web,
                                     title=f"PCGNet live · {Path(args.checkpoint).name}")
        try:
            url = await web_server.start()
        except OSError as e:
            return _fail(f"--web {args.web}: cannot listen ({e.strerror or e})")
        print(f"live.py: dashboard at {url}" + (" (open it once with ?token=TOKEN)" if web_token else ""),
              file=sys.stderr, flush=True)
        if tui is not None:  # the UI covers that line: its footer names the address too
            tui.title = f"{tui.title} · {url}"

    local = args.mic or args.transcript in ("-",) or (args.transcript not in (None, "mqtt"))
    n_local_sessions = len(replays) + len(recordings) + (1 if local else 0)
    recorder_factory = None
    if args.record:
        record_root = Path(args.record)
        single = n_local_sessions == 1 and args.transcript != "mqtt"

        def recorder_factory(session_id: str) -> SessionRecorder | None:
            path = record_root if single else record_root / safe_path_component(session_id)
            try:
                return SessionRecorder(path, session_id, checkpoint=args.checkpoint,
                                       video_fps=params.camera.fps_hz)
            except (SessionFormatError, OSError) as e:
                log.error("--record: %s; session %s is not recorded", e, session_id)
                return None

    runtime = Runtime(analyzer, sinks, params, recorder_factory=recorder_factory)
    encoder = encoder_status(analyzer.features.extractors)
    print(f"live.py: text encoder in {encoder['text_dtype']} ({encoder['text_backend']}) on {encoder['cpu']}",
          file=sys.stderr, flush=True)
    for sink in sinks.sinks:  # the MQTT status record carries the queue depths (overload is visible)
        if hasattr(sink, "status_provider"):
            sink.status_provider = runtime.queue_depths
        if hasattr(sink, "status_info"):  # and the text encoder's dtype and the CPU
            sink.status_info = encoder
    if tui is not None:  # the footer shows the queue depths
        tui.queue_depths = runtime.queue_depths
    if web_sink is not None:  # the figures show the queue depths, as the TUI footer does
        web_sink.queue_depths = runtime.queue_depths
    clock = SessionClock()
    for r in replays:
        runtime.add_source(r, finite=True)
    if args.transcript == "mqtt":
        from .capture.transcript import MqttTranscriptSource
        assert mqtt_settings is not None
        runtime.add_source(MqttTranscriptSource(mqtt_settings, root=params.topic_prefix), finite=False)
    elif args.transcript == "-":
        from .capture.transcript import TranscriptSource
        runtime.add_source(TranscriptSource(session, clock=clock), finite=True)
    elif args.transcript:
        from .capture.transcript import TranscriptSource
        runtime.add_source(TranscriptSource(session, path=args.transcript, speed=args.speed, clock=clock),
                           finite=True)
    if args.mic:
        from .capture.mic import MicrophoneSource
        runtime.add_source(MicrophoneSource(session, params.mic, params.vad, clock=clock, asr=asr,
                                            speakers=params.speakers, max_blocks=params.queues.audio_blocks),
                           finite=False)
    files: list[AudioFileSource | ChannelSpeakersSource] = []
    for path, video, sid in recordings:
        from .capture.audiofile import AudioFileSource
        from .capture.channels import ChannelSpeakersSource
        options: dict[str, Any] = {"speed": args.speed, "video": video, "asr": asr, "speakers": params.speakers,
                                   "max_frames_per_utterance": params.camera.max_frames_per_utterance}
        if args.channels_as_speakers:
            files.append(ChannelSpeakersSource(sid, path, n_channels[path], params.mic, params.vad, **options))
        else:
            files.append(AudioFileSource(sid, path, params.mic, params.vad, channel=channel, **options))
        runtime.add_source(files[-1], finite=True)
    if args.camera is not None:
        from .capture.camera import CameraSource
        runtime.attach_camera(session, CameraSource(session, params.camera, clock=clock))
    runtime.install_signal_handlers()
    try:
        try:
            code = await runtime.run()
        finally:
            if asr is not None:  # the recogniser's processes go as soon as analysis ends
                asr.close()
        if runtime.fatal:
            print(f"live.py: stopped: {runtime.fatal}", file=sys.stderr)
        for f in files:
            print(file_summary(f.path.name, runtime.tallies.get(f.session_id), f.decoded_s), file=sys.stderr)
        failures = [f.failed for f in files if f.failed] + runtime.source_failures
        for failure in failures:  # a source that failed is a failed run: scripts see it in the exit status
            print(f"live.py: error: {failure}", file=sys.stderr)
        if failures:
            code = code or 1
        if web_server is not None and not runtime.fatal and not runtime.cancelled:
            from .web.server import serve_until_signal
            print(f"live.py: analysis finished; the dashboard stays at {web_server.url} until Ctrl-C",
                  file=sys.stderr, flush=True)
            await serve_until_signal()
    finally:
        if web_server is not None:
            await web_server.close()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.speed < 0:
        return _fail(f"--speed must be >= 0 (got {args.speed})")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:  # the weight-loading progress bar would scribble over the UI
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        return asyncio.run(_amain(args))
    except KeyboardInterrupt:
        return 130
