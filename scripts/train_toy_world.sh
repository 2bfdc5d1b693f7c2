#!/usr/bin/env bash
# Train the whole built-in toy world from scratch, in order, then measure its quality bars.
# Each stage is resumable: after a stop, rerun this script with --resume and finished stages are
# skipped (their shipped files exist) while a stopped stage continues from its checkpoint.
#   scripts/train_toy_world.sh             # ~1 h 50 min on the idle 2-core CPU (see docs/toyworld.md)
#   scripts/train_toy_world.sh --resume    # continue after a stop
#   THREADS=1 scripts/train_toy_world.sh   # on a busy machine (2 threads spin-wait there)
# Stages (2 threads, as the shipped models were trained on 2026-11-26): probe (~5 min) -> CLIP
# (~28 min) -> toy-faces U-Net (~64 min) -> directions (~14 min with judging) -> check (~25 min).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-2147483647}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-2147483647}"
THREADS="${THREADS:-2}"
RESUME=()
if [ "${1:-}" = "--resume" ]; then RESUME=(--resume); fi
MODELS=src/hspace/data/models
DIRS=src/hspace/data/directions/toy-faces

[ -f "$MODELS/toy-probe/model.safetensors" ] || hspace toyworld train-probe --workers 0 --threads "$THREADS" "${RESUME[@]}"
[ -f "$MODELS/toy-clip/model.safetensors" ] || hspace toyworld train-clip --workers 0 --threads "$THREADS" "${RESUME[@]}"
[ -f "$MODELS/toy-faces/diffusion_pytorch_model.safetensors" ] || hspace toyworld train-unet --threads "$THREADS" "${RESUME[@]}"
# directions: checkpointed per image; rerunning resumes the one that was stopped
missing=()
for d in smiling glasses blond eyes_closed hat; do [ -f "$DIRS/$d.safetensors" ] || missing+=(--only "$d"); done
if [ ${#missing[@]} -gt 0 ]; then hspace toyworld train-directions --threads "$THREADS" "${missing[@]}"; fi
hspace toyworld check --threads "$THREADS" --out "toyworld-quality-$(date +%Y%m%d-%H%M)"
