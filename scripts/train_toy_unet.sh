#!/usr/bin/env bash
# Train the built-in `toy-faces` diffusion model (the committed recipe; see docs/toyworld.md).
# Resumable: run it again with --resume to continue after a stop (Ctrl-C, --max-minutes, a crash).
#   scripts/train_toy_unet.sh                 # from scratch (4500 steps, ~2 h on the 2-core CPU, 1 thread)
#   scripts/train_toy_unet.sh --resume        # continue exactly where the last checkpoint left off
# Extra arguments go to `hspace toyworld train-unet` (e.g. --threads 2 on an idle machine, --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
# glibc: keep >32 MB activation buffers instead of page-faulting them in every step
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-2147483647}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-2147483647}"
exec hspace toyworld train-unet "$@"
