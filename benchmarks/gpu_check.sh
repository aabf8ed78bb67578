#!/usr/bin/env bash
# Every GPU measurement of benchmarks/README.md in one go on one GPU (budget: at most 8 minutes), JSON out.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # default OUT_DIR: benchmarks/results/gpu
#
# 1. step time ours vs HF LlamaForCausalLM, bf16 autocast, 130m at seq 1024 (step_time.py, paired ratio + spread)
# 2. throughput and MFU of 71m, 130m, 350m, 1.3b (throughput.py, bf16, compiled, 10 steps each)
# 3. ProRes overhead, eager and compiled (prores_overhead.py)
# 4. token-store read rate per rank, 1/2/4 readers (store_read.py; CPU-side, needs no GPU but belongs to the check)
# Each step has its own time limit so one slow step cannot eat the budget; a step that fails or times out is
# recorded in OUT_DIR/summary.json and the others still run.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
declare -A RC
run() {  # name limit_s command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  RC[$name]="$? $((SECONDS - t0))"
  echo "$name: rc ${RC[$name]% *}, ${RC[$name]#* } s"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
run step_time 90 $PY benchmarks/step_time.py --device cuda --scale 130m --layers 0 --seq 1024 --batch 8 --reps 20 \
  --out "$OUT/step_time_cuda.json"
run throughput 240 $PY benchmarks/throughput.py --device cuda --scales 71m,130m,350m,1.3b --steps 10 \
  --out "$OUT/throughput.json"
run prores_overhead 90 $PY benchmarks/prores_overhead.py --device cuda --scale 130m --seq 1024 --batch 8 \
  --out "$OUT/prores_overhead.json"
run store_read 60 $PY benchmarks/store_read.py --tokens 100000000 --seconds 3 --out "$OUT/store_read.json"
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
