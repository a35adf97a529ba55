"""Command line of a cluster worker: ``live.py --worker`` and ``python -m stream.cluster``.

:func:`main` takes the backend factory as a parameter so the tests can run the same worker command line
with their toy backend (``python -m tests.support.toy_worker``) without it shipping in the package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from stream.cluster.backend import ConversationBackend
from stream.cluster.jetstream import Layout
from stream.cluster.worker import Worker
from stream.mqtt.client import install_loop_exception_handler
from stream.mqtt.settings import MqttSettings
from stream.mqtt.topics import DEFAULT_ROOT
from stream.params import WorkerParams
from stream.sinks.mqtt import MqttSink

__all__ = ["BackendFactory", "build_parser", "main", "make_backend"]

log = logging.getLogger("stream.cluster.worker")

BackendFactory = Callable[[argparse.Namespace, str], ConversationBackend]
"""(parsed command line, worker id) -> the worker's backend; raises ValueError/OSError for bad settings."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="live.py --worker",
        description="Headless analyzer worker: takes conversations from NATS JetStream (inputs, partitions, "
                    "progress) and publishes their events to an MQTT 5 broker. Start any number of them; "
                    "see docs/deployment.md.",
        epilog="example: python live.py --worker --worker-id w1 --member 0/2 --nats nats://127.0.0.1:4222 "
               "--mqtt mqtt://127.0.0.1:1883 --checkpoint checkpoints/meld-text",
    )
    ap.add_argument("--worker-id", default=None,
                    help="stable name of this worker, shown in events (default: <hostname>-<pid>)")
    ap.add_argument("--nats", metavar="URL", default="nats://127.0.0.1:4222",
                    help="NATS server(s) with JetStream: nats://host:4222[,nats://host2:4222]")
    ap.add_argument("--mqtt", default="mqtt://127.0.0.1:1883",
                    help="MQTT 5 broker the events go to: mqtt://[user:pass@]host:port or mqtts://...; "
                         "credentials may come from PCGNET_MQTT_USERNAME / PCGNET_MQTT_PASSWORD")
    ap.add_argument("--mqtt-ca", metavar="FILE", default=None, help="CA bundle of the broker certificate (mqtts://)")
    ap.add_argument("--mqtt-cert", metavar="FILE", default=None, help="client certificate for mutual TLS (mqtts://)")
    ap.add_argument("--mqtt-key", metavar="FILE", default=None, help="private key of --mqtt-cert")
    ap.add_argument("--checkpoint", default="checkpoints/default",
                    help="causal PCGNet checkpoint directory (default: checkpoints/default)")
    ap.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda)")
    ap.add_argument("--root", default=DEFAULT_ROOT, help="topic root (also names the JetStream objects)")
    ap.add_argument("--partitions", type=int, default=8,
                    help="input partitions; every worker and publisher of a cluster uses the same number")
    ap.add_argument("--member", default="0/1", metavar="I/M",
                    help="this worker's index I in a static mapping of M members: it takes partitions p %% M == I")
    ap.add_argument("--no-standby", action="store_true",
                    help="pull only this member's own partitions (no hot standby for the others)")
    ap.add_argument("--standby-delay-s", type=float, default=30.0,
                    help="a standby starts pulling a partition nobody holds after this (s)")
    ap.add_argument("--priority-timeout-s", type=float, default=5.0,
                    help="a worker that stops pulling this long loses its partitions to a standby (s)")
    ap.add_argument("--ack-wait-s", type=float, default=10.0,
                    help="an input delivered to a worker that died is redelivered after this (s)")
    ap.add_argument("--replicas", type=int, default=1, help="JetStream replicas (3 on a 3-node NATS cluster)")
    ap.add_argument("--idle-release-s", type=float, default=600.0, help="forget a quiet conversation's copy (s)")
    ap.add_argument("--state-every", type=int, default=8,
                    help="save a conversation's state blob every N steps (a takeover replays at most N - 1)")
    ap.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    return ap


def make_backend(args: argparse.Namespace, worker_id: str) -> ConversationBackend:
    """The causal PCGNet of ``--checkpoint`` (torch is imported only here)."""
    if not Path(args.checkpoint).exists():
        raise ValueError(f"checkpoint {args.checkpoint} not found; pass --checkpoint PATH (a causal model)")
    from stream.cluster.pcgnet_backend import PCGNetBackend

    return PCGNetBackend.from_checkpoint(args.checkpoint, worker_id=worker_id, device=args.device)


def _member(text: str) -> tuple[int, int]:
    i, _, m = text.partition("/")
    if not (i.isdigit() and m.isdigit()) or int(m) < 1 or int(i) >= int(m):
        raise ValueError(f"--member {text!r}: expected I/M with 0 <= I < M, e.g. 0/2")
    return int(i), int(m)


def _settings(args: argparse.Namespace, worker_id: str) -> tuple[MqttSettings, Layout, WorkerParams]:
    """Everything checked before the model loads (one-line ValueError)."""
    if not args.nats.startswith(("nats://", "tls://")):
        raise ValueError(f"bad NATS URL {args.nats!r}: expected nats://host:port")
    if not 1 <= args.partitions <= 1024 or args.state_every < 1:
        raise ValueError("--partitions must be 1..1024 and --state-every >= 1")
    settings = MqttSettings.from_url(args.mqtt, ca_file=args.mqtt_ca, cert_file=args.mqtt_cert, key_file=args.mqtt_key)
    member, members = _member(args.member)
    layout = Layout(root=args.root, partitions=args.partitions, replicas=args.replicas,
                    priority_timeout_s=args.priority_timeout_s, ack_wait_s=args.ack_wait_s)
    params = WorkerParams(worker_id=worker_id, member=member, members=members, standby=not args.no_standby,
                        standby_delay_s=args.standby_delay_s, state_every=args.state_every,
                        idle_release_s=args.idle_release_s)
    return settings, layout, params


def main(argv: Sequence[str] | None = None, *, backend_factory: BackendFactory = make_backend) -> int:
    """Entry point of ``live.py --worker`` and ``python -m stream.cluster``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)
    logging.getLogger("nats.js.kv").setLevel(logging.ERROR)  # "server may ignore filters" (< 2.10; we pin 2.15)
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    try:
        settings, layout, params = _settings(args, worker_id)
        backend = backend_factory(args, worker_id)
    except (ValueError, OSError) as exc:
        print(f"live.py --worker: {exc}", file=sys.stderr)
        return 2
    log.info("worker %s: NATS %s, events to %s, backend %s", worker_id, args.nats, settings.redacted_url(),
             backend.name)

    async def serve() -> int:
        install_loop_exception_handler()  # aiomqtt socket races on broker loss: one line, not a traceback
        sink = MqttSink(settings, root=args.root, worker_id=worker_id)
        worker = Worker(args.nats, layout, backend, sink, params)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, worker.stop)
        try:
            await worker.run()
        except (OSError, TimeoutError) as exc:  # NATS unreachable at start
            print(f"live.py --worker: NATS {args.nats}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        if worker.fatal is not None:
            print(f"live.py --worker: {worker.fatal}", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
