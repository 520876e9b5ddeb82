#!/usr/bin/env bash
# Every GPU check of nas2deploy, in one call, from a clean copy of the repository on a machine with
# one NVIDIA GPU, no network and a stock PyTorch (no TensorRT, no onnxruntime-gpu, no optuna or
# hypothesis): the package runs from the source tree. Each figure is printed with its name; the
# README's verified-where table quotes them. Budget: under 8 minutes on an H100/H200.
#
#     bash benchmarks/gpu_check.sh            # on the GPU machine
#     bash benchmarks/gpu_check.sh            # on a CPU: says so, runs the CPU-sized code paths
#     bash benchmarks/gpu_check.sh search-vs-random   # a second call: issue 13's comparison
#
# Steps (each bounded by `timeout`, so one hung step cannot eat the budget):
#   1. the GPU tests (pytest -m gpu): CUDA search + resume + checkpoint read on the CPU, both
#      spaces; the torch CUDA runner and export.
#   2. search step throughput: DenseNAS-224 batch 64 and DCNAS 512x1024 batch 8, fp32 / bf16 /
#      bf16 channels-last, against the unoptimised port in the same process; GPU-hours of the
#      published schedule.
#   3. two ranks on one GPU (gloo): the largest difference from one process, against the tolerance.
#   4. data throughput: ImageNet-like JPEGs and Cityscapes-like pairs through the search's loader.
# With the argument `search-vs-random`, instead (a call of its own, about 6 minutes): searched
# against random DenseNAS networks of the same latency windows, larger than on the CPU (60
# batches per pass, 12 search epochs; the CPU's harder data and training recipe: 32,000 images
# of synthetic-small seen once, 4000 test images; 5 random networks x 3 seeds per window) with
# searches and trainings on the GPU; latency on the machine's CPU (ONNX Runtime,
# the demo's table profiled there first). The image has no scipy: the bootstrap test decides.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
start=$(date +%s)
status=0
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s)"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    echo "== $name: rc $rc, $(( $(date +%s) - t0 )) s"
    [ $rc -eq 0 ] || status=1
}

"$PY" - <<'PYEOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu: {torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB, sm {p.major}{p.minor}")
else:
    print("gpu: none (torch.cuda.is_available() is False): the GPU tests skip, the benchmarks run CPU-sized")
PYEOF
gpu=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && gpu=1
if [ "${1:-}" = "search-vs-random" ]; then
    if [ $gpu = 1 ]; then
        step "search vs random (GPU)" 450 "$PY" benchmarks/search_vs_random.py --tasks classification --device cuda \
            --search-epochs 12 --warmup-epochs 4 --max-batches 60 --random 5 --seeds 3 --out /tmp/svr-gpu
    else
        step "search vs random (CPU, code path only)" 420 "$PY" benchmarks/search_vs_random.py --tasks classification \
            --data synthetic-small:200 --test-images 0 --search-epochs 2 --warmup-epochs 1 --max-batches 2 --train-epochs 1 \
            --random 2 --seeds 2 \
            --out "$(mktemp -d)"
    fi
elif [ $gpu = 1 ]; then
    step "gpu tests" 150 "$PY" -m pytest -q -m "gpu and not slow" -p no:cacheprovider tests/test_device.py tests/test_backends.py tests/test_export.py
    step "search step throughput" 200 "$PY" benchmarks/search_step.py --device cuda --steps 20 --warmup 3
    step "two ranks on one GPU" 90 "$PY" benchmarks/rank_equality.py --device cuda
    step "data throughput" 60 "$PY" benchmarks/data_throughput.py --workers 0,4,8 --batches 4
else
    step "gpu tests (skip here)" 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_device.py tests/test_backends.py tests/test_export.py -rs
    step "two ranks (CPU, bit-exact)" 90 "$PY" benchmarks/rank_equality.py --device cpu
    step "search step throughput (CPU, small)" 120 "$PY" benchmarks/search_step.py --device cpu --small --steps 2 --warmup 1
    step "data throughput" 60 "$PY" benchmarks/data_throughput.py --workers 0,2 --batches 1
fi
echo "== gpu_check: $(( $(date +%s) - start )) s in all, status $status"
exit $status
