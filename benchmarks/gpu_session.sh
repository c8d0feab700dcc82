#!/usr/bin/env bash
# The GPU work of a session in one device call: the GPU-relevant test files, then the benchmarks.
#
#   bash benchmarks/gpu_session.sh tests     # every test file that runs kernels, on the GPU
#   bash benchmarks/gpu_session.sh bench     # forward, decoding, train step, with the peer
#   bash benchmarks/gpu_session.sh lm        # 200-step LM loss curves: triton vs reference (issue 4)
#   bash benchmarks/gpu_session.sh all       # tests and bench (two calls' worth: more than 600 s)
#
# Each step has its own time limit in seconds (T_FORWARD=..., T_BFWD=... override them), so one slow
# step cannot eat the call; the defaults of each half sum to 560 s, inside one 600 s device call
# (tests took 90-260 s per file on an H200, the backward's float64 oracles being the slowest).
# Logs and CSVs go to $OUT (the device tool's output folder), else ./out.
#
# The peer autotunes its backward for minutes on a fresh machine. It asks Triton to keep autotune
# results (cache_results), which Triton writes as <cache>/<hash>/<kernel>.autotune.json; this script
# seeds Triton's cache from ./.autotune (git-ignored: carry it to the GPU machine) and hands the
# results of this run back in $OUT/autotune (copy them into ./.autotune for the next session).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$HOME/.triton/cache}
if [ -d .autotune ]; then
    mkdir -p "$TRITON_CACHE_DIR" && cp -r .autotune/. "$TRITON_CACHE_DIR"/
fi
save_autotune() {
    (cd "$TRITON_CACHE_DIR" 2>/dev/null && find . -name "*.autotune.json" -exec sh -c \
        'mkdir -p "$0/autotune/$(dirname "$1")" && cp "$1" "$0/autotune/$1"' "$OUT" {} \;)
}
trap save_autotune EXIT
what=${1:-all}

step() {  # step NAME LIMIT COMMAND...: run with a limit, log to $OUT/NAME.log, print the tail
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc in $((SECONDS - t0)) s (limit $limit)"
    grep -E "passed|failed|error|FAILED|^fwd |^decode|ours|peer|wrote" "$OUT/$name.log" | tail -25
}

if [ "$what" = tests ] || [ "$what" = all ]; then
    nvidia-smi --query-gpu=name --format=csv,noheader
    for f in forward:110 backward:260 decode:50 compile:80; do
        name=${f%%:*}
        var="T_$(echo "$name" | tr a-z A-Z)"
        step "test_fast_$name" "${!var:-${f##*:}}" python3 -m pytest -q -rf --tb=short -p no:cacheprovider \
            "tests/test_fast_$name.py"
    done
    step test_layer_model "${T_LAYER:-60}" python3 -m pytest -q -rf --tb=short -p no:cacheprovider \
        tests/test_layer.py tests/test_model.py
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    step bench_fwd "${T_BFWD:-200}" python3 benchmarks/bench.py --mode fwd --profile --out "$OUT"
    step bench_decode "${T_BDEC:-80}" python3 benchmarks/bench_decode.py
    cp benchmarks/results/decode-*.csv "$OUT"/ 2>/dev/null
    step bench_stages "${T_BSTAGE:-80}" python3 benchmarks/bench_train.py --mode stages --out "$OUT"
    step bench_fwdbwd "${T_BTRAIN:-200}" python3 benchmarks/bench_train.py --mode fwdbwd --out "$OUT" \
        --shapes "${SHAPES:-8x2048,1x65536}"
fi
if [ "$what" = lm ]; then
    step bench_lm "${T_BLM:-500}" python3 benchmarks/bench_train.py --mode lm --out "$OUT"
fi
