#!/usr/bin/env bash
# Every GPU measurement of benchmarks/README.md in one go on one GPU (budget: at most 8 minutes), JSON out.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]           # default OUT_DIR: benchmarks/results/gpu
#   bash benchmarks/gpu_check.sh --smoke OUT_DIR     # CPU rehearsal at toy sizes (tests/test_gpu_check.py)
#
# 1. step time ours vs HF LlamaForCausalLM, bf16 autocast, 130m at seq 1024 (step_time.py, paired ratio + spread)
# 2. throughput and MFU of 71m, 130m, 350m, 1.3b (throughput.py, bf16, compiled, 10 steps each)
# 3. ProRes overhead, eager and compiled (prores_overhead.py)
# 4. token-store read rate per rank, 1/2/4 readers (store_read.py; CPU-side, needs no GPU but belongs to the check)
# Each step has its own time limit so one slow step cannot eat the budget; a step that fails or times out is
# recorded in OUT_DIR/summary.json and the others still run. --smoke runs the same four steps and flags on the
# CPU with the tiny preset, eager, a few repetitions and a small store: a GPU session is lent for minutes, so a
# wrong flag or a broken script must show up here first, not there.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
if [ $SMOKE = 1 ]; then
  DEV=cpu SCALE=tiny SCALES=tiny SEQ=64 BATCH=2 REPS=2 STEPS=2 EAGER=--no-compile TOKENS=2000000 SECONDS_=0.5
else
  DEV=cuda SCALE=130m SCALES=71m,130m,350m,1.3b SEQ=1024 BATCH=8 REPS=20 STEPS=10 EAGER= TOKENS=100000000 SECONDS_=3
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
fi
declare -A RC
run() {  # name limit_s command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  RC[$name]="$? $((SECONDS - t0))"
  echo "$name: rc ${RC[$name]% *}, ${RC[$name]#* } s"
}
run step_time 90 $PY benchmarks/step_time.py --device $DEV --scale $SCALE --layers 0 --seq $SEQ --batch $BATCH \
  --reps $REPS --out "$OUT/step_time_$DEV.json"
run throughput 240 $PY benchmarks/throughput.py --device $DEV --scales $SCALES --steps $STEPS $EAGER --no-data \
  --out "$OUT/throughput.json"
run prores_overhead 90 $PY benchmarks/prores_overhead.py --device $DEV --scale $SCALE --seq $SEQ --batch $BATCH \
  --reps $REPS $EAGER --out "$OUT/prores_overhead.json"
run store_read 60 $PY benchmarks/store_read.py --tokens $TOKENS --seconds $SECONDS_ --out "$OUT/store_read.json"
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
