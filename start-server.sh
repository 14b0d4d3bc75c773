#!/usr/bin/env bash
# Start the Shoal server in the background from this checkout: creates .venv when missing,
# installs Shoal into it, and starts the server (pid and log under SHOAL_HOME, default ~/.shoal).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SHOAL_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/shoal" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -e "$here"
fi
exec "$venv/bin/shoal" server start "$@"
