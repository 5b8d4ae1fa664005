#!/usr/bin/env bash
# The GPU benchmark as one command, for a borrowed GPU machine with no network.
#
#   bash benchmarks/gpu_session.sh [bench_gpu.py options]
#
# - Wheels in $WHEELS (default .whl/: packages the machine lacks, e.g. pydantic
#   and tomlkit for Python 3.12) are installed into /tmp/site first, with no index;
#   WHEELS= skips that.
# - CIFAR-10 is extracted from $TARBALL (default bench_data/cifar10-jpeg.tar.gz,
#   a copy of ../shared/data's, both folders git-ignored) unless $DATA/train exists.
# - The log goes to $OUT/bench_gpu.log when $OUT is set, else /tmp/bench_gpu.log.
set -euo pipefail
cd "$(dirname "$0")/.."

wheels="${WHEELS-.whl}"
if [ -n "$wheels" ] && compgen -G "$wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$wheels"/*.whl
    export PYTHONPATH="/tmp/site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

data="${DATA:-/tmp/cifar10}"
if [ ! -d "$data/train" ]; then
    mkdir -p "$data"
    tar xzf "${TARBALL:-bench_data/cifar10-jpeg.tar.gz}" -C "$data"
fi

log="${OUT:-/tmp}/bench_gpu.log"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch, timm, accelerate; print('torch', torch.__version__, '| timm', timm.__version__, '| accelerate', accelerate.__version__)"
} 2>&1 | tee "$log"
python3 benchmarks/bench_gpu.py --data "$data" "$@" 2>&1 | tee -a "$log"
