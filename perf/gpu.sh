#!/usr/bin/env bash
# streamrec on a GPU machine in one command (about 8 minutes; needs the package registries):
#
#   perf/gpu.sh [OUT_DIR]            (BUNDLE=DIR to serve a bundle exported elsewhere; default: the bench bundle)
#
# 1. a separate environment with the gpu extra (onnxruntime-gpu; the CPU flavour may not share an environment),
# 2. the ONNX bench with CUDA at batch 1, 32 and 256 (the state graphs; scoring as the job does it),
# 3. the job with cross-key micro-batching (256) through real Kafka and Flink, its max sustained rate bisected
#    beside the identity job's,
# each writing JSON under OUT_DIR (default perf/results/gpu). The providers actually used are in the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-perf/results/gpu}
mkdir -p "$out"
python=$(command -v python3.11 || command -v python3)
venv=.venv-gpu
test -x "$venv/bin/python" || "$python" -m venv "$venv"
extras="gpu,dev"
if [ -z "${BUNDLE:-}" ]; then extras="$extras,train"; fi  # torch exports the bench bundle
"$venv/bin/python" -m pip install -q --upgrade "pip>=24"
"$venv/bin/python" -m pip install -q -e ".[$extras]"
"$venv/bin/python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
touch "$venv/.installed-gpu"  # the gpu environment is complete: make must not install the cpu extras
make jars PY="$venv/bin/python" VENV="$venv" VENV_STAMP="$venv/.installed-gpu"
if [ -z "${BUNDLE:-}" ]; then
  BUNDLE=$("$venv/bin/python" -c "from pathlib import Path; from perf.bench_bundle import bench_bundle; \
print(bench_bundle(Path('.streamrec/bench/bundles'), 10000))")
fi
timeout 180 "$venv/bin/python" -m perf.bench_onnx --bundle "$BUNDLE" --batches 1,32,256 --iters 400 \
  --providers CUDAExecutionProvider,CPUExecutionProvider --out "$out/onnx-cuda.json"
timeout 420 "$venv/bin/streamrec" bench --find-max --bundle "$BUNDLE" --pipelines job-batch,identity \
  --micro-batch 256 --min-rate 5000 --max-rate 80000 --bisect-steps 4 --seconds 10 --users 20000 --history 20 \
  --out "$out/bench-gpu.json"
echo "written: $out/onnx-cuda.json $out/bench-gpu.json"
