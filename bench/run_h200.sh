#!/usr/bin/env bash
# Device-tool calls on the lent H200 (see bench/README.md): `bash bench/run_h200.sh STAGE...` runs
# the stages in the order given, each under its own time limit (SIGINT first, so Python prints where
# it was; SIGNAL=ABRT with `python3 -X faulthandler` prints every thread), its whole log under $OUT/STAGE.log and the end of it in the reply. The compile cache
# stays in /tmp while the machine is held, so a later call's `startup` can find it filled.
#   tests      the CUDA tests (tests/engine/test_gpu.py), the device map, batching, FP8 and compile first
#   captioner  bench_captioner.py: SmolVLM-256M shapes, resident and low-VRAM
#   worker     bench_worker.py throughput (4 jobs batched), embedded (times:3 via the queue), low-vram
#   embedded   bench_worker.py embedded alone (EMBEDDED_JOBS jobs at once, default 4)
#   engine     bench_engine.py: the seed baseline, the defaults, each lever, 4 candidates, GPU idle
#   startup    bench_worker.py startup: a fresh process with the compile cache as the calls left it
#   unet       bench_unet.py: UNet levers (channels-last, fused QKV, cuDNN attention, FP8), UNET_VARIANTS picks
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export OUTPAINT_TEST_GPU=1 PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/outpaint-compile-cache
OUT=${OUT:-/tmp/out}
CACHE=$TORCHINDUCTOR_CACHE_DIR
mkdir -p "$OUT"

stage() {  # stage NAME LIMIT_S COMMAND...
  local name=$1 limit=$2 began=$SECONDS
  shift 2
  timeout -s "${SIGNAL:-INT}" -k 20 "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: rc=$? after $((SECONDS - began)) s (limit $limit s)"
  grep -v -e Loading -e Writing -e "it/s]" -e "kept in float32" -e torchvision -e "^V1" "$OUT/$name.log" | tail -n 14
}

nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import torch, diffusers, transformers, torchao; print(torch.__version__, diffusers.__version__, transformers.__version__, torchao.__version__)" 2>/dev/null | tee -a "$OUT/env.txt"
IFS=, read -ra ENGINE_PATHS_ARR <<< "${ENGINE_PATHS:-seed-eager fp16,regional,default,default fp8,default vae}"  # comma-separated
FIRST=${TESTS_K:-"device_map or concurrent or fp8 or auto_compile or graphs or regional"}
for name in "$@"; do
  case $name in
    tests) stage tests 170 python3 -m pytest -v -p no:cacheprovider --durations=0 -o faulthandler_timeout=100 \
             tests/engine/test_gpu.py -k "$FIRST" ;;
    tests-rest) stage tests-rest 200 python3 -m pytest -v -p no:cacheprovider --durations=0 -o faulthandler_timeout=100 \
             tests/engine/test_gpu.py -k "not ($FIRST)" ;;
    captioner) stage captioner 120 python3 -m bench.bench_captioner --json "$OUT/captioner.json" ;;
    worker) TORCH_LOGS=recompiles stage worker 260 python3 -m bench.bench_worker throughput embedded low-vram \
              --expansions 3 --repeats 2 --cache "$CACHE" --json "$OUT/worker.json" ;;
    engine) TORCH_LOGS=recompiles stage engine ${ENGINE_LIMIT:-360} python3 -m bench.bench_engine --repeats 2 --warmup-limit 100 \
              --idle default --candidates 4 --candidate-paths default --json "$OUT/engine.json" \
              --paths "${ENGINE_PATHS_ARR[@]}" ;;
    embedded) SIGNAL=ABRT OUTPAINT_BATCH_JOBS=${EMBEDDED_JOBS:-4} stage embedded 180 python3 -X faulthandler -m bench.bench_worker \
                embedded --expansions 3 --repeats 2 --cache "$CACHE" --json "$OUT/embedded.json" ;;
    unet) stage unet ${UNET_LIMIT:-520} python3 -m bench.bench_unet --repeats 5 --warmup-limit 80 --json "$OUT/unet.json" \
            --variants ${UNET_VARIANTS:-regional regional+cl regional+qkv regional+cudnn regional+ctx regional+fp8row regional+fp8tensor regional+cl+qkv+cudnn+ctx regional+cl+qkv+cudnn+ctx+fp8row regional+cl+qkv+cudnn+ctx+fp8tensor} ;;
    startup) stage startup 110 python3 -m bench.bench_worker startup --cache "$CACHE" --json "$OUT/startup.json" ;;
    *) echo "unknown stage $name" ;;
  esac
done
