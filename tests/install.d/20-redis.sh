#!/usr/bin/env bash
# The Celery executor's broker for tests and bench: Debian's redis-server, as a binary only. The
# tests start their own redis-server on a free loopback port with a temp dir; no system service
# is enabled or started here.
set -euo pipefail
if ! command -v redis-server >/dev/null; then
    apt-get update -qq
    # policy-rc.d 101: the package's postinst must not start a system redis.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.shoal
    if [ -e /usr/sbin/policy-rc.d ]; then restore=1; else restore=0; fi
    [ "$restore" -eq 1 ] || cp /usr/sbin/policy-rc.d.shoal /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    [ "$restore" -eq 1 ] || rm -f /usr/sbin/policy-rc.d
    rm -f /usr/sbin/policy-rc.d.shoal
fi
