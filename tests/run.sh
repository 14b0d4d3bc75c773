#!/usr/bin/env bash
# Install what the tests need (system packages when run as root, a virtualenv with Shoal and its
# test extras) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

# System packages: sshd for the SSH tests.
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "tests/run.sh: missing ${need[*]}; run as root or install them" >&2
        exit 1
    fi
fi
mkdir -p /run/sshd 2>/dev/null || true

# Each capability that needs a system part (a broker, a browser, ...) installs it in a script of
# its own under tests/install.d, run here as root in name order; each must be idempotent.
if [ "$(id -u)" -eq 0 ]; then
    for script in tests/install.d/*.sh; do
        [ -e "$script" ] && bash "$script"
    done
fi

if [ "$(id -u)" -eq 0 ]; then podman_env="$(bash tests/podman.sh)"; export "${podman_env##*$'\n'}"; fi
venv="${SHOAL_VENV:-$here/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet -e ".[test]"
# A third-party plugin package, written for the tests (fault-injecting provider and automator):
# installed like any other, picked up through its entry points with no change to Shoal.
"$venv/bin/pip" install --quiet -e tests/testkit

exec "$venv/bin/python" -m pytest -q "$@" tests
