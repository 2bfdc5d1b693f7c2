#!/usr/bin/env bash
# The issue's third acceptance check, run from outside as a user would: train "face" -> "face with
# glasses" with `hspace train` (no options but the texts: toy-faces' own defaults) on 20 sampled
# faces, edit 100 other sampled faces with it and judge them with `hspace eval`.
#   bash scripts/accept_train_glasses.sh [WORKDIR] [extra hspace train options...]
# WORKDIR (default /tmp/hspace-accept) is replaced. Needs `hspace` on PATH (source .venv/bin/activate).
set -euo pipefail
W=${1:-/tmp/hspace-accept}; shift || true
rm -rf "$W"; mkdir -p "$W"; cd "$W"
hspace toyworld sample --n 20 --seed 11 --out train-faces > /dev/null
hspace toyworld sample --n 100 --seed 12 --out test-faces > /dev/null
start=$(date +%s)
hspace train --model toy-faces --source "face" --target "face with glasses" --input train-faces \
    --output glasses.safetensors "$@"
echo "train: $(( $(date +%s) - start )) s (the bar: under 5 minutes)"
hspace edit --model toy-faces --direction glasses.safetensors:1.0 --input test-faces --output out --bf16
hspace eval out
