#!/usr/bin/env bash
# Installs the system packages Parley's tests need, only when they are missing. Debian/Ubuntu (apt-get).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the demo page's browser test (driven by Playwright)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)  # the Node openai SDK's test (tests/e2e/node)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)  # the fallback French/German voice
if [ "${#need[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${need[*]} (install them with your package manager)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing system packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
