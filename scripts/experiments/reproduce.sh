#!/usr/bin/env bash
# Reproduce docs/results.md end to end on this machine (CPU, one torch thread per job, niced).
#   bash scripts/experiments/reproduce.sh [TEXT_EXTRACTOR]      (default minilm-l6-meld, the shipped one)
# Steps: features (cached) -> one run_meld.py row per variant, 3 seeds -> the table -> checkpoints/default.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=.
EXT=${1:-minilm-l6-meld}
CSV=${MELD_CSV:-../shared/data/meld}
PERSONA=${MELD_PERSONA:-../shared/data/persona/MELD_persona.pkl}
PY="nice -n 5 .venv/bin/python"
SEEDS="1 2 3"
EPOCHS=${EPOCHS:-12}
D=data/meld-$EXT
OUT=runs/exp/$EXT

if [ "$EXT" = minilm-l6-meld ] && [ ! -f checkpoints/text/minilm-l6-meld.safetensors ]; then
  # The fine-tuned text encoder (top 4 MiniLM layers, train split, selected on dev).
  $PY scripts/experiments/finetune_text.py --csv-dir "$CSV" --out checkpoints/text --top 4 --epochs 4 --threads 1
fi
$PY -m pcgnet.cli prepare-meld --csv-dir "$CSV" --persona "$PERSONA" --out "$D-given" --text-extractor "$EXT" \
  --cache-dir .cache/features --no-progress
$PY -m pcgnet.cli prepare-meld --csv-dir "$CSV" --persona "$PERSONA" --out "$D-est" --text-extractor "$EXT" \
  --cache-dir .cache/features --persona-source estimated --no-progress

RUN="$PY scripts/experiments/run_meld.py --seeds $SEEDS --threads 1 --epochs $EPOCHS --patience 4 --class-weight ${CW:-sqrt}"
$RUN --data "$D-est"   --variant causal       --out "$OUT/causal"        --save   # what ships
$RUN --data "$D-given" --variant causal       --out "$OUT/causal-given"
$RUN --data "$D-given" --variant paper        --out "$OUT/paper-given"
$RUN --data "$D-est"   --variant no_persona   --out "$OUT/no_persona"
$RUN --data "$D-est"   --variant no_shift     --out "$OUT/no_shift"
$RUN --data "$D-est"   --variant no_graph     --out "$OUT/no_graph"
$RUN --data "$D-est"   --variant context_free --out "$OUT/context_free"

.venv/bin/python scripts/experiments/make_table.py "$OUT"/{causal,causal-given,paper-given,no_persona,no_shift,no_graph,context_free}
if [ "$EXT" = minilm-l6-meld ]; then
  .venv/bin/python scripts/experiments/ship_default.py "$OUT/causal" --data "$D-est"
fi
