"""PCGNet speed and memory on synthetic tensors of the paper's shapes (not a test).

Training: one epoch (after a one-batch warm-up) on IEMOCAP-shaped (120 dialogues, ~48 utterances, 2
speakers, h=400, 8 persona heads) and MELD-shaped data (1038 dialogues, ~9.6 utterances, up to 9 speakers,
h=200) with the paper's optimiser and loss, 2 threads; each dataset runs in its own process so the peak
RSS is its own. Compared with the original implementation measured on this machine: 27.5 s per IEMOCAP
epoch, 81.3 s per MELD epoch, 3.5 GiB peak.

Streaming: incremental ``step`` latency (1 thread, MELD sizes, causal model) at conversation lengths
10/50/100/200 against re-running the causal model on the whole prefix, plus ``step_many`` micro-batching.

    .venv/bin/python benchmarks/bench_model.py                 # everything, ~3 minutes
    .venv/bin/python benchmarks/bench_model.py --quick         # a fraction of the dialogues, fewer repeats
    .venv/bin/python benchmarks/bench_model.py --only stream   # or: --only train

The machine's CPUs are shared: the load average is printed before and after, read the numbers with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Must precede the torch import. On this shared 2-core machine other processes keep the load well above 2;
# OpenMP's default spin-waiting then makes every 2-thread op wait for a descheduled sibling (5-10x slower
# per batch in our measurements). Passive waiting keeps multi-threaded numbers meaningful.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcgnet import graph  # noqa: E402
from pcgnet.batch import DialogueBatch  # noqa: E402
from pcgnet.config import DATASETS, PCGNetConfig  # noqa: E402
from pcgnet.data import Dialogue, collate  # noqa: E402
from pcgnet.losses import pcgnet_loss  # noqa: E402
from pcgnet.model import PCGNet, count_parameters  # noqa: E402

ORIGINAL = {  # the original implementation on this machine (issue 2): s/epoch, GiB peak; ms per new utterance
    "IEMOCAP": {"epoch_s": 27.5, "dialogues": 120},
    "MELD": {"epoch_s": 81.3, "dialogues": 1038},
    "peak_gib": 3.5,
    "prefix_ms": {10: 38.0, 50: 105.0, 100: 217.0},
}
PAPER = {  # name: (dialogues, mean length, max length, speakers, hidden, persona heads, dropout_forward)
    "IEMOCAP": (120, 48.4, 110, 2, 400, 8, 0.3),
    "MELD": (1038, 9.6, 24, 9, 200, 4, 0.0),
}


def paper_config(name: str, causal: bool = False) -> PCGNetConfig:
    ds = DATASETS[name]
    _, _, _, S, h, heads, dropout_forward = PAPER[name]
    return PCGNetConfig(labels=ds.labels, dims=dict(ds.dims), n_speakers=S, hidden=h, persona_heads=heads,
                        interactive_heads=4, dropout_forward=dropout_forward, causal=causal)


def synthetic_dialogues(name: str, n: int, seed: int = 0) -> list[Dialogue]:
    """Dialogues with the paper's feature dims, lengths around the dataset's mean, random speakers."""
    n_total, mean_len, max_len, S, *_ = PAPER[name]
    ds = DATASETS[name]
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        L = int(torch.poisson(torch.tensor(float(mean_len)), generator=g).clamp(2, max_len))
        n_spk = min(S, 2 if S == 2 else int(torch.randint(2, 5, (1,), generator=g)))
        out.append(Dialogue(
            id=i,
            features={m: torch.randn(L, d, generator=g).numpy() for m, d in ds.dims.items()},
            speakers=torch.randint(0, n_spk, (L,), generator=g).numpy(),
            persona=torch.rand(L, 5, generator=g).numpy(),
            labels=torch.randint(0, len(ds.labels), (L,), generator=g).numpy(),
        ))
    return out


def fix_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold at 128 KiB (M_MMAP_THRESHOLD = -3), Linux/glibc only (``--pin-mmap``).

    By default glibc raises the threshold after freeing big blocks, so later activations come from the heap
    and freed memory stays in the process. Pinning returns every large tensor to the OS when freed, which
    lowers the peak RSS a little but costs page faults on every large allocation (about twice the CPU time
    of an IEMOCAP epoch in our measurements), so it is off by default.
    """
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024))
    except (OSError, AttributeError):
        return False


def train_child(name: str, fraction: float, epochs: int, threads: int, pin_mmap: bool) -> dict:
    """One process per dataset: its ru_maxrss is this dataset's peak."""
    pinned = fix_mmap_threshold() if pin_mmap else False
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = paper_config(name)
    model = PCGNet(cfg)
    n = max(32, int(PAPER[name][0] * fraction))
    data = synthetic_dialogues(name, n)
    ds = DATASETS[name]
    alpha = 1.0 / torch.tensor(ds.class_freq) if name == "IEMOCAP" else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    batches = [collate(data[i:i + 32]) for i in range(0, n, 32)]

    def run(batch: DialogueBatch) -> None:
        opt.zero_grad(set_to_none=True)
        out = model(batch)
        loss = pcgnet_loss(out, graph.flat_labels(batch), cfg.n_classes, gamma=0.5, class_weights=alpha,
                           generator=gen)
        loss.total.backward()
        opt.step()

    model.train()
    run(batches[0])  # warm-up (allocator, PyG's first-call inspection)
    times, cpu = [], []
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        for batch in batches:
            run(batch)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    epoch_s = statistics.median(times)
    return {"name": name, "dialogues": n, "utterances": sum(len(d) for d in data),
            "epoch_s": epoch_s, "epoch_cpu_s": statistics.median(cpu), "dialogues_per_s": n / epoch_s,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "params": count_parameters(model), "mmap_threshold_pinned": pinned}


def bench_train(fraction: float, epochs: int, threads: int, pin_mmap: bool) -> list[dict]:
    rows = []
    for name in ("IEMOCAP", "MELD"):
        cmd = [sys.executable, __file__, "--_train-child", name, "--fraction", str(fraction),
               "--epochs", str(epochs), "--threads", str(threads)] + (["--pin-mmap"] if pin_mmap else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    pinned = all(r["mmap_threshold_pinned"] for r in rows)
    print(f"\nTraining ({threads} threads, batch 32, Adam, focal + shift NLL + contrastive loss; one epoch = all "
          f"dialogues; glibc mmap threshold {'pinned at 128 KiB' if pinned else 'glibc default'})")
    print(f"{'dataset':8} {'dialogues':>9} {'utts':>6} {'epoch s':>8} {'CPU s':>7} {'dial/s':>7} {'orig dial/s':>11} "
          f"{'speed-up':>8} {'peak GiB':>8} {'orig GiB':>8} {'params':>11}")
    for r in rows:
        orig = ORIGINAL[r["name"]]
        orig_rate = orig["dialogues"] / orig["epoch_s"]
        print(f"{r['name']:8} {r['dialogues']:>9} {r['utterances']:>6} {r['epoch_s']:>8.2f} {r['epoch_cpu_s']:>7.2f} "
              f"{r['dialogues_per_s']:>7.2f} {orig_rate:>11.2f} {r['dialogues_per_s'] / orig_rate:>7.2f}x "
              f"{r['peak_rss_gib']:>8.2f} {ORIGINAL['peak_gib']:>8.2f} {r['params']:>11,}")
    print("(CPU s = process CPU time of the epoch; with 2 threads, CPU s / 2 is what the wall time would be on an "
          "otherwise idle machine at perfect scaling)")
    return rows


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def bench_stream(lengths: list[int], reps: int, prefix_reps: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = paper_config("MELD", causal=True)
    model = PCGNet(cfg).eval()
    longest = max(lengths)
    g = torch.Generator().manual_seed(2)
    spk = torch.randint(0, 4, (longest,), generator=g)  # a 4-party conversation
    feats = {m: torch.randn(longest, dim, generator=g) for m, dim in cfg.dims.items()}
    persona = torch.rand(longest, 5, generator=g)

    def inputs(t: int) -> tuple[dict, int, torch.Tensor]:
        return {m: feats[m][t] for m in cfg.modalities}, int(spk[t]), persona[t]

    # Warm-up, then states at each length (states are immutable, so one state can be stepped many times).
    state = model.init_state()
    states = {}
    with torch.no_grad():
        for t in range(longest):
            if t + 1 in lengths:
                states[t + 1] = state
            _, state = model.step(state, *inputs(t))
    print(f"\nStreaming (1 thread, MELD sizes h=200, causal, window {cfg.window_utterances}; latency of the "
          f"utterance that makes the conversation L long)")
    print(f"{'L':>5} {'step p50 ms':>11} {'step p99 ms':>11} {'prefix p50 ms':>13} {'prefix p99 ms':>13} "
          f"{'ratio p50':>9} {'orig prefix ms':>14} {'state KiB':>9}")
    with torch.no_grad():
        for L in lengths:
            st = states[L]
            x = inputs(L - 1)
            step_t = []
            for _ in range(reps):
                t0 = time.perf_counter()
                model.step(st, *x)
                step_t.append((time.perf_counter() - t0) * 1e3)
            batch = DialogueBatch({m: feats[m][:L].unsqueeze(0) for m in cfg.modalities}, spk[:L].unsqueeze(0),
                                  torch.ones(1, L, dtype=torch.bool), persona[:L].unsqueeze(0),
                                  torch.zeros(1, L, dtype=torch.long), [0])
            model(batch)
            prefix_t = []
            for _ in range(prefix_reps):
                t0 = time.perf_counter()
                model(batch)
                prefix_t.append((time.perf_counter() - t0) * 1e3)
            orig = ORIGINAL["prefix_ms"].get(L)
            print(f"{L:>5} {_pct(step_t, .5):>11.2f} {_pct(step_t, .99):>11.2f} {_pct(prefix_t, .5):>13.2f} "
                  f"{_pct(prefix_t, .99):>13.2f} {_pct(prefix_t, .5) / _pct(step_t, .5):>8.1f}x "
                  f"{orig if orig else '-':>14} {st.nbytes / 1024:>9.1f}")

        # Micro-batching across sessions: k conversations, each at length 50.
        print("\nstep_many: k conversations stepped together vs one by one (1 thread, each at L=50)")
        print(f"{'k':>4} {'together ms':>11} {'one-by-one ms':>13} {'per-session ms':>14}")
        st = states[min(50, longest)]
        x = inputs(min(50, longest) - 1)
        for k in (1, 4, 16, 64):
            items = [(st, *x)] * k
            tog, seq = [], []
            for _ in range(max(3, reps // (4 * k))):
                t0 = time.perf_counter()
                model.step_many(items)
                tog.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                for it in items:
                    model.step(*it)
                seq.append((time.perf_counter() - t0) * 1e3)
            print(f"{k:>4} {statistics.median(tog):>11.2f} {statistics.median(seq):>13.2f} "
                  f"{statistics.median(tog) / k:>14.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("train", "stream"))
    ap.add_argument("--quick", action="store_true", help="1/4 of the dialogues, fewer repeats")
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the paper's train dialogues")
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs (the median is reported)")
    ap.add_argument("--reps", type=int, default=300, help="timed steps per conversation length")
    ap.add_argument("--lengths", type=int, nargs="+", default=[10, 50, 100, 200])
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (streaming uses 1)")
    ap.add_argument("--pin-mmap", action="store_true", help="pin glibc's mmap threshold (lower RSS, more CPU)")
    ap.add_argument("--_train-child", dest="train_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.train_child:
        print(json.dumps(train_child(args.train_child, args.fraction, args.epochs, args.threads, args.pin_mmap)))
        return
    if args.quick:
        args.fraction, args.reps = min(args.fraction, 0.25), min(args.reps, 100)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"load average {os.getloadavg()[0]:.2f} (1 min) at start")
    if args.only in (None, "train"):
        bench_train(args.fraction, args.epochs, args.threads, args.pin_mmap)
    if args.only in (None, "stream"):
        bench_stream(args.lengths, args.reps, max(5, args.reps // 20))
    print(f"\nload average {os.getloadavg()[0]:.2f} (1 min) at the end; the original's figures were measured on "
          f"this machine (issue 2)")


if __name__ == "__main__":
    main()
