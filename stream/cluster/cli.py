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
from stream.cluster.worker import Worker
from stream.mqtt.client import install_loop_exception_handler
from stream.mqtt.settings import MqttSettings
from stream.mqtt.topics import DEFAULT_ROOT
from stream.params import WorkerParams

__all__ = ["BackendFactory", "build_parser", "main", "make_backend"]

log = logging.getLogger("stream.cluster.worker")

BackendFactory = Callable[[argparse.Namespace, str], ConversationBackend]
"""(parsed command line, worker id) -> the worker's backend; raises ValueError/OSError for bad settings."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="live.py --worker",
        description="Headless analyzer worker: takes conversations from an MQTT 5 broker (no local sources). "
                    "Start any number of them against one broker; see docs/deployment.md.",
        epilog="example: python live.py --worker --worker-id w1 --mqtt mqtt://127.0.0.1:1883 "
               "--checkpoint checkpoints/meld-text",
    )
    ap.add_argument("--worker-id", default=None,
                    help="stable name of this worker, shown in events (default: <hostname>-<pid>)")
    ap.add_argument("--mqtt", default="mqtt://127.0.0.1:1883",
                    help="broker URL mqtt://[user:pass@]host:port or mqtts://...; credentials may come from "
                         "PCGNET_MQTT_USERNAME / PCGNET_MQTT_PASSWORD")
    ap.add_argument("--mqtt-ca", metavar="FILE", default=None, help="CA bundle of the broker certificate (mqtts://)")
    ap.add_argument("--mqtt-cert", metavar="FILE", default=None, help="client certificate for mutual TLS (mqtts://)")
    ap.add_argument("--mqtt-key", metavar="FILE", default=None, help="private key of --mqtt-cert")
    ap.add_argument("--checkpoint", default="checkpoints/default",
                    help="causal PCGNet checkpoint directory (default: checkpoints/default)")
    ap.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda)")
    ap.add_argument("--group", default="pcgnet-workers", help="shared-subscription group of the cluster")
    ap.add_argument("--root", default=DEFAULT_ROOT, help="topic root")
    ap.add_argument("--claim-settle-s", type=float, default=0.15, help="wait for competing claims (s)")
    ap.add_argument("--gap-timeout-s", type=float, default=5.0, help="skip a missing input after this (s)")
    ap.add_argument("--idle-release-s", type=float, default=600.0, help="release a quiet conversation (s)")
    ap.add_argument("--max-conversations", type=int, default=2000, help="claim nothing beyond this")
    ap.add_argument("--state-every", type=int, default=1,
                    help="publish a conversation's state blob every N steps (state traffic / N; longer replay)")
    ap.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    js = ap.add_argument_group("JetStream (docs/deployment.md): inputs, partitions and progress on NATS; "
                               "events still go to the MQTT 5 broker of --mqtt")
    js.add_argument("--nats", metavar="URL", default=None,
                    help="NATS server(s) nats://host:4222[,nats://...]: run on JetStream")
    js.add_argument("--partitions", type=int, default=8, help="input partitions (fixed for the stream's life)")
    js.add_argument("--member", default="0/1", metavar="I/M",
                    help="this worker's index I in a static mapping of M members: it takes partitions p %% M == I")
    js.add_argument("--no-standby", action="store_true", help="pull only this member's own partitions")
    js.add_argument("--standby-delay-s", type=float, default=3.0, help="standby pulls start this late (s)")
    js.add_argument("--priority-timeout-s", type=float, default=5.0,
                    help="a worker silent this long loses its partitions to a standby (s)")
    js.add_argument("--ack-wait-s", type=float, default=10.0, help="redelivery of an unacknowledged input (s)")
    js.add_argument("--replicas", type=int, default=1, help="JetStream replicas (3 on a 3-node NATS cluster)")
    return ap


def _member(text: str) -> tuple[int, int]:
    i, _, m = text.partition("/")
    if not (i.isdigit() and m.isdigit()) or int(m) < 1 or int(i) >= int(m):
        raise ValueError(f"--member {text!r}: expected I/M with 0 <= I < M, e.g. 0/2")
    return int(i), int(m)


def serve_jetstream(args: argparse.Namespace, worker_id: str, settings: MqttSettings,
                    backend: ConversationBackend) -> int:
    """``live.py --worker --nats URL``: the JetStream worker (stream/cluster/jsworker.py)."""
    from stream.cluster.jetstream import Layout
    from stream.cluster.jsworker import JetStreamWorker, NodeParams
    from stream.sinks.mqtt import MqttSink

    member, members = _member(args.member)
    layout = Layout(root=args.root, partitions=args.partitions, replicas=args.replicas,
                    priority_timeout_s=args.priority_timeout_s, ack_wait_s=args.ack_wait_s)
    params = NodeParams(worker_id=worker_id, member=member, members=members, standby=not args.no_standby,
                        standby_delay_s=args.standby_delay_s, state_every=args.state_every,
                        idle_release_s=args.idle_release_s)

    async def serve() -> int:
        install_loop_exception_handler()
        sink = MqttSink(settings, root=args.root, worker_id=worker_id)
        worker = JetStreamWorker(args.nats, layout, backend, sink, params)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, worker.stop)
        await worker.run()
        if worker.fatal is not None:
            print(f"live.py --worker: {worker.fatal}", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(serve())


def make_backend(args: argparse.Namespace, worker_id: str) -> ConversationBackend:
    """The causal PCGNet of ``--checkpoint`` (torch is imported only here)."""
    if not Path(args.checkpoint).exists():
        raise ValueError(f"checkpoint {args.checkpoint} not found; pass --checkpoint PATH (a causal model)")
    from stream.cluster.pcgnet_backend import PCGNetBackend

    return PCGNetBackend.from_checkpoint(args.checkpoint, worker_id=worker_id, device=args.device)


def main(argv: Sequence[str] | None = None, *, backend_factory: BackendFactory = make_backend) -> int:
    """Entry point of ``live.py --worker`` and ``python -m stream.cluster``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)
    logging.getLogger("nats.js.kv").setLevel(logging.ERROR)  # "server may ignore filters" (< 2.10; we pin 2.15)
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    try:
        settings = MqttSettings.from_url(args.mqtt, ca_file=args.mqtt_ca, cert_file=args.mqtt_cert,
                                         key_file=args.mqtt_key)
        params = WorkerParams(worker_id=worker_id, root=args.root, group=args.group,
                              claim_settle_s=args.claim_settle_s, gap_timeout_s=args.gap_timeout_s,
                              idle_release_s=args.idle_release_s, max_conversations=args.max_conversations,
                              state_every=args.state_every)
        if args.nats:
            _member(args.member)
        backend = backend_factory(args, worker_id)
    except (ValueError, OSError) as exc:
        print(f"live.py --worker: {exc}", file=sys.stderr)
        return 2
    log.info("worker %s: broker %s, backend %s", worker_id, settings.redacted_url(), backend.name)
    if args.nats:
        return serve_jetstream(args, worker_id, settings, backend)

    async def serve() -> int:
        install_loop_exception_handler()  # aiomqtt socket races on broker loss: one line, not a traceback
        worker = Worker(settings, backend, params)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, worker.stop)
        await worker.run()
        if worker.fatal is not None:
            print(f"live.py --worker: {worker.fatal}", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
