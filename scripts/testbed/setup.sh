#!/usr/bin/env bash
# scripts/testbed/setup.sh - the real hosts the ssh/sudo/su/doas tests use.
# Root only; idempotent (a second run only checks); undone by teardown.sh.
#
# Builds, on this one machine:
#   * packages openssh-server/-client, sudo, opendoas, iproute2, tcsh (apt-get)
#   * users alice / bob (passwords), carol and dan (key only), all marked
#     with the GECOS "mitogen-testbed" so teardown removes only these;
#     erin (password, key) has tcsh as login shell: a csh-family shell
#     parses what ssh and su hand it, as on FreeBSD; fay (key only) is
#     used by the agent-cache tests alone, which empty her cache
#   * sudo: alice may become anyone WITH her password, every time
#     (timestamp_timeout=0); bob may become alice without one.
#     doas: alice -> root/bob with password, bob -> alice without.
#   * bridge mtb-br0 = $NET.1 and network namespaces mtb-host1..3 at
#     $NET.11-13, no default route (nothing leaves the machine), each with
#     its own sshd (own host keys, pid file, log), UTS namespace (hostname
#     mtb-hostN) and mount namespace.
#   * target-side cache cases, in the hosts' own mount namespaces:
#     on mtb-host2 bob's ~/.cache is a noexec tmpfs (bob must fall back to
#     /dev/shm); on mtb-host3 /tmp, /dev/shm and bob's ~/.cache are all
#     noexec tmpfs (bob has no usable directory: a clear error), and
#     alice's ~/.cache is a 256 KiB tmpfs (a full disk for any upload).
#   * carol's cache directories are unusable everywhere (wrong mode, wrong
#     owner, wrong owner): the stage must refuse all of them.
#   * root's key $TB_DIR/id_ed25519, accepted for root, carol, dan, alice
#     and bob; $TB_DIR/known_hosts with the hosts' real keys.
#   * containers (MTB_CONTAINERS=1, the default; packages podman, runc,
#     lxc, busybox-static; see containers.sh): a busybox root file system
#     built from the busybox-static package (no glibc inside, no registry),
#     imported as the podman image localhost/mtb-busybox; the podman
#     container mtb-ctr1 (runtime runc, no network); podman's
#     Docker-compatible API on unix://$TB_DIR/podman.sock, so the real
#     docker CLI reaches the same engine; the LXC container mtb-lxc1
#     (busybox template, no network); an unshare(1) "container" (own
#     pid/mnt/uts/ipc/net namespaces, chroot to the rootfs, hostname
#     mtb-ns1) for setns; argv-checking stubs for the tools with no engine
#     here (kubectl, lxc (LXD), incus, jexec, buildah, machinectl).
#   * $TB_DIR/env: KEY=VALUE lines (sourceable) the tests read.
set -euo pipefail

TB_DIR=${TB_DIR:-/var/lib/mitogen-testbed}
NET=10.200.0
NHOSTS=3
ALICE_PW=alicepw
BOB_PW=bobpw
ERIN_PW=erinpw
MARK=mitogen-testbed
CONTAINERS=${MTB_CONTAINERS:-1}

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$TB_DIR"
chmod 755 "$TB_DIR"

# -------------------------------------------------------------- packages
missing=()
pkgs=(openssh-server openssh-client sudo opendoas iproute2 tcsh rsync git)
[ "$CONTAINERS" = 1 ] && pkgs+=(podman runc lxc busybox-static)
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$TB_DIR/apt.log" 2>&1 || { tail -20 "$TB_DIR/apt.log" >&2; die "apt-get update failed"; }
    apt-get install -y -qq "${missing[@]}" >>"$TB_DIR/apt.log" 2>&1 \
        || { tail -20 "$TB_DIR/apt.log" >&2; die "apt-get install failed"; }
fi

# -------------------------------------------------------------- users
for u in alice bob carol dan erin fay; do
    if ! id -u "$u" >/dev/null 2>&1; then
        useradd -m -s /bin/bash -c "$MARK" "$u"
        log "created user $u"
    fi
done
usermod -s /usr/bin/tcsh erin
printf 'alice:%s\nbob:%s\nerin:%s\n' "$ALICE_PW" "$BOB_PW" "$ERIN_PW" | chpasswd

# carol: every cache directory the stage may try is unusable.
c_home=$(getent passwd carol | cut -d: -f6)
install -d -o carol -g carol -m 0755 "$c_home/.cache"
install -d -o carol -g carol -m 0777 "$c_home/.cache/mitogen"
install -d -o bob -g bob -m 0700 /dev/shm/mitogen-carol
install -d -o root -g root -m 0700 /tmp/mitogen-carol

# -------------------------------------------------------------- sudo, doas
cat >"$TB_DIR/sudoers" <<'EOF'
# mitogen-testbed (scripts/testbed/setup.sh)
Defaults:alice timestamp_timeout=0
alice ALL=(ALL:ALL) ALL
bob   ALL=(alice) NOPASSWD: ALL
EOF
visudo -cqf "$TB_DIR/sudoers" || die "sudoers syntax"
install -m 0440 -o root -g root "$TB_DIR/sudoers" /etc/sudoers.d/mitogen-testbed
if [ ! -e /etc/doas.conf ] || grep -q "$MARK" /etc/doas.conf; then
    cat >"$TB_DIR/doas.conf" <<'EOF'
# mitogen-testbed (scripts/testbed/setup.sh)
permit alice as root
permit alice as bob
permit nopass bob as alice
EOF
    doas -C "$TB_DIR/doas.conf" || die "doas.conf syntax"
    install -m 0400 -o root -g root "$TB_DIR/doas.conf" /etc/doas.conf
else
    log "WARNING: /etc/doas.conf is not ours; left as it is"
fi

# -------------------------------------------------------------- network
ip link show mtb-br0 >/dev/null 2>&1 || ip link add mtb-br0 type bridge
ip addr replace "$NET.1/24" dev mtb-br0
ip link set mtb-br0 up
for i in $(seq 1 $NHOSTS); do
    ns=mtb-host$i
    ip netns list | awk '{print $1}' | grep -qx "$ns" || ip netns add "$ns"
    if ! ip link show "mtb-h$i" >/dev/null 2>&1; then
        ip -n "$ns" link del eth0 2>/dev/null || true
        ip link add "mtb-h$i" type veth peer name eth0 netns "$ns"
    fi
    ip link set "mtb-h$i" master mtb-br0 up
    ip -n "$ns" addr replace "$NET.1$i/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
done

# -------------------------------------------------------------- sshd per host
mkdir -p /run/sshd && chmod 0755 /run/sshd
[ -f "$TB_DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "$MARK" -f "$TB_DIR/id_ed25519"
mkdir -p "$TB_DIR/authorized_keys"
for u in root alice bob carol dan erin fay; do
    install -m 0644 "$TB_DIR/id_ed25519.pub" "$TB_DIR/authorized_keys/$u"
done

running_sshd() {  # pid of the sshd of host dir $1, if it runs
    local pid
    pid=$(cat "$1/sshd.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "-f $1/sshd_config" && echo "$pid"
}

: >"$TB_DIR/known_hosts.new"
for i in $(seq 1 $NHOSTS); do
    ns=mtb-host$i addr=$NET.1$i d=$TB_DIR/host$i
    mkdir -p "$d"
    [ -f "$d/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "mtb-host$i" -f "$d/ssh_host_ed25519_key"
    echo "$addr $(cut -d' ' -f1,2 "$d/ssh_host_ed25519_key.pub")" >>"$TB_DIR/known_hosts.new"
    cat >"$d/sshd_config" <<EOF
# mitogen-testbed sshd for mtb-host$i ($addr), inside netns $ns
ListenAddress $addr:22
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
PermitRootLogin prohibit-password
AuthorizedKeysFile $TB_DIR/authorized_keys/%u
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM yes
PrintMotd no
MaxStartups 100:30:200
MaxSessions 100
LogLevel VERBOSE
EOF
    /usr/sbin/sshd -t -f "$d/sshd_config" || die "sshd config of $ns"
    running_sshd "$d" >/dev/null && continue
    rm -f "$d/sshd.pid"
    # Own UTS and mount namespaces; sshd daemonizes and keeps them alive.
    a_home=$(getent passwd alice | cut -d: -f6) b_home=$(getent passwd bob | cut -d: -f6)
    install -d -o alice -g alice -m 0755 "$a_home/.cache"
    install -d -o bob -g bob -m 0755 "$b_home/.cache"
    bobcache="mount -t tmpfs -o noexec,mode=0700,uid=$(id -u bob),gid=$(id -g bob) mtb-bobcache $b_home/.cache &&"
    mounts=""
    if [ "$i" = 2 ]; then
        mounts=$bobcache
    elif [ "$i" = 3 ]; then
        mounts="mount -t tmpfs -o noexec,nosuid,mode=1777 mtb-tmp /tmp &&
            mount -t tmpfs -o noexec,nosuid,mode=1777 mtb-shm /dev/shm && $bobcache
            mount -t tmpfs -o size=256k,mode=0700,uid=$(id -u alice),gid=$(id -g alice) mtb-alicecache $a_home/.cache &&"
    fi
    ip netns exec "$ns" unshare --uts --mount --propagation private /bin/sh -c \
        "$mounts hostname mtb-host$i && exec /usr/sbin/sshd -f '$d/sshd_config' -E '$d/sshd.log'"
    up=0
    for _ in $(seq 100); do
        if running_sshd "$d" >/dev/null && timeout 1 bash -c "exec 3<>/dev/tcp/$addr/22" 2>/dev/null; then up=1; break; fi
        sleep 0.1
    done
    [ "$up" = 1 ] || { tail -5 "$d/sshd.log" >&2; die "sshd in $ns did not start"; }
    log "sshd of $ns up at $addr (pid $(running_sshd "$d"))"
done
mv "$TB_DIR/known_hosts.new" "$TB_DIR/known_hosts"
chmod 0644 "$TB_DIR/known_hosts" "$TB_DIR/id_ed25519.pub"

{
    echo "# mitogen-testbed: ssh -F $TB_DIR/ssh_config root@$NET.11 id"
    echo "Host $NET.*"
    echo "  IdentityFile $TB_DIR/id_ed25519"
    echo "  IdentitiesOnly yes"
    echo "  UserKnownHostsFile $TB_DIR/known_hosts"
    echo "  GlobalKnownHostsFile /dev/null"
    echo "  StrictHostKeyChecking yes"
    echo "  ConnectTimeout 5"
    echo "  LogLevel ERROR"
} >"$TB_DIR/ssh_config"

# -------------------------------------------------------------- containers
if [ "$CONTAINERS" = 1 ]; then
    # shellcheck source=containers.sh
    . "$(dirname "$0")/containers.sh"
fi

cat >"$TB_DIR/env" <<EOF
# mitogen-testbed: read by crates/mitogen/tests/hosts; sourceable.
TB_DIR=$TB_DIR
TB_HOST1=$NET.11
TB_HOST2=$NET.12
TB_HOST3=$NET.13
TB_UNREACHABLE=$NET.99
TB_KEY=$TB_DIR/id_ed25519
TB_KNOWN_HOSTS=$TB_DIR/known_hosts
TB_SSH_CONFIG=$TB_DIR/ssh_config
TB_ALICE_PW=$ALICE_PW
TB_BOB_PW=$BOB_PW
TB_ERIN_PW=$ERIN_PW
EOF
if [ "$CONTAINERS" = 1 ]; then
    cat >>"$TB_DIR/env" <<EOF
TB_ROOTFS=$TB_DIR/rootfs
TB_IMAGE=localhost/mtb-busybox:latest
TB_NOSHELL_IMAGE=localhost/mtb-noshell:latest
TB_PODMAN_CTR=mtb-ctr1
TB_DOCKER_HOST=unix://$TB_DIR/podman.sock
TB_DOCKER=$DOCKER_WRAPPER
TB_LXC_CTR=mtb-lxc1
TB_NSCTR_PID=$(cat "$TB_DIR/nsctr.pid")
TB_STUBS=$TB_DIR/stubs
EOF
fi

# -------------------------------------------------------------- self-check
C=$TB_DIR/ssh_config
for i in $(seq 1 $NHOSTS); do
    out=$(ssh -F "$C" -o BatchMode=yes "root@$NET.1$i" hostname 2>&1) || die "ssh to host$i: $out"
    [ "$out" = "mtb-host$i" ] || die "host$i says it is $out"
done
out=$(echo "$ALICE_PW" | runuser -u alice -- sudo -S -p '' -u bob id -un 2>&1) || die "sudo: $out"
[ "$out" = bob ] || die "sudo alice->bob gave $out"
out=$(runuser -u bob -- doas -n -u alice id -un 2>&1) || die "doas: $out"
[ "$out" = alice ] || die "doas bob->alice gave $out"
if [ "$CONTAINERS" = 1 ]; then
    out=$(podman exec mtb-ctr1 hostname 2>&1) && [ "$out" = mtb-ctr1 ] || die "podman exec: $out"
    if [ -n "$DOCKER_CLI" ]; then
        out=$(DOCKER_HOST="unix://$TB_DIR/podman.sock" "$DOCKER_CLI" exec mtb-ctr1 hostname 2>&1) \
            && [ "$out" = mtb-ctr1 ] || die "docker exec through the podman API: $out"
    fi
    out=$(lxc-attach -n mtb-lxc1 -- hostname 2>&1) && [ "$out" = mtb-lxc1 ] || die "lxc-attach: $out"
    out=$(nsenter -t "$(cat "$TB_DIR/nsctr.pid")" -a -r -w hostname 2>&1) && [ "$out" = mtb-ns1 ] \
        || die "nsenter: $out"
fi
log "ready: $TB_DIR/env"
