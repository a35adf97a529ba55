"""Scale-out benchmark: throughput with 1, 2, 3 worker processes and hand-off time after a SIGKILL.

Everything is real: a mosquitto on loopback, workers started as ``python -m stream.cluster`` processes
with the causal PCGNet and the MiniLM text extractor, a feeder publishing scripted conversations and a
subscriber receiving the emotion events.

* Throughput: after a warm-up, N conversations x U utterances are published at once; utterances/s =
  utterances / (last event received - first input sent). Reported with the ratio to one worker.
* Hand-off: 3 workers serve conversations at a steady pace; the busiest worker is SIGKILLed. Per orphaned
  conversation: time from the kill to the new owner record (claim), to the new owner's ack (state
  restored, ready), and to its first event. Lost and duplicate events are counted.

Usage: ``python benchmarks/cluster.py [--checkpoint DIR] [--workers 1,2,3] [--conversations 60]``.
Without ``--checkpoint`` a random causal model of the paper's MELD size (hidden 200, 9 speaker slots,
MiniLM text) is made, which costs the same per step as a trained one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import aiomqtt  # noqa: E402

from stream.cluster.records import AckRecord, OwnerRecord, WorkerRecord  # noqa: E402
from stream.mqtt.topics import ack_filter, owner_filter, worker_filter  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402
from tests.support.cluster import (  # noqa: E402
    ClusterRun,
    WorkerProcess,
    collect_run,
    make_script,
    wait_workers_online,
)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def start_workers(broker: Mosquitto, ids: list[str], log_dir: Path, checkpoint: Path) -> dict[str, WorkerProcess]:
    procs = {w: WorkerProcess.start(w, broker.port, log_dir, "--checkpoint", str(checkpoint), "--log-level",
                                    "WARNING") for w in ids}
    asyncio.run(wait_workers_online(broker.settings, set(ids), timeout_s=180))
    return procs


def throughput(broker: Mosquitto, n_workers: int, checkpoint: Path, log_dir: Path, conversations: int,
               utterances: int, interval_s: float = 0.0, tag: str = "t") -> dict[str, Any]:
    """``interval_s`` = 0: everything at once (capacity); > 0: one utterance per conversation per interval."""
    ids = [f"{tag}{n_workers}-{i}" for i in range(n_workers)]
    procs = start_workers(broker, ids, log_dir, checkpoint)
    try:
        warm = make_script(3 * n_workers, 3, seed=9, prefix=f"warm{n_workers}")
        asyncio.run(collect_run(broker.settings, warm, timeout_s=120))
        script = make_script(conversations, utterances, seed=n_workers, prefix=f"{tag}p{n_workers}")
        cpu0 = {w: cpu_s(p.proc.pid) for w, p in procs.items()}
        broker0 = cpu_s(broker.proc.pid)
        run = asyncio.run(collect_run(broker.settings, script, interval_s=interval_s, timeout_s=300,
                                      resend_after_s=30.0))
        worker_cpu = sum(cpu_s(p.proc.pid) - cpu0[w] for w, p in procs.items())
        broker_cpu = cpu_s(broker.proc.pid) - broker0
        total = conversations * utterances
        uniq = run.unique()
        elapsed = run.t_last_event - run.t_first_send
        lat = [1000 * (t - run.sent_at.get((ev["session"], int(ev["utterance_id"][1:]) - 1), t))
               for ev, t in zip(run.events, run.received_at, strict=True)]
        return {"workers": n_workers, "utterances": total, "received": len(uniq), "elapsed_s": elapsed,
                "utt_per_s": len(uniq) / elapsed if elapsed > 0 else float("nan"),
                "load": dict(run.load()), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
                "worker_cpu_ms_per_utt": 1000 * worker_cpu / max(1, len(uniq)),
                "broker_cpu_ms_per_utt": 1000 * broker_cpu / max(1, len(uniq))}
    finally:
        for p in procs.values():
            p.stop()


async def retained_state_sizes(broker: Mosquitto, n: int, timeout_s: float = 5.0) -> list[int]:
    """Sizes of the retained state blobs (what a new owner downloads)."""
    sizes: list[int] = []
    async with aiomqtt.Client(**broker.settings.with_client_id("bench-state").client_kwargs()) as c:
        await c.subscribe("pcgnet/+/state", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                async for m in c.messages:
                    sizes.append(len(bytes(m.payload)))  # type: ignore[arg-type]
                    if len(sizes) >= n:
                        break
    return sizes


def handoff_latencies_ms(orphans: set[str], kill_t: float, victim: str,
                         owners: dict[str, list[tuple[float, OwnerRecord]]],
                         acks: dict[str, list[tuple[float, AckRecord]]], run: ClusterRun
                         ) -> tuple[list[float], list[float], list[float]]:
    """Per orphaned conversation, ms from the kill to the new owner's claim, its ack and its first event."""
    claim, ready, first_event = [], [], []
    for s in orphans:
        new = [(t, r) for t, r in owners.get(s, []) if t >= kill_t and r.worker != victim]
        if new:
            claim.append(1000 * (new[0][0] - kill_t))
        ack = [(t, a) for t, a in acks.get(s, []) if t >= kill_t and a.worker != victim]
        if ack:
            ready.append(1000 * (ack[0][0] - kill_t))
        evs = [t for ev, t in zip(run.events, run.received_at, strict=True)
               if ev["session"] == s and t >= kill_t and ev.get("worker_id") != victim]
        if evs:
            first_event.append(1000 * (min(evs) - kill_t))
    return claim, ready, first_event


async def handoff_run(broker: Mosquitto, procs: dict[str, WorkerProcess], conversations: int, rounds: int,
                      interval_s: float, kill_round: int) -> dict[str, Any]:
    script = make_script(conversations, rounds, seed=7, prefix="ho")
    owners: dict[str, list[tuple[float, OwnerRecord]]] = {}
    acks: dict[str, list[tuple[float, AckRecord]]] = {}
    state: dict[str, Any] = {"killed": None, "kill_t": None, "owned_by_victim": set()}

    async def watch() -> None:
        async with aiomqtt.Client(**broker.settings.with_client_id("bench-watch").client_kwargs()) as c:
            await c.subscribe(owner_filter(), qos=1)
            await c.subscribe(ack_filter(), qos=1)
            await c.subscribe(worker_filter(), qos=1)
            async for m in c.messages:
                payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
                if not payload:
                    continue
                now = time.time()
                if "/$cluster/workers/" in str(m.topic):
                    wrec = WorkerRecord.decode(payload)
                    if wrec.status == "offline" and wrec.worker == state["killed"] and "will_t" not in state:
                        state["will_t"] = now
                elif str(m.topic).endswith("/owner"):
                    rec = OwnerRecord.decode(payload)
                    owners.setdefault(rec.session, []).append((now, rec))
                else:
                    ack = AckRecord.decode(payload)
                    acks.setdefault(ack.session, []).append((now, ack))


    def on_event(run: Any) -> None:
        if state["killed"] is None and len(run.events) >= kill_round * conversations:
            load = run.load()
            victim = max((w for w in load if w in procs), key=lambda w: load[w])
            state["owned_by_victim"] = {s for s, recs in owners.items() if recs and recs[-1][1].worker == victim}
            state["kill_t"] = time.time()
            procs[victim].kill()
            state["killed"] = victim

    watcher = asyncio.get_running_loop().create_task(watch())
    await asyncio.sleep(0.5)
    run = await collect_run(broker.settings, script, interval_s=interval_s, on_event=on_event, timeout_s=120,
                            resend_after_s=2.0)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    sizes = await retained_state_sizes(broker, len(script))
    kill_t, victim = state["kill_t"], state["killed"]
    claim, ready, first_event = handoff_latencies_ms(state["owned_by_victim"], kill_t, victim, owners, acks, run)
    expected = conversations * rounds
    by_utt = run.by_utterance()
    will_ms = 1000 * (state["will_t"] - kill_t) if "will_t" in state else float("nan")
    return {"state_bytes_median": statistics.median(sizes) if sizes else None, "killed": victim, "orphans": len(state["owned_by_victim"]), "will_ms": will_ms, "claim_ms": claim, "ready_ms": ready,
            "first_event_ms": first_event, "expected": expected, "received_unique": len(by_utt),
            "missing": expected - len(by_utt), "raw_events": len(run.events),
            "duplicate_deliveries": len(run.events) - len(run.unique()), "load": dict(run.load()),
            "interval_s": interval_s, "feeder_resent": run.feeder.stats.resent if run.feeder else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="causal checkpoint (default: a MELD-size random one)")
    ap.add_argument("--workers", default="1,2,3", help="worker counts for the throughput runs")
    ap.add_argument("--conversations", type=int, default=60)
    ap.add_argument("--utterances", type=int, default=10)
    ap.add_argument("--handoff-rounds", type=int, default=16)
    ap.add_argument("--handoff-interval-s", type=float, default=1.0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    from benchmarks.machine import header
    print(header(), flush=True)  # CPU, flags, text dtype, load: speed figures depend on them

    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    if args.checkpoint:
        ck = Path(args.checkpoint)
    else:
        from tests.support.checkpoints import make_tiny_checkpoint

        ck = make_tiny_checkpoint(tmp / "ck", seed=0, hidden=200, n_speakers=9, window_utterances=16)
    print(f"checkpoint: {ck}  (machine: {os.cpu_count()} cores)  logs: {tmp}")
    results: dict[str, Any] = {"throughput": [], "handoff": None}
    with Mosquitto(tmp / "mosquitto") as broker:
        base = None
        for n in [int(x) for x in args.workers.split(",")]:
            r = throughput(broker, n, ck, tmp, args.conversations, args.utterances)
            base = base or r["utt_per_s"]
            r["ratio_to_1"] = r["utt_per_s"] / base
            results["throughput"].append(r)
            print(f"{n} worker(s): {r['utt_per_s']:.1f} utt/s ({r['ratio_to_1']:.2f}x), {r['received']}/"
                  f"{r['utterances']} in {r['elapsed_s']:.2f} s, latency under saturation p50 {r['p50_ms']:.0f} ms "
                  f"p95 {r['p95_ms']:.0f} ms, load {r['load']}")
            print(f"    CPU per utterance: workers {r['worker_cpu_ms_per_utt']:.2f} ms, "
                  f"broker {r['broker_cpu_ms_per_utt']:.3f} ms")
        paced = throughput(broker, 1, ck, tmp, 20, 8, interval_s=1.0, tag="paced")
        results["paced"] = paced
        print(f"1 worker paced at {20 / 1.0:.0f} utt/s offered (1 utterance/s in each of 20 conversations): "
              f"latency input->event p50 {paced['p50_ms']:.0f} ms p95 {paced['p95_ms']:.0f} ms; CPU per utterance: "
              f"worker {paced['worker_cpu_ms_per_utt']:.2f} ms, broker {paced['broker_cpu_ms_per_utt']:.3f} ms")
        procs = start_workers(broker, ["h1", "h2", "h3"], tmp, ck)
        try:
            h = asyncio.run(handoff_run(broker, procs, 30, args.handoff_rounds, args.handoff_interval_s,
                                        kill_round=args.handoff_rounds // 2))
        finally:
            for p in procs.values():
                p.stop()
        results["handoff"] = h
        print(f"hand-off after SIGKILL of {h['killed']} ({h['orphans']} conversations, inputs every "
              f"{h['interval_s']:g} s per conversation):")
        print(f"  retained state blob per conversation: median {h['state_bytes_median']} bytes")
        print(f"  kill -> last will ('offline') seen by a subscriber: {h['will_ms']:.0f} ms")
        for key in ("claim_ms", "ready_ms", "first_event_ms"):
            v = h[key]
            print(f"  kill -> {key[:-3]:<11} median {statistics.median(v) if v else float('nan'):7.0f} ms   "
                  f"p95 {pct(v, 95):7.0f} ms   max {max(v) if v else float('nan'):7.0f} ms   (n={len(v)})")
        print(f"  events: {h['received_unique']}/{h['expected']} utterances, missing {h['missing']}, "
              f"duplicate deliveries {h['duplicate_deliveries']}, feeder re-sent {h['feeder_resent']}, "
              f"load {h['load']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
