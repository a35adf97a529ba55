"""ONNX Runtime for the transformer text encoders (``--text-backend onnx``), float32.

Why: on one CPU thread ONNX Runtime runs the shipped ``mpnet-base-meld`` 2.5x faster than torch float32 with
the same vectors (6.3e-6 apart, the same MELD dev labels) and faster than torch bfloat16 even on a CPU with
native bfloat16 (docs/results.md, "Live cost"). onnxruntime is already installed (faster-whisper needs it);
the export needs ``onnx``. The graph is exported once per model into the cache (``$PCGNET_CACHE_DIR/onnx``),
atomically, from a *copy* of the torch model (tracing changes the traced model's later outputs), and every
load checks it against torch on a probe sentence pair, so a stale or foreign file is re-exported, never used.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from extractors.base import ExtractorError

BACKENDS = ("torch", "onnx")
INSTALL = "pip install onnx==1.19.1 ml_dtypes==0.5.3"
PROBE = ("Wait, you mean Ross and Rachel are back together again?", "B: Okay. A: I can't believe it.")
PROBE_ATOL = 1e-4  # float32 in both: 6.3e-6 at most over MELD dev; a different model differs by > 1e-2


def export(model: Any, tokenizer: Any, path: Path) -> None:
    """Write ``model`` (a transformers encoder; its last hidden state) as ONNX to ``path``, atomically."""
    import torch

    try:
        import onnx  # noqa: F401  (the TorchScript exporter needs it)
    except ImportError:
        raise ExtractorError(f"--text-backend onnx: package onnx is not installed ({INSTALL})") from None
    enc = tokenizer([PROBE[0]], [PROBE[1]], return_tensors="pt")
    names = list(enc.keys())

    class Hidden(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, *args: Any) -> Any:
            return self.m(**dict(zip(names, args, strict=True))).last_hidden_state

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"hidden": {0: "batch", 1: "tokens"}}
        torch.onnx.export(Hidden(copy.deepcopy(model)).eval(), tuple(enc[n] for n in names), tmp,
                          input_names=names, output_names=["hidden"], dynamic_axes=axes, opset_version=17,
                          dynamo=False)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class OnnxEncoder:
    """One ONNX Runtime session on one thread: tokenizer output (numpy) -> last hidden state (float32)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, enc: dict[str, np.ndarray]) -> np.ndarray:
        out = self.session.run(["hidden"], {n: np.asarray(enc[n], dtype=np.int64) for n in self.names})
        return np.asarray(out[0], dtype=np.float32)


def onnx_encoder(model: Any, tokenizer: Any, path: Path) -> OnnxEncoder:
    """The ONNX Runtime twin of ``model``: the cached export when it matches torch on the probe, else a new one."""
    import torch

    enc = tokenizer([PROBE[0]], [PROBE[1]], return_tensors="pt")
    with torch.inference_mode():
        want = model(**enc).last_hidden_state.float().numpy()

    def matches(runner: OnnxEncoder) -> bool:
        got = runner({k: v.numpy() for k, v in enc.items()})
        return got.shape == want.shape and float(np.abs(got - want).max()) <= PROBE_ATOL

    if path.is_file():
        try:
            runner = OnnxEncoder(path)
            if matches(runner):
                return runner
        except Exception:  # noqa: BLE001 - any unreadable/foreign cached file is simply re-exported
            pass
    try:
        export(model, tokenizer, path)
    except OSError as e:
        raise ExtractorError(f"--text-backend onnx: cannot write {path} ({e}); set PCGNET_CACHE_DIR") from None
    runner = OnnxEncoder(path)
    if not matches(runner):
        raise ExtractorError(f"--text-backend onnx: the export {path} does not reproduce the torch model")
    return runner
