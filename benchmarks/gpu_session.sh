#!/usr/bin/env bash
# The GPU work of a session in one device call: the GPU-relevant test files, then the benchmarks.
#
#   bash benchmarks/gpu_session.sh tests     # every test file that runs kernels, on the GPU
#   bash benchmarks/gpu_session.sh bench     # forward, decoding, train step, with the peer (or one of
#                                            # them: bench-fwd, bench-decode, bench-train; SHAPES=8x2048,...)
#   bash benchmarks/gpu_session.sh stages    # where a train step of ours spends its time
#   bash benchmarks/gpu_session.sh lm        # 200-step LM loss curves: triton vs reference (issue 4)
#   bash benchmarks/gpu_session.sh all       # tests and bench (two calls' worth: more than 600 s)
#   bash benchmarks/gpu_session.sh x2 A B    # on a two-GPU machine: A on GPU 0 and B on GPU 1 at once,
#                                            # each on half the CPU cores, logs in $OUT/gpu0-A and $OUT/gpu1-B
#                                            # (e.g. "x2 tests bench", or "x2 bench-fwd bench-train"); a job
#                                            # STEP@SHAPES runs STEP at those shapes only, so one step can
#                                            # be split: "x2 bench-fwd@8x2048,4x4096,2x8192 bench-fwd@1x16384,1x65536";
#                                            # STEP+STEP runs both, in order, on that GPU
#                                            # ("x2 bench-fwd@8x2048 bench-fwd@1x16384+bench-decode")
#
# Each step has its own time limit in seconds (T_TESTS=..., T_BFWD=... override them), so one slow
# step cannot eat the call. A session has 30 minutes of device time, and start-up and the idle
# half-minute after each call count too: the whole suite (174 tests) took 491 s with 28 workers on
# the 32 cores of a two-GPU H200 machine.
# V2=1 adds the fwd_v2 experiment to the forward benchmark.
# Logs and CSVs go to $OUT (the device tool's output folder), else ./out.
#
# The benchmarks autotune the peer again at every shape (bench.retune_peer), with Triton's cached
# autotune results off. With --keep-peer-tuning they reuse what the peer chose first; for such runs
# this script seeds Triton's cache from ./.autotune (git-ignored: carry it to the GPU machine) and
# hands the autotune results of this run back in $OUT/autotune.
set -u
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
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
    echo "+ $*" >"$OUT/$name.log"
    timeout -k 15 -s INT "$limit" "$@" >>"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc in $((SECONDS - t0)) s (limit $limit)"
    grep -E "passed|failed|error|FAILED|^fwd |^decode|ours|peer|wrote" "$OUT/$name.log" | tail -25
}

if [ "$what" = tests ] || [ "$what" = all ]; then
    # one pytest over every GPU-relevant file, 16 workers (compiling dominates; one H200 holds them):
    # -v prints each test's name as it ends, so a run cut by its limit still names its failures, and
    # SIGINT (not TERM) at the limit makes pytest print the failures it has.
    nvidia-smi --query-gpu=name --format=csv,noheader
    # PYTEST_K="..." selects tests by name (pytest -k).
    step tests "${T_TESTS:-420}" python3 -m pytest -n "${WORKERS:-16}" -v -rf --tb=short -p no:cacheprovider \
        ${PYTEST_K:+-k "$PYTEST_K"} tests/test_fast_forward.py tests/test_fast_backward.py tests/test_fast_intra_v2.py \
        tests/test_fast_decode.py tests/test_fast_compile.py tests/test_layer.py tests/test_model.py
    grep -E "FAILED|ERROR" "$OUT/tests.log" | grep -v Benchmark | head -20
fi
# The peer is autotuned again at every shape (bench.retune_peer): about a minute of its tuning per shape.
if [ "$what" = bench ] || [ "$what" = bench-fwd ] || [ "$what" = all ]; then
    step bench_fwd "${T_BFWD:-400}" python3 benchmarks/bench.py --mode fwd --profile ${V2:+--v2} --out "$OUT" \
        ${SHAPES:+--shapes "$SHAPES"}
fi
if [ "$what" = bench ] || [ "$what" = bench-decode ] || [ "$what" = all ]; then
    step bench_decode "${T_BDEC:-150}" python3 benchmarks/bench_decode.py
    cp benchmarks/results/decode-*.csv "$OUT"/ 2>/dev/null
fi
if [ "$what" = bench ] || [ "$what" = bench-train ] || [ "$what" = all ]; then
    step bench_fwdbwd "${T_BTRAIN:-500}" python3 benchmarks/bench_train.py --mode fwdbwd --out "$OUT" \
        ${SHAPES:+--shapes "$SHAPES"}
fi
if [ "$what" = stages ]; then
    step bench_stages "${T_BSTAGE:-80}" python3 benchmarks/bench_train.py --mode stages --out "$OUT"
fi
if [ "$what" = x2 ]; then
    half=$(( $(nproc) / 2 ))
    jobs=("${2:-tests}" "${3:-bench}")
    dirs=()
    for gpu in 0 1; do
        job=${jobs[$gpu]}                      # STEP[@SHAPES][+STEP[@SHAPES]...], run in order on this GPU
        dir="$OUT/gpu$gpu-${job%%[@+]*}"
        dirs+=("$dir")
        mkdir -p "$dir"
        (
            IFS=+ read -ra parts <<<"$job"
            for part in "${parts[@]}"; do
                name=${part%%@*}
                shapes=""
                [ "$name" != "$part" ] && shapes=${part#*@}
                CUDA_VISIBLE_DEVICES=$gpu OUT="$dir" SHAPES="${shapes:-${SHAPES:-}}" WORKERS=$(( half > 3 ? half - 2 : 1 )) \
                    taskset -c "$(( gpu * half ))-$(( gpu * half + half - 1 ))" bash "$SELF" "$name"
            done
        ) >"$dir/session.txt" 2>&1 &
    done
    wait
    for gpu in 0 1; do echo "=== GPU $gpu: ${jobs[$gpu]}"; cat "${dirs[$gpu]}/session.txt"; done
fi
if [ "$what" = lm ]; then
    step bench_lm "${T_BLM:-500}" python3 benchmarks/bench_train.py --mode lm --out "$OUT"
fi
