"""The NATS JetStream objects of a cluster and the few requests nats-py has no helper for.

JetStream does the distributed part (docs/deployment.md): one input stream partitioned by session, a
durable pull consumer per partition whose priority group is ``pinned_client`` (the server gives a
partition to one puller at a time and refuses a stale one with ``423``), and two KV buckets (progress,
written with compare-and-set; state blobs). This module names and creates them and speaks the pull
protocol; :mod:`stream.cluster.progress` and :mod:`stream.cluster.worker` use them.

Subjects: an input published on ``<root>.<token>.in.utterance`` (an MQTT publish on
``<root>/<level>/in/utterance`` through NATS's MQTT listener lands on that subject) is stored as
``<root>-in.<partition>.<token>`` by the stream's subject transform ``partition(N, 1)``.
``<token>`` is the MQTT topic level of the session (:func:`stream.mqtt.topics.topic_level`) with
``.`` written ``//``, exactly as the MQTT listener maps topics to subjects, so both ways of publishing
reach the same partition and the same per-session subject.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from stream.mqtt.topics import DEFAULT_ROOT, decode_level, topic_level

__all__ = ["Layout", "PinLost", "PinnedPuller", "StoredInput", "create_all", "next_input", "pinned", "publish_input",
           "session_of", "subject_token", "unpin"]

log = logging.getLogger(__name__)

NS = 1_000_000_000
GROUP = "pcgnet"  # the consumers' one priority group
MSG_ID = "Nats-Msg-Id"
PIN_ID = "Nats-Pin-Id"


class PinLost(Exception):
    """The server gave this partition to another puller (our pin id is stale: ``423``)."""


@dataclass(frozen=True)
class Layout:
    """Names and sizes of a cluster's JetStream objects; every worker and publisher must agree on them.

    Attributes:
        root: MQTT topic root (inputs ``<root>/<session>/in/utterance``).
        partitions: Input partitions (consumers); fixed for the stream's life.
        replicas: Copies of the stream and buckets (3 on a 3-node NATS cluster).
        dedupe_window_s: The stream drops a re-sent ``<session>/<utterance_id>`` within this window.
        max_age_s: Inputs are kept this long (replay after the last state blob needs them).
        priority_timeout_s: A pinned puller silent this long loses its partition (the takeover time).
        ack_wait_s: An input delivered to a worker that died is redelivered after this.
    """

    root: str = DEFAULT_ROOT
    partitions: int = 8
    replicas: int = 1
    dedupe_window_s: float = 3600.0
    max_age_s: float = 7 * 86400.0
    priority_timeout_s: float = 5.0
    ack_wait_s: float = 10.0

    @property
    def stream(self) -> str:
        return f"{self.root}-inputs"

    @property
    def input_subjects(self) -> str:
        return f"{self.root}.*.in.utterance"

    @property
    def progress_bucket(self) -> str:
        return f"{self.root}-progress"

    @property
    def state_bucket(self) -> str:
        return f"{self.root}-state"

    def stored_subject(self, partition: int | str, token: str = "*") -> str:
        return f"{self.root}-in.{partition}.{token}"

    def consumer(self, partition: int) -> str:
        return f"{self.root}-p{partition}"

    def input_subject(self, session: str) -> str:
        return f"{self.root}.{subject_token(session)}.in.utterance"


def subject_token(session: str) -> str:
    """The subject token of a session: its MQTT topic level, ``.`` as ``//`` (NATS's MQTT mapping)."""
    return topic_level(session).replace(".", "//")


def session_of(token: str) -> str:
    """Inverse of :func:`subject_token` (raises ``ValueError`` for a token no session maps to)."""
    return decode_level(token.replace("//", "."))


async def create_all(nc: NatsClient, layout: Layout) -> None:
    """Creates (or updates to this layout) the stream, the partition consumers and the KV buckets."""
    js = nc.jetstream()
    stream = {
        "name": layout.stream, "subjects": [layout.input_subjects], "retention": "limits", "storage": "file",
        "num_replicas": layout.replicas, "duplicate_window": int(layout.dedupe_window_s * NS),
        "max_age": int(layout.max_age_s * NS), "discard": "old",
        "subject_transform": {"src": layout.input_subjects,
                              "dest": layout.stored_subject(f"{{{{partition({layout.partitions},1)}}}}",
                                                            "{{wildcard(1)}}")},
    }
    await _api(nc, f"$JS.API.STREAM.CREATE.{layout.stream}", stream, exists_ok=f"$JS.API.STREAM.UPDATE.{layout.stream}")
    for p in range(layout.partitions):
        name = layout.consumer(p)
        config = {
            "durable_name": name, "filter_subject": layout.stored_subject(p), "ack_policy": "explicit",
            "deliver_policy": "all", "ack_wait": int(layout.ack_wait_s * NS), "max_ack_pending": 10_000,
            "num_replicas": layout.replicas, "priority_policy": "pinned_client", "priority_groups": [GROUP],
            "priority_timeout": int(layout.priority_timeout_s * NS),
        }
        await _api(nc, f"$JS.API.CONSUMER.CREATE.{layout.stream}.{name}",
                   {"stream_name": layout.stream, "config": config, "action": ""})
    for bucket in (layout.progress_bucket, layout.state_bucket):
        try:
            await js.key_value(bucket)
        except Exception:  # noqa: BLE001 - nats-py raises BucketNotFoundError or NotFoundError by version
            await js.create_key_value(bucket=bucket, history=1, replicas=layout.replicas,
                                      max_value_size=4 * 1024 * 1024)


async def _api(nc: NatsClient, subject: str, body: dict[str, Any], *, exists_ok: str | None = None) -> dict[str, Any]:
    """One JetStream API request; ``RuntimeError`` with the server's one-line description on failure."""
    resp = json.loads((await nc.request(subject, json.dumps(body).encode(), timeout=10)).data)
    err = resp.get("error")
    if err and exists_ok and err.get("err_code") == 10058:  # stream name already in use: update it
        return await _api(nc, exists_ok, body)
    if err:
        raise RuntimeError(f"{subject}: {err.get('description')} ({err.get('err_code')})")
    return dict(resp)


async def publish_input(js: JetStreamContext, layout: Layout, session: str, payload: bytes,
                        utterance_id: str | None) -> int:
    """Publishes one input; the stream absorbs a re-send of ``<session>/<utterance_id>``. Returns its seq."""
    headers = {MSG_ID: f"{session}/{utterance_id}"} if utterance_id else None
    ack = await js.publish(layout.input_subject(session), payload, headers=headers)
    return int(ack.seq)


@dataclass(frozen=True)
class StoredInput:
    """One input as stored: stream sequence, stored subject (names the session), payload."""

    seq: int
    subject: str
    data: bytes

    @property
    def session(self) -> str:
        return session_of(self.subject.split(".", 2)[2])


async def next_input(js: JetStreamContext, layout: Layout, subject: str, from_seq: int) -> StoredInput | None:
    """The first stored input on ``subject`` at or after ``from_seq`` (None: there is none yet)."""
    try:
        m = await js._jsm.get_msg(layout.stream, seq=max(1, from_seq), subject=subject, next=True)
    except NotFoundError:
        return None
    return StoredInput(int(m.seq or 0), str(m.subject), bytes(m.data or b""))


async def pinned(nc: NatsClient, layout: Layout, partition: int) -> str | None:
    """The pin id the server gave the partition's consumer (None: nobody holds it)."""
    resp = await nc.request(f"$JS.API.CONSUMER.INFO.{layout.stream}.{layout.consumer(partition)}", b"", timeout=5)
    groups = json.loads(resp.data).get("priority_groups") or []
    return next((str(g["pinned_client_id"]) for g in groups if g.get("pinned_client_id")), None)


async def unpin(nc: NatsClient, layout: Layout, partition: int) -> None:
    """Asks the server to unpin a partition now (a graceful exit), so a standby takes it at once."""
    await _api(nc, f"$JS.API.CONSUMER.UNPIN.{layout.stream}.{layout.consumer(partition)}", {"group": GROUP})


class PinnedPuller:
    """Pulls one partition's consumer as a member of its pinned-client priority group.

    The first pull that the server pins answers with a ``Nats-Pin-Id`` header; later pulls carry it.
    A ``423`` answer means the server pinned someone else since (we were paused or cut off for longer
    than the priority timeout): :class:`PinLost`, and everything this worker did for the partition is
    stale. nats-py has no helper for priority groups, so this speaks ``CONSUMER.MSG.NEXT`` itself.
    """

    def __init__(self, nc: NatsClient, layout: Layout, partition: int) -> None:
        self.nc, self.layout, self.partition = nc, layout, partition
        self.pin_id: str | None = None
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{layout.stream}.{layout.consumer(partition)}"

    async def messages(self, batch: int, expires_s: float) -> AsyncIterator[Msg]:
        """This partition's messages as the server hands them over, for as long as we hold the pin.

        Pull requests of ``batch`` messages follow each other on one inbox, each held by the server for at
        most ``expires_s`` (keep it under the priority timeout: an unbroken chain of requests is what keeps
        the pin). Raises :class:`PinLost` when the server answers ``423``. Never drops a delivered message:
        the inbox lives as long as the iterator.
        """
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, pending_msgs_limit=-1, pending_bytes_limit=-1)
        try:
            while True:
                req: dict[str, Any] = {"batch": batch, "expires": int(expires_s * NS), "group": GROUP}
                if self.pin_id:
                    req["id"] = self.pin_id
                await self.nc.publish(self._subject, json.dumps(req).encode(), reply=inbox)
                received = 0
                while received < batch:
                    try:
                        m = await sub.next_msg(timeout=expires_s + 2.0)
                    except nats.errors.TimeoutError:
                        break  # the server forgot the request (restart): ask again
                    status = (m.headers or {}).get("Status")
                    if status is None:
                        pin = (m.headers or {}).get(PIN_ID)
                        if pin:
                            self.pin_id = pin
                        received += 1
                        yield m
                    elif status == "423":
                        self.pin_id = None
                        raise PinLost(f"partition {self.partition}: "
                                      f"{(m.headers or {}).get('Description', 'pin id mismatch')}")
                    elif status == "100":
                        continue  # idle heartbeat
                    else:  # 404 no messages, 408 request expired, 409 request closed: the request is over
                        if status not in ("404", "408", "409"):
                            log.warning("partition %d: pull answered %s %s", self.partition, status,
                                        (m.headers or {}).get("Description", ""))
                        break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
