#!/usr/bin/env bash
# scripts/testbed/teardown.sh - undoes setup.sh; safe to run at any time.
# Ends only processes the test bed started (its sshds by pid file, what runs
# inside its namespaces, and the test users' processes), and removes only
# what carries the mitogen-testbed mark. Packages stay installed.
set -uo pipefail

TB_DIR=${TB_DIR:-/var/lib/mitogen-testbed}
MARK=mitogen-testbed
log() { printf '[testbed] %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

alive() {  # running and not a zombie
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
stop() {  # stop PID...: TERM, up to 3 s, then KILL
    local p left
    [ $# -gt 0 ] || return 0
    for p in "$@"; do kill "$p" 2>/dev/null; done
    for _ in $(seq 30); do
        left=0
        for p in "$@"; do alive "$p" && left=1; done
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
    for p in "$@"; do kill -9 "$p" 2>/dev/null; done
}

# ---- containers (only ours: by name, label, pid file)
if command -v podman >/dev/null 2>&1; then
    for c in $(podman ps -a -q --filter "label=$MARK" 2>/dev/null) \
             $(podman ps -a -q --filter "label=mitogen.temporary" 2>/dev/null); do
        podman rm -f -t 0 "$c" >/dev/null 2>&1 && log "removed podman container $c"
    done
    for i in localhost/mtb-busybox:latest localhost/mtb-noshell:latest; do
        if podman image exists "$i" 2>/dev/null; then
            podman rmi -f "$i" >/dev/null 2>&1 && log "removed image $i"
        fi
    done
fi
sp=$(cat "$TB_DIR/podman-service.pid" 2>/dev/null)
if [ -n "$sp" ] && tr '\0' ' ' 2>/dev/null <"/proc/$sp/cmdline" | grep -q "unix://$TB_DIR/podman.sock"; then
    stop "$sp"; log "stopped the podman API service"
fi
if [ -f /etc/containers/containers.conf ] && grep -q "$MARK" /etc/containers/containers.conf; then
    rm -f /etc/containers/containers.conf
fi
if command -v lxc-info >/dev/null 2>&1 && lxc-info -n mtb-lxc1 >/dev/null 2>&1; then
    lxc-stop -n mtb-lxc1 -k >/dev/null 2>&1
    lxc-destroy -n mtb-lxc1 >/dev/null 2>&1 && log "destroyed LXC container mtb-lxc1"
fi
np=$(cat "$TB_DIR/nsctr.pid" 2>/dev/null)
up=$(cat "$TB_DIR/nsctr-unshare.pid" 2>/dev/null)
if [ -n "$up" ] && tr '\0' ' ' 2>/dev/null <"/proc/$up/cmdline" | grep -q "^unshare "; then
    # the init of a PID namespace ignores SIGTERM from outside
    kill -9 "$up" ${np:+"$np"} 2>/dev/null; log "stopped the unshare container"
fi

for d in "$TB_DIR"/host*/; do
    [ -d "$d" ] || continue
    d=${d%/}
    pid=$(cat "$d/sshd.pid" 2>/dev/null)
    if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "-f $d/sshd_config"; then
        stop "$pid"; log "stopped the sshd of $(basename "$d")"
    fi
done
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^mtb-host[0-9]+$'); do
    mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
    ((${#pids[@]})) && stop "${pids[@]}"
    ip netns del "$ns" && log "deleted $ns"
done
for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^mtb-h[0-9]+$'); do
    ip link del "$l" 2>/dev/null
done
ip link show mtb-br0 >/dev/null 2>&1 && ip link del mtb-br0 && log "deleted bridge mtb-br0"

for u in alice bob carol dan erin fay; do
    if getent passwd "$u" | cut -d: -f5 | grep -q "$MARK"; then
        mapfile -t pids < <(ps -o pid= -u "$u" 2>/dev/null | tr -d ' ')
        ((${#pids[@]})) && stop "${pids[@]}"
        userdel -r "$u" 2>/dev/null || userdel "$u"
        rm -rf "/dev/shm/mitogen-$u" "/tmp/mitogen-$u" "/run/sudo/ts/$u"
        log "deleted user $u"
    fi
done
rm -f /etc/sudoers.d/mitogen-testbed
if [ -f /etc/doas.conf ] && grep -q "$MARK" /etc/doas.conf; then rm -f /etc/doas.conf; fi
case "$TB_DIR" in /|"") ;; *) rm -rf "$TB_DIR";; esac
log "torn down"
