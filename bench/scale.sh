#!/usr/bin/env bash
# The scale benchmark: `mitogen run` beside pdsh, clush, parallel-ssh and
# Python Mitogen on 1, 10 and 50 ssh hosts, and `mitogen run` on up to
# 1000 local contexts, flat and through a tree. Best of RUNS per row.
#
#   bench/scale.sh [RUNS]       (default 3; root; ~8 min with 3 on 2 CPUs)
#   bench/scale.sh --exec CMD   builds the hosts, runs `bash -c CMD` with
#                               SCALE_SSH_CONFIG, SCALE_KEY, SCALE_HOSTS
#                               (space-separated), SCALE_MITOGEN exported,
#                               removes the hosts (for profiling)
#
# Builds its own 50 hosts for the run and removes them at exit (also on
# Ctrl-C or an error): a bridge mtb-br1 at 10.201.0.1/24, network
# namespaces mtb-scale1..50 at 10.201.0.11..60 (veth mtbs1..50; no default
# route, nothing leaves the machine), each with its own sshd process (own
# config, pid file and log; one host key shared by all), own UTS namespace
# (hostname mtb-scaleN) and own mount namespace with a tmpfs on
# /root/.cache, so each host has its own agent cache as separate machines
# would. Root's ~/.bashrc there is Debian's stock one (bind-mounted over
# it): this machine's own runs `pyenv init` and `pyenv rehash`, whose
# lock loop, with 50 logins at once, cost more CPU than the tools being
# measured (bash -c is run by sshd for every tool, and reads ~/.bashrc).
# Keys, known_hosts and ssh_config live in a scratch directory. The
# test bed of scripts/testbed/setup.sh (mtb-br0, mtb-host1..3) is neither
# needed nor touched.
#
# Rows, each `true` and `uname -a` on N = 1, 10, 50 hosts, as root:
#   mitogen cold     `mitogen run -f 64`: ssh + agent start (agent already
#                    cached on the hosts: the first-ever run, which uploads
#                    the agent to all 50, is timed once, separately)
#   mitogen warm     `mitogen run --master` attached to a `mitogen master`
#                    holding the 50 hosts
#   pdsh             `pdsh -R ssh -f 64`
#   clush            `clush -f 64`
#   parallel-ssh     `parallel-ssh -p 64`
#   python mitogen   bench/python/scale_bench.py: one Router, router.ssh()
#                    from 64 threads, subprocess on each host (PyPI 0.3.54,
#                    in bench/.venv)
# then `mitogen run` on local[1-10], local[1-100], local[1-1000] flat, and
# local[1-10]/local[1-10] and local[1-10]/local[1-100] (a tree: 10 local
# contexts each starting 10 or 100 below it).
#
# Missing packages (pdsh clustershell pssh openssh-server) are installed
# with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
exec_cmd=""
if [ "${1:-}" = --exec ]; then
    exec_cmd=${2:?--exec CMD}
    set -- 1
fi
runs=${1:-3}
NS=50
NET=10.201.0
BR=mtb-br1

log() { printf '[scale] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, sshd)"

# -------------------------------------------------------------- tools
need=()
for p in pdsh clustershell pssh openssh-server openssh-client iproute2 python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; } \
        || die "apt-get install ${need[*]} failed"
fi
pssh_bin=$(command -v parallel-ssh || command -v pssh) || die "no parallel-ssh"
cargo build --quiet --release -p mitogen-cli
m="${CARGO_TARGET_DIR:-$root/target}/release/mitogen"
bench/python/setup.sh
py="$root/bench/.venv/bin/python"

# -------------------------------------------------------------- hosts
# Before the cleanup trap exists: hosts of another run (still going, or
# killed -9) are not this run's to remove.
for i in $(seq 1 $NS); do
    [ ! -e "/run/netns/mtb-scale$i" ] || die "mtb-scale$i exists (another run, or one killed -9: ip netns pids/del mtb-scale$i)"
done
! ip link show "$BR" >/dev/null 2>&1 || die "$BR exists (another run, or one killed -9: ip link del $BR)"
scratch=$(mktemp -d /tmp/mtb-scale.XXXXXX)
master_pid=""
exec_pid=""
# nspids NS: the processes inside our namespace NS (its sshd and the
# sessions it forked: nothing else runs there).
nspids() { [ -e "/run/netns/$1" ] && ip netns pids "$1" 2>/dev/null; }
cleanup() {
    trap - EXIT INT TERM HUP
    set +e
    [ -n "$exec_pid" ] && kill "$exec_pid" 2>/dev/null && wait "$exec_pid" 2>/dev/null
    [ -n "$master_pid" ] && kill "$master_pid" 2>/dev/null && wait "$master_pid" 2>/dev/null
    local i sig pids
    for sig in TERM KILL; do
        for i in $(seq 1 $NS); do
            mapfile -t pids < <(nspids "mtb-scale$i")
            ((${#pids[@]})) && kill -s "$sig" "${pids[@]}" 2>/dev/null
        done
        for _ in $(seq 20); do
            busy=""
            for i in $(seq 1 $NS); do
                [ -n "$(nspids "mtb-scale$i")" ] && { busy=1; break; }
            done
            [ -z "$busy" ] && break
            sleep 0.1
        done
    done
    for i in $(seq 1 $NS); do
        ip link del "mtbs$i" 2>/dev/null
        ip netns del "mtb-scale$i" 2>/dev/null
    done
    ip link del "$BR" 2>/dev/null
    rm -rf "$scratch"
    log "hosts removed"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

log "building $NS hosts in $scratch"
ssh-keygen -q -t ed25519 -N '' -C mtb-scale -f "$scratch/host_key"
ssh-keygen -q -t ed25519 -N '' -C mtb-scale-client -f "$scratch/id_ed25519"
install -m 0644 "$scratch/id_ed25519.pub" "$scratch/authorized_keys"
hostkey=$(cut -d' ' -f1,2 "$scratch/host_key.pub")
mkdir -p /run/sshd /root/.cache
chmod 0755 /run/sshd

ip link add "$BR" type bridge
ip addr add "$NET.1/24" dev "$BR"
ip link set "$BR" up
hosts=()
: >"$scratch/known_hosts"
bashrc=""
[ -f /root/.bashrc ] && [ -f /usr/share/base-files/dot.bashrc ] \
    && bashrc="mount --bind /usr/share/base-files/dot.bashrc /root/.bashrc &&"
for i in $(seq 1 $NS); do
    ns=mtb-scale$i addr=$NET.$((10 + i)) d=$scratch/h$i
    hosts+=("$addr")
    echo "$addr $hostkey" >>"$scratch/known_hosts"
    ip netns add "$ns"
    ip link add "mtbs$i" type veth peer name eth0 netns "$ns"
    ip link set "mtbs$i" master "$BR" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    mkdir -p "$d"
    cat >"$d/sshd_config" <<EOF
# bench/scale.sh: sshd of $ns ($addr)
ListenAddress $addr:22
HostKey $scratch/host_key
PidFile $d/sshd.pid
PermitRootLogin prohibit-password
AuthorizedKeysFile $scratch/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
PrintMotd no
MaxStartups 200
MaxSessions 200
LogLevel ERROR
EOF
    ip netns exec "$ns" unshare --uts --mount --propagation private /bin/sh -c \
        "mount -t tmpfs -o mode=0700 mtb-scale-cache /root/.cache && $bashrc hostname $ns && exec /usr/sbin/sshd -f '$d/sshd_config' -E '$d/sshd.log'"
done
cat >"$scratch/ssh_config" <<EOF
Host $NET.*
  User root
  IdentityFile $scratch/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $scratch/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR
EOF
cfg=$scratch/ssh_config
for i in $(seq 1 $NS); do
    addr=$NET.$((10 + i)) up=0
    for _ in $(seq 100); do
        if [ -s "$scratch/h$i/sshd.pid" ] && timeout 1 bash -c "exec 3<>/dev/tcp/$addr/22" 2>/dev/null; then
            up=1
            break
        fi
        sleep 0.1
    done
    [ "$up" = 1 ] || { tail -5 "$scratch/h$i/sshd.log" >&2; die "sshd of mtb-scale$i did not start"; }
done
out=$(ssh -F "$cfg" "$NET.$((10 + NS))" hostname) || die "ssh to the last host failed"
[ "$out" = "mtb-scale$NS" ] || die "the last host says it is $out"
log "$NS hosts up"
if [ -n "$exec_cmd" ]; then
    # In the background, so a signal to this script is acted on at once
    # (bash runs traps only between commands); the cleanup stops it.
    SCALE_SSH_CONFIG=$cfg SCALE_KEY=$scratch/id_ed25519 SCALE_HOSTS="${hosts[*]}" SCALE_MITOGEN=$m \
        bash -c "$exec_cmd" &
    exec_pid=$!
    wait "$exec_pid" || log "--exec: status $?"
    exec_pid=""
    exit 0
fi

# -------------------------------------------------------------- timing
# ms CMD...: milliseconds CMD takes, or "failed".
ms() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >"$scratch/out" 2>&1 || { echo failed; return 0; }
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
# best_ms CMD...: the fastest of $runs runs.
best_ms() {
    local best="" t i
    for ((i = 0; i < runs; i++)); do
        t=$(ms "$@")
        [ "$t" = failed ] && { echo failed; return 0; }
        if [ -z "$best" ] || [ "$t" -lt "$best" ]; then best=$t; fi
    done
    echo "$best"
}

# The first N hosts as each tool writes a list.
folded() { if [ "$1" = 1 ]; then echo "$NET.11"; else echo "$NET.[11-$((10 + $1))]"; fi; }
spaced() { echo "${hosts[@]:0:$1}"; }

export PDSH_RCMD_TYPE=ssh
tools=("mitogen cold" "mitogen warm" pdsh clush parallel-ssh "python mitogen" "ssh (sh &)")
# The cold tools mitogen is compared with (bare ssh is the floor, shown
# for reference).
others=(pdsh clush parallel-ssh "python mitogen")
# par_ssh N CMD [SSH OPTIONS...]: bare ssh to the first N hosts at once;
# fails if any did.
par_ssh() {
    local n=$1 cmd=$2 h pids=() bad=0 p
    shift 2
    for h in "${hosts[@]:0:$n}"; do
        ssh -F "$cfg" "$@" "$h" "$cmd" | sed "s/^/$h: /" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || bad=1; done
    return $bad
}
# run_tool TOOL N CMD [SSH OPTIONS...]: one run of TOOL on the first N
# hosts (the ssh options are for mitogen cold, pdsh and bare ssh only).
run_tool() {
    local tool=$1 n=$2 cmd=$3
    shift 3
    local o=("$@") po="" x
    for x in "${o[@]}"; do po+=" -o$x"; done
    case $tool in
        "mitogen cold") "$m" run -q -i -f 64 -F "$cfg" "${o[@]/#/-o}" "$(folded "$n")" -- "$cmd" ;;
        "mitogen warm") "$m" run -q -i --master "$master" "$(folded "$n")" -- "$cmd" ;;
        pdsh) PDSH_SSH_ARGS_APPEND="-F $cfg$po" pdsh -R ssh -f 64 -w "$(folded "$n")" "$cmd" ;;
        clush) clush -f 64 -o "-F $cfg" -w "$(folded "$n")" "$cmd" ;;
        parallel-ssh) "$pssh_bin" -p 64 -i -x "-F $cfg" -H "$(spaced "$n")" "$cmd" ;;
        "python mitogen") # shellcheck disable=SC2046 # one word per host
            "$py" bench/python/scale_bench.py "$cfg" "$scratch/id_ed25519" "$scratch/known_hosts" 64 "$cmd" $(spaced "$n") ;;
        "ssh (sh &)") par_ssh "$n" "$cmd" "${o[@]/#/-o}" ;;
    esac
}

# named N: whether the last output ($scratch/out) names N distinct hosts
# (`uname -a` prints each host's name).
named() {
    local got
    got=$(grep -o 'mtb-scale[0-9]*' "$scratch/out" | sort -u | wc -l)
    [ "$got" = "$1" ]
}

# CPU accounting, in ms (USER_HZ ticks): every process in the hosts'
# namespaces (sshd, sessions, agents; each with its reaped children).
ticks() {
    local s=0 p st
    for p in "$@"; do
        read -ra st <"/proc/$p/stat" 2>/dev/null || continue
        # Fields 14-17 (utime stime cutime cstime); the name (field 2)
        # has no spaces here.
        s=$((s + st[13] + st[14] + st[15] + st[16]))
    done
    echo $((s * 1000 / $(getconf CLK_TCK)))
}
hosts_cpu() {
    local i pids=()
    for i in $(seq 1 $NS); do mapfile -t -O "${#pids[@]}" pids < <(nspids "mtb-scale$i"); done
    ticks "${pids[@]}"
}
# cpu_row TOOL: one run on all hosts of `true`: "client_ms hosts_ms".
# The client is the tool and the children it waited for; for mitogen
# warm, also the master and its ssh clients.
cpu_row() {
    local tool=$1 h0 h1 m0=0 m1=0 c
    h0=$(hosts_cpu)
    [ "$tool" = "mitogen warm" ] && m0=$(ticks "$master_pid" $(pgrep -P "$master_pid"))
    c=$({ TIMEFORMAT='%U %S'; time run_tool "$tool" $NS true >/dev/null 2>&1; } 2>&1) || true
    [ "$tool" = "mitogen warm" ] && m1=$(ticks "$master_pid" $(pgrep -P "$master_pid"))
    h1=$(hosts_cpu)
    echo "$(awk -v a="$c" -v d=$((m1 - m0)) 'BEGIN { split(a, x, " "); printf "%d", (x[1] + x[2]) * 1000 + d }') $((h1 - h0))"
}

declare -A res
first_ever=$(ms "$m" run -q -i -f 64 -F "$cfg" "$(folded $NS)" -- true)
log "first-ever mitogen run on $NS hosts (agent uploaded to each): $first_ever ms"

master=scale-$$
"$m" master -q -f 64 --name "$master" -F "$cfg" "$(folded $NS)" >"$scratch/master.log" 2>&1 &
master_pid=$!
up=0
for _ in $(seq 300); do
    if "$m" ping -q --master "$master" "$(folded $NS)" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$master_pid" 2>/dev/null || break
    sleep 0.1
done
[ "$up" = 1 ] || { cat "$scratch/master.log" >&2; die "the warm master did not come up"; }
log "timing, best of $runs"

for n in 1 10 $NS; do
    for cmd in true "uname -a"; do
        for tool in "${tools[@]}"; do
            r=$(best_ms run_tool "$tool" "$n" "$cmd")
            # The output of the last run must name every host.
            [ "$cmd" = true ] || [ "$r" = failed ] || named "$n" || r="wrong"
            res["$tool|$cmd|$n"]=$r
        done
        log "N=$n $cmd done"
    done
done
res[warm_ping]=$(best_ms "$m" ping -q --master "$master" "$(folded $NS)")
x25519=(KexAlgorithms=curve25519-sha256)
for tool in "mitogen cold" pdsh "ssh (sh &)"; do
    for n in 1 $NS; do
        res["$tool|x25519|$n"]=$(best_ms run_tool "$tool" "$n" true "${x25519[@]}")
    done
done
log "x25519 done"
for tool in "${tools[@]}"; do
    res["$tool|cpu"]=$(cpu_row "$tool")
done
log "cpu done"
kill "$master_pid" 2>/dev/null || true
wait "$master_pid" 2>/dev/null || true
master_pid=""

locals=("local[1-10]" "local[1-100]" "local[1-1000]" "local[1-10]/local[1-10]" "local[1-10]/local[1-100]")
for t in "${locals[@]}"; do
    res["local|$t"]=$(best_ms "$m" run -q -i "$t" -- true)
done

# -------------------------------------------------------------- table
echo
echo "ssh hosts (network namespaces on this machine), ms, best of $runs; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-16s %-9s %7s %7s %7s\n' tool command 1 10 $NS
for cmd in true "uname -a"; do
    for tool in "${tools[@]}"; do
        printf '%-16s %-9s %7s %7s %7s\n' "$tool" "$cmd" \
            "${res["$tool|$cmd|1"]}" "${res["$tool|$cmd|10"]}" "${res["$tool|$cmd|$NS"]}"
    done
done
echo
echo "mitogen cold / fastest other (${others[*]}):"
for cmd in true "uname -a"; do
    for n in 1 10 $NS; do
        best="" who=""
        for tool in "${others[@]}"; do
            v=${res["$tool|$cmd|$n"]}
            [[ $v =~ ^[0-9]+$ ]] || continue
            if [ -z "$best" ] || [ "$v" -lt "$best" ]; then best=$v who=$tool; fi
        done
        c=${res["mitogen cold|$cmd|$n"]}
        if [ -n "$best" ] && [[ $c =~ ^[0-9]+$ ]]; then
            printf '  %-9s N=%-3s %6s / %6s (%s) = %s\n' "$cmd" "$n" "$c" "$best" "$who" \
                "$(awk -v a="$c" -v b="$best" 'BEGIN { printf "%.2f", a / b }')"
        fi
    done
done
for cmd in true "uname -a"; do
    w=${res["mitogen warm|$cmd|$NS"]}
    printf 'mitogen warm, %s on %s hosts: %s ms (goal <= 50 ms: %s)\n' "$cmd" $NS "$w" \
        "$( [[ $w =~ ^[0-9]+$ ]] && [ "$w" -le 50 ] && echo met || echo missed)"
done
echo "mitogen warm, no command (mitogen ping --master, a call round trip) on $NS hosts: ${res[warm_ping]} ms"
echo "mitogen first-ever cold run, true on $NS hosts (agent uploaded to each, once): $first_ever ms"
echo
echo "true with ssh -o ${x25519[*]} (default kex here: sntrup761x25519-sha512), ms, best of $runs"
printf '%-16s %7s %7s\n' tool 1 $NS
for tool in "mitogen cold" pdsh "ssh (sh &)"; do
    printf '%-16s %7s %7s\n' "$tool" "${res["$tool|x25519|1"]}" "${res["$tool|x25519|$NS"]}"
done
echo
echo "CPU of one run of true on $NS hosts, ms (client: the tool and its children; hosts: sshd, sessions, agents)"
printf '%-16s %7s %7s\n' tool client hosts
for tool in "${tools[@]}"; do
    read -r c h <<<"${res["$tool|cpu"]}"
    printf '%-16s %7s %7s\n' "$tool" "$c" "$h"
done
echo
echo "mitogen run TARGETS -- true on local contexts, ms, best of $runs"
for t in "${locals[@]}"; do
    printf '  %-28s %7s\n' "$t" "${res["local|$t"]}"
done
