# scripts/testbed/containers.sh - the container part of the test bed; sourced
# by setup.sh (needs its TB_DIR, MARK, log, die; root; idempotent).
#
# Pitfalls met on the machine this was written on (Debian 12, no systemd as
# PID 1, root without CAP_SYS_RESOURCE):
#   * podman's default rlimits (1048576) cannot be set without
#     CAP_SYS_RESOURCE: containers.conf keeps them at the current hard limits;
#   * crun rejects the hybrid cgroup layout, runc works;
#   * each `podman exec` leaves a conmon for exit_command_delay (5 s here);
#   * LXC's default config wants bridge lxcbr0: the container has no network;
#   * the init of a new PID namespace ignores SIGTERM from outside (SIGKILL);
#   * the busybox rootfs has no glibc: a dynamically linked agent needs its
#     loader brought along (that is what the tests check).

R=$TB_DIR/rootfs
if [ ! -x "$R/bin/busybox" ]; then
    rm -rf "$R.new"
    mkdir -p "$R.new"/{bin,dev,etc,proc,sys,tmp,root,home/alice,home/bob,run}
    cp /bin/busybox "$R.new/bin/busybox"
    for app in $(/bin/busybox --list); do
        [ -e "$R.new/bin/$app" ] || ln -s busybox "$R.new/bin/$app"
    done
    # The same uids as on the host, so `username` means the same account.
    printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:%s:%s::/home/alice:/bin/sh\nbob:x:%s:%s::/home/bob:/bin/sh\n' \
        "$(id -u alice)" "$(id -g alice)" "$(id -u bob)" "$(id -g bob)" >"$R.new/etc/passwd"
    printf 'root:x:0:\nalice:x:%s:\nbob:x:%s:\n' "$(id -g alice)" "$(id -g bob)" >"$R.new/etc/group"
    chown "$(id -u alice):$(id -g alice)" "$R.new/home/alice"
    chown "$(id -u bob):$(id -g bob)" "$R.new/home/bob"
    chmod 1777 "$R.new/tmp"
    chmod 0700 "$R.new/root"
    mv "$R.new" "$R"
fi

# Device nodes: the unshare container uses this tree as is (podman and LXC
# bring their own /dev); without /dev/null every `2>/dev/null` fails.
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    n=${d%%:*} mm=${d#*:}
    [ -c "$R/dev/$n" ] && continue
    rm -f "$R/dev/$n"
    mknod -m 0666 "$R/dev/$n" c "${mm%%:*}" "${mm#*:}"
done
mkdir -p "$R/dev/shm" && chmod 1777 "$R/dev/shm"

# ---- podman (+ docker CLI through podman's Docker-compatible API)
if [ ! -e /etc/containers/containers.conf ] || grep -q "$MARK" /etc/containers/containers.conf; then
    nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
    [ "$nofile" = unlimited ] && nofile=65536
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ]; then nproc=4096; fi
    mkdir -p /etc/containers
    cat >/etc/containers/containers.conf.new <<EOF
# $MARK (written by scripts/testbed/setup.sh; removed by teardown.sh)
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
netns = "none"
[engine]
runtime = "runc"
exit_command_delay = 5
EOF
    mv /etc/containers/containers.conf.new /etc/containers/containers.conf
else
    log "WARNING: /etc/containers/containers.conf is not ours; podman may fail"
fi
if ! podman image exists localhost/mtb-busybox:latest; then
    tar -C "$R" -cf "$TB_DIR/rootfs.tar" .
    podman import -q --change 'CMD ["/bin/sh"]' "$TB_DIR/rootfs.tar" localhost/mtb-busybox:latest >/dev/null \
        || die "podman import"
    rm -f "$TB_DIR/rootfs.tar"
fi
# An image with no shell at all: the agent cannot start there.
if ! podman image exists localhost/mtb-noshell:latest; then
    mkdir -p "$TB_DIR/noshell/etc" && echo mtb-noshell >"$TB_DIR/noshell/etc/hostname"
    tar -C "$TB_DIR/noshell" -cf "$TB_DIR/noshell.tar" .
    podman import -q "$TB_DIR/noshell.tar" localhost/mtb-noshell:latest >/dev/null || die "podman import noshell"
    rm -rf "$TB_DIR/noshell" "$TB_DIR/noshell.tar"
fi
# A machine restored from a snapshot keeps podman's record of a running
# container whose processes are gone: `inspect` says running, `exec` says
# "cannot exec in a stopped container". Only an exec proves it alive; a
# container that fails it is removed and made again.
if podman container exists mtb-ctr1; then
    [ "$(podman inspect -f '{{.State.Running}}' mtb-ctr1)" = true ] || podman start mtb-ctr1 >/dev/null 2>&1 || true
    if ! podman exec mtb-ctr1 true >/dev/null 2>&1; then
        log "container mtb-ctr1 does not answer (stale state?): making it again"
        podman rm -f -t 0 mtb-ctr1 >/dev/null 2>&1 || true
    fi
fi
if ! podman container exists mtb-ctr1; then
    podman run -d --name mtb-ctr1 --hostname mtb-ctr1 --init --label "$MARK=1" \
        localhost/mtb-busybox:latest /bin/sleep infinity >/dev/null || die "podman run mtb-ctr1"
fi
sp=$(cat "$TB_DIR/podman-service.pid" 2>/dev/null || true)
# A service whose working directory was deleted (started from a checkout
# since removed) starts containers that fail ("conmon: Failed to get
# working directory"): replace it. It is always started from /.
if [ -n "$sp" ] && [ "$(readlink "/proc/$sp/cwd" 2>/dev/null)" != / ]; then
    kill "$sp" 2>/dev/null || true
    sleep 0.5
    sp=""
fi
if [ -z "$sp" ] || ! tr '\0' ' ' 2>/dev/null <"/proc/$sp/cmdline" | grep -q "unix://$TB_DIR/podman.sock"; then
    rm -f "$TB_DIR/podman.sock"
    (cd / && exec setsid podman system service --time=0 "unix://$TB_DIR/podman.sock" \
        </dev/null >"$TB_DIR/podman-service.log" 2>&1) &
    echo $! >"$TB_DIR/podman-service.pid"
    for _ in $(seq 100); do [ -S "$TB_DIR/podman.sock" ] && break; sleep 0.1; done
    [ -S "$TB_DIR/podman.sock" ] || die "podman API socket did not appear"
fi
DOCKER_CLI=$(command -v docker || true)
if [ -z "$DOCKER_CLI" ]; then
    # Debian's docker.io brings the engine too: keep its service from
    # starting while it is installed (only the CLI is used).
    log "installing docker.io for its CLI"
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >>"$TB_DIR/apt.log" 2>&1 \
        || log "WARNING: docker.io did not install: the docker CLI tests will be skipped"
    rm -f /usr/sbin/policy-rc.d
    DOCKER_CLI=$(command -v docker || true)
fi

# The real docker CLI, talking to podman's API (tests use it as docker_path).
DOCKER_WRAPPER=
if [ -n "$DOCKER_CLI" ]; then
    DOCKER_WRAPPER=$TB_DIR/docker
    printf '#!/bin/sh\n# the real docker CLI, talking to podman API\nDOCKER_HOST=unix://%s/podman.sock exec %s "$@"\n' \
        "$TB_DIR" "$DOCKER_CLI" >"$DOCKER_WRAPPER"
    chmod 0755 "$DOCKER_WRAPPER"
fi

# ---- LXC
if ! lxc-info -n mtb-lxc1 >/dev/null 2>&1; then
    printf 'lxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\nlxc.uts.name = mtb-lxc1\n' \
        >"$TB_DIR/lxc-mtb-lxc1.conf"
    lxc-create -q -t busybox -n mtb-lxc1 -f "$TB_DIR/lxc-mtb-lxc1.conf" >"$TB_DIR/lxc-create.log" 2>&1 \
        || { tail "$TB_DIR/lxc-create.log" >&2; die "lxc-create failed"; }
fi
if [ "$(lxc-info -n mtb-lxc1 -sH)" != RUNNING ]; then
    lxc-start -n mtb-lxc1 -l ERROR -o "$TB_DIR/lxc-mtb-lxc1.log" || die "lxc-start"
    lxc-wait -n mtb-lxc1 -s RUNNING -t 10 || die "lxc-wait"
fi

# ---- unshare "container" for setns: target pid in $TB_DIR/nsctr.pid
np=$(cat "$TB_DIR/nsctr.pid" 2>/dev/null || true)
if [ -z "$np" ] || [ "$(readlink "/proc/$np/root" 2>/dev/null)" != "$R" ]; then
    setsid unshare --kill-child --pid --mount --uts --ipc --net --root="$R" --mount-proc \
        /bin/sh -c 'hostname mtb-ns1; ip link set lo up; exec sleep infinity' \
        </dev/null >"$TB_DIR/nsctr.log" 2>&1 &
    up=$!
    echo "$up" >"$TB_DIR/nsctr-unshare.pid"
    np=
    for _ in $(seq 50); do
        np=$(awk '{print $1}' "/proc/$up/task/$up/children" 2>/dev/null)
        [ -n "$np" ] && [ "$(readlink "/proc/$np/root" 2>/dev/null)" = "$R" ] \
            && [ "$(nsenter -t "$np" -u hostname 2>/dev/null)" = mtb-ns1 ] && break
        np=
        sleep 0.1
    done
    [ -n "$np" ] || die "unshare container did not start"
    echo "$np" >"$TB_DIR/nsctr.pid"
fi

# ---- stubs for the tools with no engine here
mkdir -p "$TB_DIR/stubs"
cp -P "$(dirname "$0")/stubs/"* "$TB_DIR/stubs/"
chmod 0755 "$TB_DIR/stubs/"*
