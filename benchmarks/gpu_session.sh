#!/usr/bin/env bash
# The GPU work of a session as named steps, each under its own time limit, logs and CSVs in $OUT.
#
#   bash benchmarks/gpu_session.sh STEP [STEP ...]    # the steps in order, on one GPU
#
#   step          what it runs                                                  limit (s), variable
#   tests         every test file that runs kernels (pytest -n $WORKERS)        520  T_TESTS
#   faults        benchmarks/triton_faults.py --sanitizer                       360  T_FAULTS
#   bench-fwd     benchmarks/bench.py --mode fwd --profile, with the peer       450  T_BFWD
#   bench-decode  benchmarks/bench_decode.py                                    150  T_BDEC
#   bench-train   benchmarks/bench_train.py --mode fwdbwd, with the peer        500  T_BTRAIN
#   stages        benchmarks/bench_train.py --mode stages                        80  T_BSTAGE
#   lm            benchmarks/bench_train.py --mode lm (200-step loss curves)    500  T_BLM
#   warm          benchmarks/bench_layer.py --warm in $COMPILE_WORKERS processes  300  T_WARM
#                 (default: the cores less 2): every kernel and autotune candidate
#                 compiled into Triton's cache, nothing timed or tuned
#   bench-layer   benchmarks/bench_layer.py (KEEP_PEER_TUNING=1: no retuning;   300  T_BLAYER
#                 LAYER_ALSO=V1,V2: its --also, our layer under those variants too)
#   bench-lm      benchmarks/bench_lm.py (LM_IMPLS: its --impls)                400  T_BLMRUN
#   variants      benchmarks/bench_layer.py --variants: our layer under other   300  T_VARIANTS
#                 default launch settings and recompute modes (no peer)
#   conv          benchmarks/bench_conv.py --sweep: the short convolution, and   300  T_CONV
#                 its other launch settings at 4x4096
#   bench         bench-fwd, bench-decode, bench-train
#   all           tests, then bench (more than one device call's 600 s)
#
# STEP@SHAPES runs a benchmark step at those shapes only: "bench-fwd@1x16384,1x65536" (SHAPES=... does
# the same for every step). A device call runs at most 600 s, installing the peer's wheels included, so
# pick steps whose limits fit in it: "tests" alone (the suite needs most of a call), then e.g.
# "faults bench-decode", "bench-fwd", "bench-train@8x2048,1x16384", "bench-layer bench-lm".
# PYTEST_K="..." selects tests by name (pytest -k); WORKERS sets the pytest workers (default: the cores).
#
#   bash benchmarks/gpu_session.sh x2 JOB0 JOB1       # a two-GPU machine: JOB0 on GPU 0 and JOB1 on GPU 1
#                                                     # at once, each on half the cores; a job is
#                                                     # STEP[@SHAPES][+STEP[@SHAPES]...], run in order
#                                                     # ("x2 tests bench-fwd@8x2048+bench-decode");
#                                                     # logs in $OUT/gpu0-STEP and $OUT/gpu1-STEP
#
# The benchmarks autotune the peer again at every shape (bench.retune_peer), with Triton's cached
# autotune results off. With --keep-peer-tuning they reuse what the peer chose first; for such runs
# this script seeds Triton's cache from ./.autotune (git-ignored: carry it to the GPU machine) and
# hands the autotune results of this run back as one file, $OUT/autotune.tar.gz (a call returns at
# most 8 files): `mkdir -p .autotune && tar -xzf autotune.tar.gz -C .autotune` before the next call.
# `warm` compiles the kernels of both layers and operators at every shape, the peer's autotune candidates
# shared among the processes, so that the autotuning of a later step in the same call only times them
# (compiling is most of its cost): "warm bench-layer bench-lm" in one call.
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
    (cd "$TRITON_CACHE_DIR" 2>/dev/null && find . -name "*.autotune.json" | grep -q . &&
        find . -name "*.autotune.json" -print0 | tar -czf "$OUT/autotune.tar.gz" --null -T -)
}

# the test files that run kernels; the optional ones join when they exist
TEST_FILES=(tests/test_fast_forward.py tests/test_fast_backward.py tests/test_fast_intra.py
            tests/test_fast_decode.py tests/test_fast_compile.py tests/test_contract.py
            tests/test_contract_fuzz.py tests/test_layer.py tests/test_model.py tests/test_compile.py)
for f in tests/test_fast_conv.py tests/test_fast_norm.py tests/test_distributed.py tests/test_fast_layer.py; do
    [ -f "$f" ] && TEST_FILES+=("$f")
done

step() {  # step NAME LIMIT COMMAND...: run with a limit, log to $OUT/NAME.log, print the tail
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "+ $*" >"$OUT/$name.log"
    # SIGINT (not TERM) at the limit: pytest prints the failures it has, the scripts write what they have
    timeout -k 15 -s INT "$limit" "$@" >>"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc in $((SECONDS - t0)) s (limit $limit)"
    grep -E "passed|failed|error|FAILED|^fwd |^decode|ours|peer|wrote|^  => |^  (avoided|default) " \
        "$OUT/$name.log" | tail -40
}

optional() {  # optional NAME LIMIT SCRIPT ARGS...: step NAME LIMIT python3 SCRIPT ARGS..., or a note where SCRIPT is absent
    if [ -f "$3" ]; then
        local name=$1 limit=$2
        shift 2
        step "$name" "$limit" python3 "$@"
    else
        echo "== $1: skipped, $3 does not exist"
    fi
}

run_one() {  # run_one STEP (its shapes in STEP_SHAPES)
    case $1 in
    tests)
        # -v prints each test's name as it ends, so a run cut by its limit still names its failures
        nvidia-smi --query-gpu=name --format=csv,noheader
        step tests "${T_TESTS:-520}" python3 -m pytest -n "${WORKERS:-$(nproc)}" -v -rf --tb=short --durations=25 \
            -p no:cacheprovider ${PYTEST_K:+-k "$PYTEST_K"} "${TEST_FILES[@]}"
        grep -E "FAILED|ERROR" "$OUT/tests.log" | head -20 ;;
    faults)
        step faults "${T_FAULTS:-360}" python3 benchmarks/triton_faults.py --sanitizer --out "$OUT" ;;
    bench-fwd)
        step bench_fwd "${T_BFWD:-450}" python3 benchmarks/bench.py --mode fwd --profile --out "$OUT" \
            ${STEP_SHAPES:+--shapes "$STEP_SHAPES"} ;;
    bench-decode)
        step bench_decode "${T_BDEC:-150}" python3 benchmarks/bench_decode.py --out "$OUT" ;;
    bench-train)
        step bench_fwdbwd "${T_BTRAIN:-500}" python3 benchmarks/bench_train.py --mode fwdbwd --out "$OUT" \
            ${STEP_SHAPES:+--shapes "$STEP_SHAPES"} ;;
    stages)
        step bench_stages "${T_BSTAGE:-80}" python3 benchmarks/bench_train.py --mode stages --out "$OUT" ;;
    lm)
        step bench_lm_curves "${T_BLM:-500}" python3 benchmarks/bench_train.py --mode lm --out "$OUT" ;;
    bench-layer)
        optional bench_layer "${T_BLAYER:-300}" benchmarks/bench_layer.py --out "$OUT" \
            ${STEP_SHAPES:+--shapes "$STEP_SHAPES"} ${KEEP_PEER_TUNING:+--keep-peer-tuning} \
            ${LAYER_ALSO:+--also "$LAYER_ALSO"} ;;
    warm)
        optional warm "${T_WARM:-300}" benchmarks/bench_layer.py --warm --no-compile \
            --compile-workers "${COMPILE_WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}" \
            ${STEP_SHAPES:+--shapes "$STEP_SHAPES"} ;;
    variants)
        optional variants "${T_VARIANTS:-300}" benchmarks/bench_layer.py --variants --out "$OUT" \
            ${STEP_SHAPES:+--shapes "$STEP_SHAPES"} ;;
    conv)
        step bench_conv "${T_CONV:-300}" python3 benchmarks/bench_conv.py --sweep --out "$OUT" ;;
    bench-lm)
        optional bench_lm "${T_BLMRUN:-400}" benchmarks/bench_lm.py --out "$OUT" ${LM_IMPLS:+--impls "$LM_IMPLS"} ;;
    bench)
        run_one bench-fwd; run_one bench-decode; run_one bench-train ;;
    all)
        run_one tests; run_one bench ;;
    esac
}

STEPS=" tests warm faults bench-fwd bench-decode bench-train stages lm bench-layer variants conv bench-lm bench all "

if [ $# -eq 0 ]; then
    sed -n '2,/^set -u/p' "$SELF" | sed '$d'
    exit 2
fi

if [ "$1" = x2 ]; then
    half=$(( $(nproc) / 2 ))
    jobs=("${2:-tests}" "${3:-bench}")
    dirs=()
    for gpu in 0 1; do
        job=${jobs[$gpu]}
        dir="$OUT/gpu$gpu-${job%%[@+]*}"
        dirs+=("$dir")
        mkdir -p "$dir"
        (
            IFS=+ read -ra parts <<<"$job"
            CUDA_VISIBLE_DEVICES=$gpu OUT="$dir" WORKERS=$(( half > 3 ? half - 2 : 1 )) \
                taskset -c "$(( gpu * half ))-$(( gpu * half + half - 1 ))" bash "$SELF" "${parts[@]}"
        ) >"$dir/session.txt" 2>&1 &
    done
    wait
    for gpu in 0 1; do echo "=== GPU $gpu: ${jobs[$gpu]}"; cat "${dirs[$gpu]}/session.txt"; done
    exit 0
fi

for part in "$@"; do                              # every name checked before the first step runs
    if [[ "$STEPS" != *" ${part%%@*} "* ]]; then
        echo "unknown step '${part%%@*}' (the steps are listed at the top of $SELF)"
        exit 2
    fi
done
trap save_autotune EXIT
for part in "$@"; do                              # STEP or STEP@SHAPES
    name=${part%%@*}
    shapes=""
    [ "$name" != "$part" ] && shapes=${part#*@}
    STEP_SHAPES=${shapes:-${SHAPES:-}}
    run_one "$name"
done
