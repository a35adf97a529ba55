#!/usr/bin/env bash
# Installs everything into ./.venv. Usage: scripts/install.sh [test]
#   Debian packages (as root): mosquitto (MQTT tests and demos), espeak-ng + flite + sox (test speech),
#   libportaudio2 (sounddevice's PortAudio), openssl (certificates for the MQTT TLS tests);
#   with `test` also chromium (the web dashboard tests drive it headless through playwright) and
#   fillets-ng-data-cs (real acted voices for the diarization and ASR tests).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  pkgs=(mosquitto mosquitto-clients espeak-ng flite sox libportaudio2 openssl)
  [ "${1:-}" = "test" ] && pkgs+=(chromium fillets-ng-data-cs)
  for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
PIP=".venv/bin/pip"
# torch first, pinned: the CPU wheel on disk (an unpinned torch pulls a multi-GB CUDA build).
$PIP install -q torch==2.13.0
extras="all"
[ "${1:-}" = "test" ] && extras="all,test"
$PIP install -q -e ".[$extras]"
if [ -f scripts/install-nodeps.txt ]; then
  # Packages whose declared dependencies are wrong or huge (see the comments in that file).
  grep -v '^#' scripts/install-nodeps.txt | xargs -r $PIP install -q --no-deps
fi
