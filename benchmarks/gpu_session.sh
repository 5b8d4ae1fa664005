#!/usr/bin/env bash
# Everything that needs a GPU, as one command for a borrowed machine with no network
# (about 10 minutes on an H100/H200):
#
#   bash benchmarks/gpu_session.sh [bench_gpu.py options]
#
# 1. the CUDA-only tests (every tests/*.py with a `pytest.mark.cuda`, run with -m cuda);
# 2. benchmarks/bench_gpu.py (throughput, peak memory, MFU of each data path);
# 3. benchmarks/bench_imagenet_input.py --batched: the batched decode path (nvJPEG +
#    BatchAugment) on ImageNet-like JPEGs it makes, img/s per view plan (goal >= 10k at
#    224 px); they are cut from $PHOTO (default bench_data/grace_hopper.jpg, matplotlib's
#    sample photograph) where matplotlib is missing;
# 4. a short real CIFAR-10 run through `sslterm run` (benchmarks/cifar10_knn.toml) that
#    reports kNN accuracy after every epoch.
# Every step runs even if an earlier one failed; the exit code says whether all passed.
#
# - Wheels in $WHEELS (default .whl/: packages the machine lacks, e.g. pydantic,
#   tomlkit and pytest for Python 3.12) are installed into /tmp/site first, with no
#   index; WHEELS= skips that.
# - CIFAR-10 is extracted from $TARBALL (default bench_data/cifar10-jpeg.tar.gz,
#   a copy of ../shared/data's, both folders git-ignored) unless $DATA/train exists.
# - $RUN_SET: extra `sslterm run` overrides for step 3 (the CPU check of this script
#   uses it to shrink the run).
# - $INPUT_SET: extra bench_imagenet_input.py options for step 3 (the CPU check: --device
#   cpu and a few images).
# - The log goes to $OUT/gpu_session.log when $OUT is set, else /tmp/gpu_session.log;
#   step 3's run directory is kept under ${OUT:-/tmp}/gpu_session_runs.
set -uo pipefail
cd "$(dirname "$0")/.."

wheels="${WHEELS-.whl}"
if [ -n "$wheels" ] && compgen -G "$wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$wheels"/*.whl || exit 1
    export PYTHONPATH="/tmp/site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

data="${DATA:-/tmp/cifar10}"
if [ ! -d "$data/train" ]; then
    mkdir -p "$data"
    tar xzf "${TARBALL:-bench_data/cifar10-jpeg.tar.gz}" -C "$data" || exit 1
fi

out="${OUT:-/tmp}"
log="$out/gpu_session.log"
failed=()
step() {  # step NAME COMMAND...: run, log, remember a failure, go on
    local name="$1" start=$SECONDS
    shift
    echo "== $name" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

: >"$log"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch, timm, accelerate; print('torch', torch.__version__, '| timm', timm.__version__, '| accelerate', accelerate.__version__)"
} 2>&1 | tee -a "$log"

mapfile -t cuda_tests < <(grep -l "pytest.mark.cuda" tests/test_*.py)
step "CUDA-only tests" python3 -m pytest -q -m cuda -p no:cacheprovider "${cuda_tests[@]}"
step "bench_gpu.py" python3 benchmarks/bench_gpu.py --data "$data" "$@"
photo="${PHOTO:-bench_data/grace_hopper.jpg}"
source_arg=()
[ -f "$photo" ] && source_arg=(--source "$photo")
step "bench_imagenet_input.py (GPU decode path)" python3 benchmarks/bench_imagenet_input.py \
    --batched --workers 8 "${source_arg[@]}" ${INPUT_SET:-}
read -r -a run_set <<<"${RUN_SET:-}"
step "CIFAR-10 kNN run" python3 -m sslterm -o "$out/gpu_session_runs" run \
    benchmarks/cifar10_knn.toml "data.root=$data" "${run_set[@]}"

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}" | tee -a "$log"
    exit 1
fi
echo "all steps passed" | tee -a "$log"
