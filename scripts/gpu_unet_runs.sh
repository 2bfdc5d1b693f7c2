#!/usr/bin/env bash
# Three U-Net runs side by side on one GPU, each stopped at the same deadline and exported
# unfinished (training.json records the steps done). Two sets of runs:
#
# SET=1group (default): the tenth session (2026-11-26) ran it on a lent H100 to learn how many steps
# the one-group recipe needs for valid samples, which the 2-core CPU could not reach
# (docs/toyworld.md, "Longer one-group runs on a GPU"):
#   A  close-up world (shipped since), --recipe toy-faces-1group, batch 32: its 7000-step export
#      (the recipe's length), then resumed to the deadline
#   B  wide world (scripts/wide_world.py, shipped until then), the same recipe, to the deadline
#   C  close-up world, the same recipe at batch 128, to the deadline
#
# SET=v: the eleventh session (2026-11-27), v-prediction in the close-up world
# (docs/toyworld.md, "v-prediction"):
#   A  --recipe toy-faces (v, one norm group; the run was made under the name toy-faces-v), batch
#      32: its 4500-step export (the recipe's length, shipped since), then resumed to the deadline
#   B  --recipe toy-faces-v-32groups (the eps model's 32 groups), batch 32, to the deadline
#   C  --recipe toy-faces at batch 128, to the deadline
#
# Usage: [SET=v] scripts/gpu_unet_runs.sh OUT_DIR [TRAIN_SECONDS] [DEVICE]
#   TRAIN_SECONDS: wall time from the start of this script to the deadline (default 420)
#   DEVICE: cuda (default) or cpu; RECIPE, STEPS_A and WORKERS_{A,B,C} in the environment override
#   the recipes (e.g. RECIPE=tiny STEPS_A=3 for a smoke run), the first phase of A and the number of
#   processes that render each run's batches (one core renders about 500 faces/s).
# Each run's models go to OUT_DIR/<run>/, logs to OUT_DIR/<run>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_unet_runs.sh OUT_DIR [TRAIN_SECONDS] [DEVICE]}
budget=${2:-420}
device=${3:-cuda}
set_=${SET:-1group}
case "$set_" in
  1group) recipe_a=toy-faces-1group recipe_b=toy-faces-1group recipe_c=toy-faces-1group world_b=wide steps_a=7000 ;;
  v) recipe_a=toy-faces recipe_b=toy-faces-v-32groups recipe_c=toy-faces world_b=closeup steps_a=4500 ;;
  *) echo "unknown SET=$set_ (1group or v)" >&2; exit 2 ;;
esac
if [ -n "${RECIPE:-}" ]; then recipe_a=$RECIPE recipe_b=$RECIPE recipe_c=$RECIPE; fi
mkdir -p "$out"
deadline=$(( $(date +%s) + budget ))

minutes_left() {  # minutes to the deadline, at least 0.1
    python3 -c "import sys, time; print(max(0.1, ($deadline - time.time()) / 60))"
}

train() {  # train WORLD RUN_NAME RECIPE [train-unet options...]
    local world=$1 name=$2 recipe=$3
    shift 3
    local runner=(python3 -m hspace.cli.main)
    [ "$world" = wide ] && runner=(python3 scripts/wide_world.py)
    PYTHONUNBUFFERED=1 "${runner[@]}" toyworld train-unet --recipe "$recipe" --device "$device" \
        --checkpoint-dir "$out/ckpt-$name" --checkpoint-minutes 1000 "$@"
}

run_a() {
    train closeup A "$recipe_a" --steps "${STEPS_A:-$steps_a}" --max-minutes "$(minutes_left)" --export-unfinished \
        --data-workers "${WORKERS_A:-3}" --out "$out/A/step-short" &&
    train closeup A "$recipe_a" --resume --steps 10000000 --max-minutes "$(minutes_left)" --export-unfinished \
        --data-workers "${WORKERS_A:-3}" --out "$out/A/final"
}
run_b() {
    train "$world_b" B "$recipe_b" --steps 10000000 --max-minutes "$(minutes_left)" --export-unfinished \
        --data-workers "${WORKERS_B:-3}" --out "$out/B/final"
}
run_c() {
    train closeup C "$recipe_c" --batch-size 128 --steps 10000000 --max-minutes "$(minutes_left)" --export-unfinished \
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
