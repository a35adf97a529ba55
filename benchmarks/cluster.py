"""Scale-out benchmark on NATS JetStream: throughput with 1 and 2 workers, takeover after SIGKILL and SIGSTOP.

Everything is real: a nats-server (JetStream) and a mosquitto on loopback, workers started as
``live.py --worker`` processes (the causal PCGNet with the MiniLM text extractor, or ``--backend toy``),
a publisher posting scripted conversations to the stream (message id ``<session>/<utterance_id>``) and a
subscriber receiving the emotion events from mosquitto.

* Throughput: after a warm-up, C conversations x U utterances are published at once; utterances/s =
  utterances / (last event received - first input sent), with the ratio to one worker and the CPU per
  utterance of the workers, nats-server and mosquitto.
* Takeover: 2 workers serve conversations at a steady pace (one input per conversation per interval);
  the busier one is SIGKILLed (or SIGSTOPped and never resumed during the measurement). Per conversation
  it served: time from the signal to the first event from the other worker. Lost and duplicate events are
  counted. The takeover is bounded by ``--priority-timeout-s`` (the pin lapses) plus the next input or
  the redelivery of the in-flight one (``--ack-wait-s``).

Usage: ``python benchmarks/cluster.py [--backend pcgnet|toy] [--conversations 40] [--utterances 8]``.
Without ``--checkpoint`` a random causal model of the paper's MELD size (hidden 200, 9 speaker slots,
MiniLM text) is made, which costs the same per step as a trained one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from stream.cluster.jetstream import Layout  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402
from tests.support.cluster import EventWatch, WorkerProcess, make_script, publish_script, start_js_worker  # noqa: E402
from tests.support.nats import NatsServer  # noqa: E402


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


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, nats: NatsServer, broker: Mosquitto, ck: Path | None):
        self.args, self.tmp, self.nats, self.broker, self.ck = args, tmp, nats, broker, ck
        self.layout = Layout(partitions=args.partitions, priority_timeout_s=args.priority_timeout_s,
                             ack_wait_s=args.ack_wait_s)

    def worker_args(self, i: int, n: int) -> list[str]:
        a = ["--partitions", str(self.args.partitions), "--member", f"{i}/{n}", "--log-level", "WARNING",
             "--priority-timeout-s", str(self.args.priority_timeout_s), "--ack-wait-s", str(self.args.ack_wait_s),
             "--state-every", str(self.args.state_every), "--standby-delay-s", "60"]
        return a + (["--checkpoint", str(self.ck)] if self.ck else [])

    async def start(self, ids: list[str], watch: EventWatch) -> dict[str, WorkerProcess]:
        procs = {w: start_js_worker(w, self.nats.url, self.broker.port, self.tmp, *self.worker_args(i, len(ids)),
                                    toy=self.ck is None) for i, w in enumerate(ids)}
        await watch.until(lambda: watch.online >= set(ids), 300, "workers online")
        return procs

    async def throughput(self, n: int) -> dict[str, Any]:
        a = self.args
        async with EventWatch(self.broker.settings) as watch:
            ids = [f"t{n}-{i}" for i in range(n)]
            procs = await self.start(ids, watch)
            try:
                warm = make_script(4 * n, 3, seed=9, prefix=f"warm{n}")
                await publish_script(self.nats.url, self.layout, warm)
                await watch.until(lambda: watch.have_all(warm), 300, "warm-up")
                script = make_script(a.conversations, a.utterances, seed=n, prefix=f"tp{n}")
                sent: dict[tuple[str, str], float] = {}
                n0 = len(watch.run.events)
                cpu0 = {w: cpu_s(p.proc.pid) for w, p in procs.items()}
                srv0 = (cpu_s(self.nats.proc.pid), cpu_s(self.broker.proc.pid))  # type: ignore[union-attr]
                t0 = time.time()
                await publish_script(self.nats.url, self.layout, script, sent_at=sent)
                await watch.until(lambda: watch.have_all(script), 900, "throughput run")
                elapsed = watch.run.t_last_event - t0
                total = a.conversations * a.utterances
                wcpu = sum(cpu_s(p.proc.pid) - cpu0[w] for w, p in procs.items())
                ncpu = cpu_s(self.nats.proc.pid) - srv0[0]  # type: ignore[union-attr]
                mcpu = cpu_s(self.broker.proc.pid) - srv0[1]  # type: ignore[union-attr]
                evs = list(zip(watch.run.events[n0:], watch.run.received_at[n0:], strict=True))
                lat = [1000 * (t - sent[(ev["session"], ev["utterance_id"])]) for ev, t in evs
                       if (ev["session"], ev["utterance_id"]) in sent]
                load = dict(Counter(ev["worker_id"] for ev, _ in evs if ev["session"] in script))
                return {"workers": n, "utterances": total, "elapsed_s": elapsed, "utt_per_s": total / elapsed,
                        "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "load": load,
                        "worker_cpu_ms_per_utt": 1000 * wcpu / total, "nats_cpu_ms_per_utt": 1000 * ncpu / total,
                        "mosquitto_cpu_ms_per_utt": 1000 * mcpu / total}
            finally:
                for p in procs.values():
                    p.stop()

    async def takeover(self, sig: int) -> dict[str, Any]:
        a = self.args
        name = "kill" if sig == signal.SIGKILL else "pause"
        script = make_script(a.takeover_conversations, a.takeover_rounds, seed=11, prefix=f"to-{name}")
        async with EventWatch(self.broker.settings) as watch:
            ids = [f"{name}-{i}" for i in range(2)]
            procs = await self.start(ids, watch)
            state: dict[str, Any] = {}
            try:
                async def maybe_signal(k: int) -> None:
                    if k != a.takeover_rounds // 2:
                        return
                    mine = [ev for ev in watch.run.events if ev["session"] in script]
                    load = Counter(ev["worker_id"] for ev in mine)
                    victim = max(load, key=lambda w: load[w])
                    state["victim"] = victim
                    state["orphans"] = {ev["session"] for ev in mine if ev["worker_id"] == victim}
                    state["t"] = time.time()
                    procs[victim].proc.send_signal(sig)

                await publish_script(self.nats.url, self.layout, script, interval_s=a.takeover_interval_s,
                                     on_round=maybe_signal)
                await watch.until(lambda: watch.have_all(script), 300, f"takeover ({name})")
            finally:
                for p in procs.values():
                    p.proc.send_signal(signal.SIGCONT)
                    p.stop()
        t, victim = state["t"], state["victim"]
        first: dict[str, float] = {}
        for ev, rt in zip(watch.run.events, watch.run.received_at, strict=True):
            if ev["session"] in state["orphans"] and ev["worker_id"] != victim and rt >= t:
                first.setdefault(ev["session"], 1000 * (rt - t))
        ours = [ev for ev in watch.run.events if ev["session"] in script]
        ids_seen = {ev["event_id"] for ev in ours}
        expected = a.takeover_conversations * a.takeover_rounds
        return {"signal": name, "orphans": len(state["orphans"]), "first_event_ms": sorted(first.values()),
                "unique_events": len(ids_seen), "expected": expected, "raw_events": len(ours)}


async def run_all(args: argparse.Namespace, tmp: Path, ck: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {"throughput": [], "takeover": []}
    with NatsServer(tmp / "nats") as nats, Mosquitto(tmp / "mosquitto") as broker:
        bench = Bench(args, tmp, nats, broker, ck)
        base = None
        for n in [int(x) for x in args.workers.split(",") if x]:
            r = await bench.throughput(n)
            base = base or r["utt_per_s"]
            r["ratio_to_1"] = r["utt_per_s"] / base
            out["throughput"].append(r)
            print(f"{n} worker(s): {r['utt_per_s']:.1f} utt/s ({r['ratio_to_1']:.2f}x), {r['utterances']} in "
                  f"{r['elapsed_s']:.2f} s, latency under saturation p50 {r['p50_ms']:.0f} ms p95 {r['p95_ms']:.0f} ms, "
                  f"load {r['load']}", flush=True)
            print(f"    CPU per utterance: workers {r['worker_cpu_ms_per_utt']:.2f} ms, nats-server "
                  f"{r['nats_cpu_ms_per_utt']:.3f} ms, mosquitto {r['mosquitto_cpu_ms_per_utt']:.3f} ms", flush=True)
        for sig in (signal.SIGKILL, signal.SIGSTOP):
            h = await bench.takeover(sig)
            out["takeover"].append(h)
            v = h["first_event_ms"]
            print(f"takeover after {h['signal']} ({h['orphans']} conversations, an input every "
                  f"{args.takeover_interval_s:g} s each, priority timeout {args.priority_timeout_s:g} s, ack wait "
                  f"{args.ack_wait_s:g} s): first event from the other worker median "
                  f"{statistics.median(v) if v else float('nan'):.0f} ms, p95 {pct(v, 95):.0f} ms, max "
                  f"{max(v) if v else float('nan'):.0f} ms (n={len(v)}); events {h['unique_events']}/{h['expected']} "
                  f"unique, {h['raw_events'] - h['unique_events']} duplicate deliveries", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("pcgnet", "toy"), default="pcgnet")
    ap.add_argument("--checkpoint", default=None, help="causal checkpoint (default: a MELD-size random one)")
    ap.add_argument("--workers", default="1,2", help="worker counts for the throughput runs")
    ap.add_argument("--conversations", type=int, default=40)
    ap.add_argument("--utterances", type=int, default=8)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--state-every", type=int, default=8)
    ap.add_argument("--priority-timeout-s", type=float, default=2.0)
    ap.add_argument("--ack-wait-s", type=float, default=4.0)
    ap.add_argument("--takeover-conversations", type=int, default=16)
    ap.add_argument("--takeover-rounds", type=int, default=12)
    ap.add_argument("--takeover-interval-s", type=float, default=1.0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    ck: Path | None = None
    if args.backend == "pcgnet":
        if args.checkpoint:
            ck = Path(args.checkpoint)
        else:
            from tests.support.checkpoints import make_tiny_checkpoint

            ck = make_tiny_checkpoint(tmp / "ck", seed=0, hidden=200, n_speakers=9, window_utterances=16)
    from benchmarks.machine import header

    print(header(), flush=True)  # CPU, flags, text dtype, load: speed figures depend on them
    print(f"backend {args.backend} {ck or ''}; logs {tmp}", flush=True)
    results = asyncio.run(run_all(args, tmp, ck))
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
