"""A whole cluster on one machine, for tests, benchmarks and demos: nats-server + mosquitto + worker processes.

Real parts only: a nats-server with JetStream (:mod:`tests.support.nats`) and a mosquitto 2 broker
(:mod:`tests.support.broker`) on free loopback ports, workers started as separate processes exactly as an
operator would (``python live.py --worker``; with ``toy=True`` the same command line with the toy backend,
``python -m tests.support.toy_worker``), a publisher of scripted conversations (:func:`publish_script`,
message id ``<session>/<utterance_id>``) and a subscriber on the MQTT 5 broker (:class:`EventWatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from stream.mqtt.client import payload_bytes
from stream.mqtt.settings import MqttSettings
from stream.mqtt.topics import status_filter

__all__ = ["ClusterRun", "EventWatch", "WorkerProcess", "make_script", "publish_script", "start_js_worker"]

REPO = Path(__file__).resolve().parents[2]

_WORDS = ("great", "awful", "fine", "really", "no", "yes", "why", "wow", "sorry", "love", "hate", "okay", "the",
          "meeting", "deadline", "budget", "thanks", "what", "never", "again", "happy", "angry", "scared")


def make_script(n_conversations: int, n_utterances: int, seed: int = 0, prefix: str = "meeting"
                ) -> dict[str, list[dict[str, Any]]]:
    """Deterministic scripted conversations: session id -> input utterances (the in/utterance JSON)."""
    rng = random.Random(seed)
    script: dict[str, list[dict[str, Any]]] = {}
    for c in range(n_conversations):
        speakers = ["Alice", "Bob", "Carol"][: 2 + c % 2]
        t = 0.0
        utts = []
        for k in range(n_utterances):
            text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 7))).capitalize() + rng.choice(".!?")
            dur = 0.5 + 0.1 * len(text.split())
            utts.append({"speaker": speakers[k % len(speakers)] if rng.random() < 0.8 else rng.choice(speakers),
                         "text": text, "utterance_id": f"u{k + 1:04d}", "t_start": round(t, 3),
                         "t_end": round(t + dur, 3)})
            t += dur + 0.2
        script[f"{prefix}-{c:03d}"] = utts
    return script


@dataclass
class WorkerProcess:
    """One worker process (``python live.py --worker``, started by :func:`start_js_worker`), its log in ``log_path``."""

    worker_id: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """SIGKILL: no goodbye; a standby gets its partitions after the priority timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 15) -> int | None:
        """SIGTERM (graceful: finish the step, unpin its partitions), SIGKILL after ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class ClusterRun:
    """What a run produced: every emotion event received (duplicates included) and timings."""

    events: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    t_last_event: float = 0.0

    def unique(self) -> dict[str, dict[str, Any]]:
        """event id -> the first event with that id."""
        out: dict[str, dict[str, Any]] = {}
        for ev in self.events:
            out.setdefault(ev["event_id"], ev)
        return out

    def by_utterance(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """(session, utterance id) -> its distinct events (after de-duplication by event id)."""
        out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for ev in self.unique().values():
            out[(ev["session"], ev["utterance_id"])].append(ev)
        return out

    def load(self) -> Counter[str]:
        """Distinct emotion events per worker id."""
        return Counter(ev.get("worker_id", "?") for ev in self.unique().values())

    def workers_of(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for ev in self.unique().values():
            out[ev["session"]].add(ev.get("worker_id", "?"))
        return out


def start_js_worker(worker_id: str, nats_url: str, mqtt_port: int, log_dir: Path, *extra: str,
                    toy: bool = True) -> WorkerProcess:
    """``live.py --worker --nats URL`` (with ``toy``: the toy backend's command line), events to mosquitto."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    entry = ["-m", "tests.support.toy_worker"] if toy else [str(REPO / "live.py"), "--worker"]
    cmd = [sys.executable, *entry, "--worker-id", worker_id, "--nats", nats_url,
           "--mqtt", f"mqtt://127.0.0.1:{mqtt_port}", *extra]
    log_path = log_dir / f"{worker_id}.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    return WorkerProcess(worker_id, proc, log_path)


class EventWatch:
    """A subscriber on the MQTT 5 broker: every emotion event, and the workers' "online" status records.

    Each worker's sink keeps its own retained status record (``pcgnet/$status/<client_id>``).
    """

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings.with_client_id(f"harness-watch-{os.getpid()}-{random.randrange(1 << 30)}")
        self.run = ClusterRun()
        self.online: set[str] = set()
        self.errors: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventWatch:
        self._client = aiomqtt.Client(**self.settings.client_kwargs(max_queued_incoming_messages=0))
        await self._client.__aenter__()
        for topic in ("pcgnet/+/emotion", status_filter(), "pcgnet/+/error"):
            await self._client.subscribe(topic, qos=1)
        self._task = asyncio.get_running_loop().create_task(self._consume(), name="harness.watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def _consume(self) -> None:
        assert self._client is not None
        async for m in self._client.messages:
            body = payload_bytes(m)
            if not body:
                continue
            obj = json.loads(body)
            topic = str(m.topic)
            if topic.startswith(status_filter()[:-1]):
                if obj.get("state") == "online" and obj.get("worker_id"):
                    self.online.add(str(obj["worker_id"]))
            elif topic.endswith("/error"):
                self.errors.append(obj)
            else:
                self.run.events.append(obj)
                self.run.received_at.append(time.time())
                self.run.t_last_event = time.time()
            self._changed.set()

    async def until(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Returns once ``cond()`` holds (checked after every message); ``TimeoutError`` naming ``what``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not cond():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s") from None

    def have_all(self, script: dict[str, list[dict[str, Any]]]) -> bool:
        got = {(ev["session"], ev["utterance_id"]) for ev in self.run.events}
        return all((s, u["utterance_id"]) in got for s, utts in script.items() for u in utts)


async def publish_script(nats_url: str, layout: Any, script: dict[str, list[dict[str, Any]]], *,
                         interval_s: float = 0.0, rounds: range | None = None,
                         on_round: Callable[[int], Awaitable[None]] | None = None,
                         sent_at: dict[tuple[str, str], float] | None = None) -> None:
    """Publishes the script to JetStream round by round (utterance k of every conversation, then k+1),
    each with the message id ``<session>/<utterance_id>``; ``rounds`` restricts which rounds; ``sent_at``
    receives the time each utterance was first acknowledged by the stream."""
    import nats

    from stream.cluster.jetstream import publish_input

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        n = max(len(u) for u in script.values())
        for k in rounds if rounds is not None else range(n):
            t0 = time.monotonic()
            for session, utts in script.items():
                if k < len(utts):
                    await publish_input(js, layout, session, json.dumps(utts[k]).encode(), utts[k]["utterance_id"])
                    if sent_at is not None:
                        sent_at.setdefault((session, utts[k]["utterance_id"]), time.time())
            if on_round is not None:
                await on_round(k)
            if interval_s:
                await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - t0)))
    finally:
        await nc.close()
