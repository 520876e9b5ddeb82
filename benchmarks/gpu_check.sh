#!/usr/bin/env bash
# Every GPU check of nas2deploy, in one call, from a clean copy of the repository on a machine with
# one NVIDIA GPU, no network and a stock PyTorch (no TensorRT, no onnxruntime-gpu, no optuna or
# hypothesis): the package runs from the source tree. Each figure is printed with its name; the
# verified-where table in benchmarks/README.md quotes them. Budget: under 8 minutes on an H100/H200 (measured
# on an H200: tests 35-58 s, ranks 67 s, data 33 s; latency: profiles 13 s and 106 networks 63 s
# at batch 1, 18 s and 86 s at batch 32, plus the AOTInductor packages; step: DenseNAS over 200 s,
# DCNAS 51 s, so `step` is named on its own).
#
#     bash benchmarks/gpu_check.sh                  # on the GPU machine: tests ranks data latency
#     bash benchmarks/gpu_check.sh tests latency    # only the steps named
#     bash benchmarks/gpu_check.sh                  # on a CPU: says so, runs the CPU-sized code paths
#     bash benchmarks/gpu_check.sh search-vs-random # a call of its own: searched against random networks
#
# Steps (each bounded by `timeout`, so one hung step cannot eat the budget):
#   tests      the GPU tests (pytest -m gpu): CUDA search + resume + checkpoint read on the CPU, both
#              spaces; the torch CUDA runner, its CUDA-graph capture, launch costs, export.
#   step       (not in the default set) search step throughput: DenseNAS-224 batch 64 and DCNAS
#              512x1024 batch 8, fp32 / bf16 / bf16 channels-last, against the unoptimised port in the
#              same process; GPU-hours of the published schedule. `step-dcnas`: the DCNAS half alone.
#   ranks      two ranks on one GPU (gloo): the largest weight difference from one process, against
#              the tolerance (tests/support/ranks.py, run by tests/test_device.py).
#   data       data throughput: ImageNet-like JPEGs and Cityscapes-like pairs through the search's loader.
#   latency    GPU latency tables: the 224 space profiled eagerly (with each op's launch
#              costs) and as graph replays at batch 1 and 32, 100 random networks and DenseNAS-A/B/C
#              measured eagerly with their host and graph times, the latency models' fidelity, then
#              AOTInductor packages for 60 s per batch (stopping at the first that fails: the GPU
#              image's torch 2.11 could not load any); every measurement to $OUT/latency.json and the
#              tables beside it. `policy` (not in the default set): the harness's run counts.
#   search-vs-random (about 6 minutes, not in the default set): searched against random DenseNAS
#              networks of the same latency windows, larger than on the CPU (60 batches per pass,
#              12 search epochs; the CPU's harder data and training recipe: 32,000 images of
#              synthetic-small seen once, 4000 test images; 5 random networks x 3 seeds per window)
#              with searches and trainings on the GPU; latency on the machine's CPU (ONNX Runtime,
#              the demo's table profiled there first). The image has no scipy: the bootstrap test decides
#              significance, and budget derivation needs scipy from a carried wheel (below).
#   search-vs-random-cifar (a call of its own, not in the default set): the same on real CIFAR-10,
#              both strategies (gradient and evolution) at the demo's two budgets, 8 random networks x 2
#              seeds, every network trained on all 50,000 training images and scored on the 10,000 test
#              images, journaled under $OUT/svr-cifar; a second call given that folder back as
#              .data/svr-cifar continues it. The data is not in the
#              repository: copy ../shared/data/cifar10-jpeg.tar.gz to .data/ (ignored by git) and run
#              with carry [".data"]; it is unpacked under /tmp. Without it the step says so and skips.
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
# Budget derivation solves 0-1 programs with HiGHS, which comes with scipy; the GPU image has none.
# A scipy wheel for its Python carried in .data/wheels/ (ignored by git; `pip download --no-deps
# --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .data/wheels scipy`)
# is unpacked into /tmp; without one the steps that derive under a budget say so in one line.
if ! "$PY" -c "import scipy" 2>/dev/null; then
    for wheel in .data/wheels/scipy-*.whl; do
        [ -f "$wheel" ] || continue
        "$PY" -m pip install -q --no-index --no-deps --target /tmp/n2d-site "$wheel" \
            && export PYTHONPATH="$PYTHONPATH:/tmp/n2d-site" && echo "scipy from $wheel" && break
    done
fi
gpu=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && gpu=1
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tests ranks data latency)
for name in "${steps[@]}"; do
    case "$name:$gpu" in
    search-vs-random:1)
        step "search vs random (GPU)" 450 "$PY" benchmarks/search_vs_random.py --tasks classification --device cuda \
            --search-epochs 12 --warmup-epochs 4 --max-batches 60 --random 5 --seeds 3 --out /tmp/svr-gpu ;;
    search-vs-random:0)
        step "search vs random (CPU, code path only)" 420 "$PY" benchmarks/search_vs_random.py --tasks classification \
            --data synthetic-small:200 --test-images 0 --search-epochs 2 --warmup-epochs 1 --max-batches 2 --train-epochs 1 \
            --random 2 --seeds 2 --out "$(mktemp -d)" ;;
    search-vs-random-cifar:*)
        tarball=${CIFAR10_TAR:-.data/cifar10-jpeg.tar.gz}
        if [ ! -f "$tarball" ]; then
            echo "== search vs random on CIFAR-10: skipped, no $tarball (copy ../shared/data/cifar10-jpeg.tar.gz there)"
            continue
        fi
        mkdir -p /tmp/gpu-data && tar -xzf "$tarball" -C /tmp/gpu-data
        svr="${OUT:-/tmp}/svr-cifar"
        [ -d .data/svr-cifar ] && [ ! -d "$svr" ] && cp -r .data/svr-cifar "$svr"  # an earlier call's journal, carried back
        if [ "$gpu" = 1 ]; then
            step "search vs random on CIFAR-10 (GPU)" 560 "$PY" benchmarks/search_vs_random.py --tasks classification \
                --device cuda --data /tmp/gpu-data/cifar10 --strategies gradient,evolution --search-epochs 12 \
                --warmup-epochs 4 --max-batches 100 --trials 100 --train-epochs 10 --random 8 --seeds 2 \
                --out "$svr"
        else
            step "search vs random on CIFAR-10 (CPU, code path only)" 420 "$PY" benchmarks/search_vs_random.py \
                --tasks classification --data /tmp/gpu-data/cifar10 --train-images 200 --strategies gradient,evolution \
                --search-epochs 2 --warmup-epochs 1 --max-batches 2 --trials 4 --train-epochs 1 --random 2 --seeds 1 \
                --out "$(mktemp -d)"
        fi ;;
    tests:1) step "gpu tests" 150 "$PY" -m pytest -q -m "gpu and not slow" -p no:cacheprovider tests/test_device.py tests/test_backends.py tests/test_export.py tests/test_launch.py ;;
    tests:0) step "gpu tests (skip here)" 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_device.py tests/test_backends.py tests/test_export.py -rs ;;
    step:1) step "search step throughput" 300 "$PY" benchmarks/search_step.py --device cuda --steps 20 --warmup 3 ;;
    step-dcnas:1) step "search step throughput, DCNAS" 120 "$PY" benchmarks/search_step.py --device cuda --space dcnas --steps 10 --warmup 2 ;;
    step:0|step-dcnas:0) step "search step throughput (CPU, small)" 120 "$PY" benchmarks/search_step.py --device cpu --small --steps 2 --warmup 1 ;;
    ranks:1) step "two ranks on one GPU" 150 "$PY" -m pytest -q -s -m gpu -p no:cacheprovider tests/test_device.py -k two_ranks ;;
    ranks-densenas:1) step "two ranks on one GPU, DenseNAS" 90 "$PY" -m pytest -q -s -m gpu -p no:cacheprovider tests/test_device.py -k "two_ranks and densenas" ;;
    ranks:0|ranks-densenas:0) step "two ranks (CPU, bit-exact)" 90 "$PY" -m pytest -q -s -p no:cacheprovider tests/test_distributed.py ;;
    data:1) step "data throughput" 60 "$PY" benchmarks/data_throughput.py --workers 0,4,8 --batches 4 ;;
    data:0) step "data throughput" 60 "$PY" benchmarks/data_throughput.py --workers 0,2 --batches 1 ;;
    latency:1) mkdir -p "${OUT:-/tmp/gpu-latency}"
        step "GPU latency tables, launch costs and AOTInductor engines" 400 "$PY" benchmarks/gpu_latency.py --device cuda \
            --networks 100 --policy-ops 0 --aoti-seconds 60 --dump "${OUT:-/tmp/gpu-latency}/latency.json" ;;
    policy:1) step "GPU timing policy" 120 "$PY" benchmarks/gpu_latency.py --device cuda --networks 0 --policy-ops 30 \
            --reference-runs 1000 --batches '' ;;
    latency:0|policy:0) step "latency tables and an AOTInductor engine (CPU, small)" 120 "$PY" benchmarks/gpu_latency.py \
            --device cpu --networks 4 --policy-ops 2 --batches 1 --aoti-seconds 10 ;;
    *) echo "unknown step $name (tests step step-dcnas ranks ranks-densenas data latency policy search-vs-random search-vs-random-cifar)"; status=1 ;;
    esac
done
echo "== gpu_check: $(( $(date +%s) - start )) s in all, status $status"
exit $status
