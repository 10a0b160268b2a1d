#!/usr/bin/env bash
# The whole GPU check in one call on a lent GPU machine (the device tool): the CUDA test suite, then the GPU
# benchmarks of issues 4 (batched engine) and 7 (gates). Every part has its own time limit, so the whole stays
# under ~9 minutes even when one part hangs; logs and JSON land in $OUT (or ./gpu-out without the tool).
# Here, first: bash benchmarks/gpu_wheels.sh. Then, through the device tool:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD/src"
else
  export PYTHONPATH="$PWD/src"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 --version
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/env.txt"
python3 -c "import qwick, llguidance, fastapi, uvicorn, openai, peft" 2>&1 | tee -a "$OUT/env.txt" \
  || { echo "missing packages: see env.txt"; exit 1; }

part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, report its status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}

part cuda_tests 200 python3 -m pytest -q -p no:cacheprovider tests/cuda --junitxml="$OUT/cuda_tests.xml"
part batched 150 python3 benchmarks/batched.py --device cuda --json "$OUT/batched.json"
part gates 180 python3 benchmarks/gates.py --device cuda --max-num-seqs 256 --max-num-batched-tokens 8192 \
  --kv-cache-gib 16 --json "$OUT/gates.json"
cat "$OUT/summary.txt"
