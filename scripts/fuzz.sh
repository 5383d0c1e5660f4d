#!/bin/sh
# Runs the cargo-fuzz targets in fuzz/ for a fixed number of executions each.
#
#   scripts/fuzz.sh [RUNS] [TARGET...]
#
#   RUNS     executions per target (default 200000)
#   TARGET   targets to run (default: frame_decode intake)
#
# Examples:
#   scripts/fuzz.sh                  # 200000 runs of each target
#   scripts/fuzz.sh 20000            # a quick smoke run
#   scripts/fuzz.sh 1000000 intake   # a longer run of one target
#
# Needs the NIGHTLY toolchain (`rustup toolchain install nightly`): libFuzzer
# and the sanitizers are nightly-only. cargo-fuzz is installed with
# `cargo install cargo-fuzz --locked` if it is missing. Builds use cargo-fuzz's
# defaults: optimized, with debug assertions, overflow checks and
# AddressSanitizer; extra `cargo fuzz run` options can be passed in
# FUZZ_BUILD_ARGS (e.g. FUZZ_BUILD_ARGS="--sanitizer none" for speed).
#
# The corpus grows in fuzz/corpus/<target> (seeded with a few valid frames on
# first use) and is reused by later runs. Exits non-zero if any target
# crashes, hangs or runs out of memory; the reproducer is written to
# fuzz/artifacts/<target>/ and its path printed. Replay one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/crash-...
# The full libFuzzer output of each run is in fuzz/logs/<target>.log.
set -eu
cd "$(dirname "$0")/.."

RUNS="${1:-200000}"
[ "$#" -gt 0 ] && shift
case "$RUNS" in
'' | *[!0-9]*)
    echo "usage: $0 [RUNS] [TARGET...]  (RUNS must be a number, got '$RUNS')" >&2
    exit 2
    ;;
esac
TARGETS="${*:-frame_decode intake}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "$0: the nightly toolchain is required: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# --- seed corpus -----------------------------------------------------------
# A frame is a 32-byte header (see crates/mitogen/src/frame.rs) and a payload.

byte() { printf "\\$(printf %03o "$(($1 & 255))")"; }
le32() { byte "$1"; byte "$(($1 >> 8))"; byte "$(($1 >> 16))"; byte "$(($1 >> 24))"; }

# frame ENCODING DST SRC AUTH HANDLE REPLY_TO PAYLOAD (a printf format)
frame() {
    len=$(printf "$7" | wc -c)
    printf 'MR'
    byte "$1"
    byte 0
    le32 "$2"; le32 "$3"; le32 "$4"; le32 "$5"; le32 "$6"; le32 "$len"
    le32 0
    printf "$7"
}

# MessagePack payloads shaped like what the control handlers read.
ROUTE_NOTE='\202\242id\005\244name\241x'         # {id: 5, name: "x"}
DEL_ROUTE='\222\005\243why'                      # [5, "why"]
NIL='\300'                                       # ()
LOG_RECORD='\203\245level\003\246target\241t\247message\242hi'
CALL='\224\243mod\242fn\220\200'                 # ["mod", "fn", [], {}]

seed() {
    dir="fuzz/corpus/$1"
    mkdir -p "$dir"
    [ -n "$(ls -A "$dir")" ] && return 0
    case "$1" in
    frame_decode)
        frame 0 0 1 1 1000 0 '' >"$dir/seed-empty"
        frame 1 0 1 1 1000 7 'abc' >"$dir/seed-raw"
        { frame 2 0 1 1 1000 0 'gone'; frame 0 3 1 1 1000 0 "$NIL"; } >"$dir/seed-two"
        ;;
    intake)
        frame 0 0 1 1 103 0 "$ROUTE_NOTE" >"$dir/seed-add-route"
        frame 0 0 1 1 104 0 "$DEL_ROUTE" >"$dir/seed-del-route"
        frame 0 0 1 1 105 1000 "$NIL" >"$dir/seed-allocate-id"
        frame 0 0 1 1 106 0 "$NIL" >"$dir/seed-shutdown"
        frame 0 0 1 1 102 0 "$LOG_RECORD" >"$dir/seed-log"
        frame 0 0 1 1 101 1000 "$CALL" >"$dir/seed-call"
        frame 0 0 1 1 107 1000 "$NIL" >"$dir/seed-handshake"
        frame 1 0 1 1 1000 1001 'abc' >"$dir/seed-raw"
        frame 0 2 1 1 1000 1001 "$NIL" >"$dir/seed-no-route"
        { frame 0 0 1 1 103 0 "$ROUTE_NOTE"; frame 0 0 5 5 1000 1000 "$NIL"; } >"$dir/seed-two"
        ;;
    esac
}

# --- runs ------------------------------------------------------------------

failed=""
for t in $TARGETS; do
    seed "$t"
    mkdir -p fuzz/logs
    log="fuzz/logs/$t.log"
    echo "== fuzz $t: $RUNS runs (log: $log)"
    rc=0
    # shellcheck disable=SC2086 # FUZZ_BUILD_ARGS is a list of options
    cargo +nightly fuzz run ${FUZZ_BUILD_ARGS:-} "$t" "fuzz/corpus/$t" -- \
        -runs="$RUNS" -max_len=4096 -timeout=30 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    grep -E '^(Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))' "$log" || true
    if [ "$rc" -ne 0 ]; then
        grep -E 'panicked at|^==[0-9]+==ERROR|ERROR: libFuzzer|^SUMMARY' "$log" || tail -n 30 "$log"
        echo "!! $t failed (exit $rc); reproducer:"
        grep -Eo 'Test unit written to .*' "$log" || echo "(none written; see $log)"
        failed="$failed $t"
    else
        echo "ok $t"
    fi
done

if [ -n "$failed" ]; then
    echo "fuzzing found problems in:$failed" >&2
    exit 1
fi
echo "fuzzing: no crashes"
