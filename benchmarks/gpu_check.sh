#!/usr/bin/env bash
# The whole GPU check in one call on a lent GPU machine (the device tool), under its 600 s limit (the default
# parts' limits add up to 560 s; expect ~6-8 minutes). Parts, each
# with its own time limit (a hung part is killed and reported; the rest still run); logs and JSON in $OUT (or
# ./gpu-out without the tool):
#   kernels     tests/kernels: the Triton KV write and paged decode kernels on the GPU (CPU CI interprets them)
#   cuda        tests/cuda with the default CUDA path: the Triton backend and CUDA-graph decode
#   cuda_eager  tests/cuda again with CUDA graphs off (QWICK_TEST_ENFORCE_EAGER=1)
#   batched     benchmarks/batched.py --device cuda: offline throughput vs transformers, batch-32 decode, gate
#   decode1     batch-1 decode with CUDA graphs (and transformers' batch-1 generate beside it): tok/s, the
#               measured read bandwidth and the fraction of the bandwidth bound; decode1_eager: the same, graphs off
#   gates       benchmarks/gates.py on the GPU (moderation QPS / p95); not in the default set (time)
# Choose with GPU_CHECK_PARTS="kernels cuda ..." (default: all but gates). Here, first: bash benchmarks/gpu_wheels.sh;
# then, through the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Dry run on a CPU (no GPU parts can pass there; checks the script and the commands): GPU_CHECK_DRY=1 bash ...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
PARTS="${GPU_CHECK_PARTS:-kernels cuda cuda_eager batched decode1 decode1_eager}"
DRY="${GPU_CHECK_DRY:-0}"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD/src"
else
  export PYTHONPATH="$PWD/src"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; python3 --version
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  python3 -c "import triton; print('triton', triton.__version__)"; } 2>&1 | tee "$OUT/env.txt"
python3 -c "import qwick, llguidance, fastapi, uvicorn, openai, peft" 2>&1 | tee -a "$OUT/env.txt" \
  || { echo "missing packages: see env.txt"; exit 1; }

part() {  # part NAME SECONDS COMMAND...: run if selected, with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  case " $PARTS " in *" $name "*) ;; *) return 0 ;; esac
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}

PYTEST=(python3 -m pytest -q -p no:cacheprovider)
BATCHED=(python3 benchmarks/batched.py --device cuda)
DECODE1=(python3 benchmarks/batched.py --device cuda --parts peak,throughput --num-prompts 1 --output-tokens 64
         --decode-batch 1 --decode-steps 128)
if [ "$DRY" = 1 ]; then  # the same commands, small and on the CPU (tests/cuda: its QWICK_TEST_DEVICE=cpu dry run)
  export QWICK_TEST_DEVICE=cpu
  PYTEST+=(-x -k "batched_greedy or abort or graphs or kernel or triton")
  BATCHED=(python3 benchmarks/batched.py --device cpu --quick --parts throughput --no-transformers)
  DECODE1=(python3 benchmarks/batched.py --device cpu --quick --parts throughput --num-prompts 1 --decode-batch 1
           --decode-steps 4 --max-model-len 512)
fi

part kernels 60 "${PYTEST[@]}" tests/kernels --junitxml="$OUT/kernels.xml"
part cuda 160 "${PYTEST[@]}" tests/cuda --junitxml="$OUT/cuda.xml"
QWICK_TEST_ENFORCE_EAGER=1 part cuda_eager 140 "${PYTEST[@]}" tests/cuda --junitxml="$OUT/cuda_eager.xml"
part batched 110 "${BATCHED[@]}" --json "$OUT/batched.json"
part decode1 50 "${DECODE1[@]}" --json "$OUT/decode1.json"
part decode1_eager 40 "${DECODE1[@]}" --no-transformers --enforce-eager --json "$OUT/decode1_eager.json"
part gates 180 python3 benchmarks/gates.py --device cuda --max-num-seqs 256 --max-num-batched-tokens 8192 \
  --kv-cache-gib 16 --json "$OUT/gates.json"
cat "$OUT/summary.txt"
