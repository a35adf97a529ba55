"""Does ONNX Runtime (already installed: a faster-whisper dependency) beat torch on the shipped text encoder?

Exports ``mpnet-base-meld`` in float32 (encoder + attention-mask mean pooling) with the TorchScript exporter,
then encodes every MELD dev utterance one per call with torch float32, ONNX Runtime float32 (one thread,
sequential) and torch bfloat16, in one process; prints ms per utterance, the max |difference| to torch
float32, and the shipped PCGNet's dev W-F1 and label agreement (issue 21). The exporter needs the ``onnx``
package (a pinned dependency since this probe; ``--text-backend onnx`` is what it led to).

    .venv/bin/python scripts/experiments/onnx_probe.py [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def export(ex: Any, path: Path) -> None:
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            h = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    enc = ex.tokenizer(["Wait, you mean Ross and Rachel are back together?"], return_tensors="pt")
    axes = {"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "vec": {0: "b"}}
    torch.onnx.export(Pooled(ex.model), (enc["input_ids"], enc["attention_mask"]), str(path),
                      input_names=["input_ids", "attention_mask"], output_names=["vec"], dynamic_axes=axes,
                      opset_version=17, dynamo=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv-dir", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    ap.add_argument("--limit", type=int, default=0, help="only the first N dev dialogues (0: all)")
    args = ap.parse_args()
    import onnxruntime as ort
    import torch
    from sklearn.metrics import f1_score  # type: ignore[import-untyped]

    from benchmarks.machine import header, load
    from benchmarks.text_levers import predict
    from extractors.meld_text import MeldTextExtractor
    from pcgnet.checkpoint import load_checkpoint
    from pcgnet.persona import PersonaEstimator
    from prepare.meld import read_meld

    torch.set_num_threads(1)
    print(header(text_dtype="per row"))
    dialogues = [d for d in read_meld(args.csv_dir).values() if d.split == "dev"][: args.limit or None]
    texts = [u.text for d in dialogues for u in d.utterances]
    gold = np.array([u.label for d in dialogues for u in d.utterances])
    f32 = MeldTextExtractor(dtype="float32", batch_size=1)
    bf16 = MeldTextExtractor(dtype="bfloat16")
    path = Path(tempfile.mkdtemp(prefix="onnx-probe-")) / "mpnet.onnx"
    export(MeldTextExtractor(dtype="float32", batch_size=1), path)  # tracing changes the traced model's output
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run_ort(text: str) -> np.ndarray:
        enc = f32.tokenizer([text], truncation=True, max_length=f32.max_length, return_tensors="np")
        out = sess.run(["vec"], {"input_ids": enc["input_ids"].astype(np.int64),
                                 "attention_mask": enc["attention_mask"].astype(np.int64)})
        return np.asarray(out[0][0], np.float32)

    runs = {"torch float32": lambda t: f32.encode([t])[0], "onnxruntime float32": run_ort,
            "torch bfloat16": lambda t: bf16.encode([t])[0]}
    for fn in runs.values():
        for t in texts[:5]:
            fn(t)  # warm-up
    ck = load_checkpoint(ROOT / "checkpoints" / "default")
    est = PersonaEstimator.from_json(ck.meta["persona"]["estimator"])
    ref: tuple[np.ndarray, np.ndarray] | None = None
    print(f"MELD dev {len(texts)} utterances, one call each, 1 thread")
    print(f"{'encoder':<20} {'p50 ms':>7} {'mean ms':>8} {'max|dv|':>9} {'dev W-F1':>8} {'agree %':>8}  load")
    for name, fn in runs.items():
        vecs, ms = [], []
        for t in texts:
            t0 = time.perf_counter()
            vecs.append(fn(t))
            ms.append(1000 * (time.perf_counter() - t0))
        v = np.stack(vecs)
        pred = predict(v, dialogues, ck, est)
        ref = ref or (v, pred)
        print(f"{name:<20} {np.median(ms):7.1f} {np.mean(ms):8.1f} {float(np.abs(v - ref[0]).max()):9.2e} "
              f"{100 * f1_score(gold, pred, average='weighted'):8.2f} {100 * float((pred == ref[1]).mean()):8.2f}"
              f"  {load()}", flush=True)


if __name__ == "__main__":
    main()
