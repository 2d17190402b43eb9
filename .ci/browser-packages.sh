#!/usr/bin/env bash
# Install the Debian packages that the browser test of `lit serve` (tests/serve/test_browser.py) needs:
# chromium and chromium-driver (selenium drives them headless). Does nothing when both are installed.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "browser-packages: chromium and chromedriver present, nothing to install"
    exit 0
fi
echo "browser-packages: missing ${missing[*]}; installing"

if [[ $(id -u) -ne 0 ]]; then
    echo "browser-packages: must run as root to install packages" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium chromium-driver
