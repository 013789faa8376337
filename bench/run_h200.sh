#!/usr/bin/env bash
# One device-tool call on the lent H200: the GPU tests, the engine benchmark, the worker numbers.
# Run from the repository root with the wheels in .whl/ (bench/README.md); results land in $OUT.
# Every stage has its own time limit, so a slow one cannot take the others' results with it.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/outpaint-compile-cache
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
quiet() { grep -v -e "Loading" -e "Writing" -e "it/s]" -e "kept in float32"; }

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import torch, diffusers, transformers, torchao; print(torch.__version__, diffusers.__version__, transformers.__version__, torchao.__version__)" 2>/dev/null | tee -a "$OUT/env.txt"

OUTPAINT_TEST_GPU=1 timeout 55 python3 -m pytest -q -p no:cacheprovider tests/engine/test_gpu.py \
  -k "device_map or concurrent or fp8 or auto or graphs" 2>&1 | tail -8 | tee "$OUT/gpu-tests.txt"

timeout 300 python3 -m bench.bench_engine --repeats 2 --idle default --candidates 4 --candidate-paths default \
  --json "$OUT/engine.json" --paths "seed-eager fp16" regional default "default fp8" 2>&1 | quiet | tee "$OUT/engine.log" | tail -20

# The worker numbers on the shipped defaults (OUTPAINT_COMPILE=auto, fill, 4 jobs at once): the
# first load compiles the batch sizes the engine-benchmark did not; the second process is a restart.
timeout 150 python3 -m bench.bench_worker throughput --expansions 2 --repeats 2 --cache /tmp/outpaint-compile-cache \
  --json "$OUT/worker.json" 2>&1 | quiet | tail -3
timeout 60 python3 -m bench.bench_worker startup --cache /tmp/outpaint-compile-cache \
  --json "$OUT/startup.json" 2>&1 | quiet | tail -2
