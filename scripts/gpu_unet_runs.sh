#!/usr/bin/env bash
# Three one-group U-Net runs side by side on one GPU, each stopped at the same deadline and
# exported unfinished (training.json records the steps done). The tenth session (2026-11-26)
# ran it on a lent H100 to learn how many steps the one-group recipe needs for valid samples,
# which the 2-core CPU could not reach (docs/toyworld.md, "Longer one-group runs on a GPU"):
#
#   A  close-up world (shipped since), --recipe toy-faces-1group, batch 32: its 7000-step export
#      (the recipe's length), then resumed to the deadline
#   B  wide world (scripts/wide_world.py, shipped until then), the same recipe, to the deadline
#   C  close-up world, the same recipe at batch 128, to the deadline
#
# Usage: scripts/gpu_unet_runs.sh OUT_DIR [TRAIN_SECONDS] [DEVICE]
#   TRAIN_SECONDS: wall time from the start of this script to the deadline (default 420)
#   DEVICE: cuda (default) or cpu; RECIPE, STEPS_A and WORKERS_{A,B,C} in the environment override
#   the recipe (e.g. RECIPE=tiny STEPS_A=3 for a smoke run), the first phase of A and the number of
#   processes that render each run's batches (one core renders about 500 faces/s).
# Each run's models go to OUT_DIR/<run>/, logs to OUT_DIR/<run>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_unet_runs.sh OUT_DIR [TRAIN_SECONDS] [DEVICE]}
budget=${2:-420}
device=${3:-cuda}
recipe=${RECIPE:-toy-faces-1group}
mkdir -p "$out"
deadline=$(( $(date +%s) + budget ))

minutes_left() {  # minutes to the deadline, at least 0.1
    python3 -c "import sys, time; print(max(0.1, ($deadline - time.time()) / 60))"
}

train() {  # train WORLD RUN_NAME [train-unet options...]
    local world=$1 name=$2
    shift 2
    local runner=(python3 -m hspace.cli.main)
    [ "$world" = wide ] && runner=(python3 scripts/wide_world.py)
    PYTHONUNBUFFERED=1 "${runner[@]}" toyworld train-unet --recipe "$recipe" --device "$device" \
        --checkpoint-dir "$out/ckpt-$name" --checkpoint-minutes 1000 "$@"
}

run_a() {
    train closeup A --steps "${STEPS_A:-7000}" --max-minutes "$(minutes_left)" --export-unfinished \
        --data-workers "${WORKERS_A:-3}" --out "$out/A/step-short" &&
    train closeup A --resume --steps 10000000 --max-minutes "$(minutes_left)" --export-unfinished \
        --data-workers "${WORKERS_A:-3}" --out "$out/A/final"
}
run_b() {
    train wide B --steps 10000000 --max-minutes "$(minutes_left)" --export-unfinished \
        --data-workers "${WORKERS_B:-3}" --out "$out/B/final"
}
run_c() {
    train closeup C --batch-size 128 --steps 10000000 --max-minutes "$(minutes_left)" --export-unfinished \
        --data-workers "${WORKERS_C:-7}" --out "$out/C/final"
}

run_a >"$out/A.log" 2>&1 &
pa=$!
run_b >"$out/B.log" 2>&1 &
pb=$!
run_c >"$out/C.log" 2>&1 &
pc=$!
status=0
for p in $pa $pb $pc; do wait "$p" || status=1; done
for r in A B C; do
    echo "== $r: $(grep -E 'steps in|exported|Error|error' "$out/$r.log" | tr '\r' '\n' | grep -vE '^\s*$' | tail -4)"
done
exit $status
