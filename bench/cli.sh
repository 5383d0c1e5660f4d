#!/bin/sh
# The `mitogen` command beside the tools operators use for the same job:
# one trivial command (`true`) on every target, wall time from start to
# exit, best of N runs.
#
#   bench/cli.sh [RUNS]      (default 5)
#
# Local: `mitogen run` on 50 local contexts (nothing to compare with: pdsh
# and friends need ssh). With the test bed up (scripts/testbed/setup.sh, as
# root): the three test hosts through mitogen (cold, and attached to a
# warm master), bare parallel `ssh`, and pdsh, clush and parallel-ssh when
# installed (Debian: apt-get install pdsh clustershell pssh); a tool that
# is missing is said so and skipped. Everything stays on this machine
# (loopback and the test bed's network namespaces).
set -eu
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --quiet --release -p mitogen-cli
m="$PWD/target/release/mitogen"

# best_ms CMD...: the fastest of $runs runs of CMD, in milliseconds.
best_ms() {
    best=""
    i=0
    while [ "$i" -lt "$runs" ]; do
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "failed"; return 0; }
        t1=$(date +%s%N)
        t=$(( (t1 - t0) / 1000000 ))
        if [ -z "$best" ] || [ "$t" -lt "$best" ]; then best=$t; fi
        i=$((i + 1))
    done
    echo "$best"
}

row() { printf '%-44s %8s ms\n' "$1" "$2"; }

echo "== local (best of $runs)"
row "mitogen run local[1-50] -- true" "$(best_ms "$m" run -q -i 'local[1-50]' -- true)"
row "mitogen run local[1-10] -- true" "$(best_ms "$m" run -q -i 'local[1-10]' -- true)"

env=${MITOGEN_TESTBED:-/var/lib/mitogen-testbed/env}
if [ ! -r "$env" ] || [ ! -e /run/netns/mtb-host1 ]; then
    echo "== test hosts: SKIPPED (no test bed; run scripts/testbed/setup.sh as root)"
    exit 0
fi
. "$env"
cfg="$TB_SSH_CONFIG"
hosts="$TB_HOST1 $TB_HOST2 $TB_HOST3"
set3=$(echo "$hosts" | tr ' ' ',')
echo "== three test hosts, as root (best of $runs)"
row "mitogen run (cold: ssh + agent start)" "$(best_ms "$m" run -q -i -F "$cfg" "$set3" -- true)"

name="bench-$$"
"$m" master -q --name "$name" -F "$cfg" "$set3" 2>/dev/null &
master=$!
i=0
while ! "$m" ping -q --master "$name" "$set3" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 100 ] || { echo "the master did not come up"; kill "$master"; exit 1; }
    sleep 0.1
done
row "mitogen run --master (warm)" "$(best_ms "$m" run -q -i --master "$name" "$set3" -- true)"
kill "$master" 2>/dev/null || true
wait "$master" 2>/dev/null || true

par_ssh() {
    for h in $hosts; do ssh -F "$cfg" "$h" true & done
    wait
}
row "ssh, three at once (sh &)" "$(best_ms par_ssh)"

if command -v pdsh >/dev/null; then
    export PDSH_SSH_ARGS_APPEND="-F $cfg"
    row "pdsh -R ssh" "$(best_ms pdsh -R ssh -w "$set3" true)"
else
    row "pdsh" "missing"
fi
if command -v clush >/dev/null; then
    row "clush" "$(best_ms clush -o "-F $cfg" -w "$set3" true)"
else
    row "clush" "missing"
fi
if command -v parallel-ssh >/dev/null; then
    row "parallel-ssh" "$(best_ms parallel-ssh -x "-F $cfg" -H "$hosts" true)"
else
    row "parallel-ssh" "missing"
fi
