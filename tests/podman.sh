#!/usr/bin/env bash
# Set up a container engine for the tests and CI on a fresh Debian machine, as root: Podman with
# its Docker-compatible API on a socket, and a locally built base image (no registry is needed).
# Idempotent and quick when everything is already there. Logs go to stderr; the last line on
# stdout is the variable to export: DOCKER_HOST=unix:///run/shoal-podman.sock
set -euo pipefail

SOCK=/run/shoal-podman.sock
BASE=localhost/shoal-base:bookworm
SUITE=bookworm
CACHE=/var/cache/shoal
LOG=/var/log/shoal-podman.log
# The base image: sshd for container nodes; python3 and python3-venv for the shell automator and
# the cloud-CLI images (dockerfiles/); the ssh client for `shoal cluster shell`.
INCLUDE=openssh-server,openssh-client,python3,python3-venv,iproute2,ca-certificates,procps

say() { echo "tests/podman.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (installs packages, writes /etc/containers, starts a service)"
    exit 1
fi

# 1. Packages (only those missing).
need=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. Runtime config: crun fails here on cgroups and rlimits; runc with cgroupfs works.
conf='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
mkdir -p /etc/containers
if [ "$(cat /etc/containers/containers.conf 2>/dev/null)" != "$conf" ]; then
    say "writing /etc/containers/containers.conf"
    printf '%s\n' "$conf" >/etc/containers/containers.conf
fi

# 3. The base image, from a cached debootstrap tarball (named after what it includes).
if ! podman image exists "$BASE"; then
    tarball="$CACHE/shoal-base-$SUITE-$(printf '%s' "$INCLUDE" | sha256sum | cut -c1-12).tar"
    if [ ! -s "$tarball" ]; then
        say "debootstrap $SUITE into a temporary directory (about a minute)"
        mkdir -p "$CACHE"
        root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
        trap 'rm -rf "$root"' EXIT
        debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" >"$CACHE/debootstrap.log" 2>&1 \
            || { say "debootstrap failed; see $CACHE/debootstrap.log"; tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
        # Host keys made by the package's postinst would be shared by every container: each
        # container makes its own at start (ssh-keygen -A). Package caches only add size.
        rm -f "$root"/etc/ssh/ssh_host_*
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
        trap - EXIT
    fi
    say "importing $BASE from $tarball"
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE" >/dev/null
fi

# 4. Stale port forwards. Netavark publishes a port with a DNAT rule for 127.0.0.1:PORT; when a
# container's network teardown failed (its network was removed first, the service was killed),
# the rule outlives the container and steers every later loopback connection to that port, such
# as a test server's, to a dead address ("No route to host"). With no container left, every such
# rule is stale.
if [ -z "$(podman ps -aq)" ]; then
    if iptables -t nat -S NETAVARK-HOSTPORT-DNAT 2>/dev/null | grep -q -- '^-A'; then
        say "removing stale port forwards left by containers that no longer exist"
        iptables -t nat -F NETAVARK-HOSTPORT-DNAT
    fi
fi

# 5. The Docker-compatible API, started unless it already answers.
answers() {
    python3 - "$SOCK" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
sys.exit(0 if b" 200 " in s.recv(64) else 1)
PY
}
if ! answers; then
    rm -f "$SOCK"
    say "starting podman system service on $SOCK (log: $LOG)"
    setsid nohup podman system service --time=0 "unix://$SOCK" </dev/null >>"$LOG" 2>&1 &
    for _ in $(seq 1 100); do
        answers && break
        sleep 0.1
    done
    answers || { say "the API does not answer on $SOCK; see $LOG"; exit 1; }
fi

echo "DOCKER_HOST=unix://$SOCK"
