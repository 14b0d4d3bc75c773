#!/usr/bin/env bash
# The second browser of the UI tests (tests/functional/test_ui_firefox.py): Debian's
# firefox-esr, driven headless over its own Marionette protocol by marionette_driver (the
# test extra). No geckodriver: Debian has no package of it. Idempotent: installs only when
# missing.
set -euo pipefail
[ -x /usr/bin/firefox-esr ] && exit 0
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends firefox-esr >/dev/null
