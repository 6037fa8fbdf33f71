#!/usr/bin/env bash
# Issue 24, Part 2: every GPU check in one run of a few minutes, for a machine with a CUDA GPU.
# NOT YET RUN: no GPU has been available to this project; nothing here is a measured result.
#
# Usage (from the repository root):  PYTHON=python3 OUT=/tmp/gpu-out bash tools/gpu_check.sh
#   FULL=0 leaves out the whole test suite (the last step, about 3 minutes on 2 cores); SUITE_ONLY=1 runs only
#   the suite.  The device tool allows 600 s per command: run FULL=0 first, then SUITE_ONLY=1 if time is left.
#
# Steps, each with its own time limit; the script goes on after a failure and exits 1 if any failed:
#   1. build the C extensions in place when they do not import (they are not in git);
#   2. the CUDA tests, which must pass and not skip: tests/test_portable.py::test_cpu_and_cuda_give_identical_bits
#      and tests/test_torch_philox.py::test_cuda_torch_op_path_equals_the_c_kernel;
#   3. tools/gpu_check.py: torch's Philox words on cuda, CPU = CUDA sha256 of both golden fixtures and of a
#      Llama-1B-sized portable recipe, a torch-mode recipe on cuda bitwise the CPU replay, NCCL world-size-1
#      materialize (gathered == replay);
#   4. tools/bench_portable_gpu.py for llama-1b and llama-7b (device replay against device fill_);
#   5. the whole test suite (CUDA tests included), unless FULL=0.
# Everything is printed and also written under $OUT (default ./gpu-check-out).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
failed=()

step() {  # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc=$rc in $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
"$PY" - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for name in ("msgpack", "safetensors", "transformers", "hypothesis", "pytest", "numpy"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError as error:
        print(name, "MISSING:", error)
EOF

if ! "$PY" -c "import initrecipe.rng.portable._portable_kernel, initrecipe.rng.torch._mt19937" 2>/dev/null; then
  step build 180 "$PY" setup.py -q build_ext --inplace
fi
if [ "${SUITE_ONLY:-0}" = 1 ]; then
  step full-suite 560 "$PY" -m pytest -q -rs -p no:cacheprovider tests
  [ ${#failed[@]} -eq 0 ] && exit 0 || exit 1
fi
step cuda-tests 240 "$PY" -m pytest -q -rs -p no:cacheprovider \
  "tests/test_portable.py::test_cpu_and_cuda_give_identical_bits" \
  "tests/test_torch_philox.py::test_cuda_torch_op_path_equals_the_c_kernel"
if grep -qi "skipped" "$OUT/cuda-tests.log"; then echo "=== the CUDA tests skipped: a failure here"; failed+=(cuda-tests-skipped); fi
step checks 300 "$PY" tools/gpu_check.py --json "$OUT/gpu_check.json"
step bench-1b 180 "$PY" tools/bench_portable_gpu.py --model llama-1b --json "$OUT/bench-llama-1b.json"
step bench-7b 240 "$PY" tools/bench_portable_gpu.py --model llama-7b --json "$OUT/bench-llama-7b.json"
if [ "${FULL:-1}" != 0 ]; then
  step full-suite 560 "$PY" -m pytest -q -rs -p no:cacheprovider tests
fi

if [ ${#failed[@]} -eq 0 ]; then echo "gpu_check: all steps passed"; exit 0; fi
echo "gpu_check: failed: ${failed[*]}"
exit 1
