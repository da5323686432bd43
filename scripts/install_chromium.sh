#!/usr/bin/env bash
# Debian's headless Chromium for tests/test_mlflow_ui.py (CI calls this before `make test`).
# Does nothing when /usr/bin/chromium exists; takes about a minute otherwise.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install_chromium.sh: needs root or sudo" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >/dev/null
/usr/bin/chromium --version
