#!/usr/bin/env bash
# The CUDA paths, which CI (CPU only) never runs: tests with --device cuda, a CUDA training run through the
# CLI, the shipped model on the demo with --device cuda, the step/step_many and training benchmarks on CUDA,
# and faster-whisper on CUDA when it is installed with a local model (PCGNET_WHISPER_DIR). Under 8 minutes
# (each step has its own time limit); prints a summary and exits non-zero if any step failed.
#
#   scripts/gpu-check.sh                 # needs an NVIDIA GPU and a CUDA build of torch in .venv
#   PYTHON=/path/to/python scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=$(mktemp -d -t gpu-check.XXXXXX)
DEVICE=${GPU_CHECK_DEVICE:-cuda}  # GPU_CHECK_DEVICE=cpu: a dry run of the same steps, to test this script

if [ "$DEVICE" != cpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: no CUDA GPU visible to torch ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -1))." >&2
    echo "gpu-check: nothing was checked. Run this on a machine with an NVIDIA GPU and a CUDA build of torch." >&2
    exit 2
fi
[ "$DEVICE" != cpu ] && "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu-check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}')"
echo "gpu-check: logs in $OUT; load average $(cut -d' ' -f1 /proc/loadavg)"

declare -a SUMMARY
FAILED=0
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, keep its log, note ok / FAIL and the time
    local name=$1 limit=$2
    shift 2
    local log="$OUT/$name.log" t0=$SECONDS rc
    echo "== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        SUMMARY+=("$(printf '%-16s ok    %4ds' "$name" $((SECONDS - t0)))")
    else
        FAILED=1
        [ $rc -eq 124 ] && rc="timeout"
        SUMMARY+=("$(printf '%-16s FAIL  %4ds  (exit %s, %s)' "$name" $((SECONDS - t0)) "$rc" "$log")")
        tail -n 15 "$log"
    fi
}

step pytest-cuda 100 "$PY" -m pytest -q -p no:cacheprovider --device "$DEVICE" tests/pcgnet/test_streaming.py
step train-cli 60 bash -c "'$PY' -m pcgnet.cli synth --dataset MELD --out '$OUT/synth' --dialogues 40 >/dev/null && \
    '$PY' -m pcgnet.cli train --dataset MELD --data_dir '$OUT/synth/MELD_features_raw1.pkl' --causal --epochs 2 \
      --device $DEVICE --out '$OUT/ck' --quiet && \
    '$PY' -m pcgnet.cli evaluate --ckpt '$OUT/ck' --device $DEVICE --json"
step demo-cuda 60 bash -c "'$PY' live.py --replay examples/demo --speed 0 --no-tui --device $DEVICE | tee '$OUT/demo.txt' && \
    test \$(grep '^\[demo\]' '$OUT/demo.txt' | grep -vc SHIFT) -eq 11"
step bench-stream 90 "$PY" benchmarks/bench_model.py --only stream --device "$DEVICE" --reps 30
step bench-train 100 "$PY" benchmarks/bench_model.py --only train --device "$DEVICE" --fraction 0.25 --epochs 2
if [ "$DEVICE" != cpu ] && "$PY" -c "import faster_whisper" 2>/dev/null && [ -d "${PCGNET_WHISPER_DIR:-/nonexistent}" ]; then
    step whisper-cuda 60 "$PY" - <<'PYEOF'
import os, subprocess, tempfile, time
from faster_whisper import WhisperModel
wav = os.path.join(tempfile.mkdtemp(), "s.wav")
subprocess.run(["espeak-ng", "-w", wav, "I am so happy to see you today."], check=True)
model = WhisperModel(os.environ["PCGNET_WHISPER_DIR"], device="cuda", compute_type="float16")
t0 = time.perf_counter()
text = " ".join(s.text for s in model.transcribe(wav)[0]).lower()
print(f"whisper on cuda: {text!r} in {time.perf_counter() - t0:.2f} s")
assert "happy" in text, text
PYEOF
else
    SUMMARY+=("$(printf '%-16s skip        (faster-whisper not installed or PCGNET_WHISPER_DIR unset)' whisper-cuda)")
fi

echo
echo "== gpu-check summary (load average $(cut -d' ' -f1 /proc/loadavg) at the end)"
printf '%s\n' "${SUMMARY[@]}"
grep -h -A8 "^Streaming" "$OUT/bench-stream.log" 2>/dev/null | head -8
grep -h -A4 "^Training" "$OUT/bench-train.log" 2>/dev/null | head -4
exit $FAILED
