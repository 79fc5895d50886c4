#!/usr/bin/env bash
# Install Prometheus (with promtool) and Alertmanager from Debian's packages when they are missing.
# Called by `make setup`. As root (or with sudo) it installs them; otherwise it says how and goes on:
# the monitoring tests then fail with that message, nothing is skipped silently.
# The packages' own services are not started (there is no systemd here): the platform starts the
# binaries itself on loopback ports.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo"
  else
    echo "install-monitoring: ${missing[*]} missing; install with: apt-get install -y ${missing[*]}" >&2
    exit 0
  fi
fi
echo "install-monitoring: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
