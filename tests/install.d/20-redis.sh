#!/usr/bin/env bash
# The Celery executor's broker for tests and bench: Debian's redis-server, as a binary only. The
# tests start their own redis-server on a free loopback port with a temp dir; no system service
# is enabled or started here.
set -euo pipefail
command -v redis-server >/dev/null && exit 0
apt-get update -qq
# policy-rc.d answering 101 stops the package's postinst from starting a system Redis on 6379;
# an existing policy is put back afterwards.
policy=/usr/sbin/policy-rc.d
[ -e "$policy" ] && mv "$policy" "$policy.shoal-saved"
printf '#!/bin/sh\nexit 101\n' > "$policy"
chmod +x "$policy"
trap 'rm -f "$policy"; [ -e "$policy.shoal-saved" ] && mv "$policy.shoal-saved" "$policy"; true' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
systemctl disable redis-server >/dev/null 2>&1 || true
