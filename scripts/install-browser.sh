#!/usr/bin/env bash
# Install what CD-05 (the widget's pipeline) runs: Chromium for the real-browser check, and node and
# npm for the widget's build, typecheck and unit tests, from Debian's packages when they are missing.
# Called by `make setup`. As root (or with sudo) it installs them; otherwise it says how and goes on:
# the CD-05 tests then fail with that message, nothing is skipped silently.
# Playwright (a dev dependency) drives this Chromium (/usr/bin/chromium); `playwright install` is
# never run, so no browser is downloaded from elsewhere.
# The widget needs node >= 20.19 (Vite 8). Debian 12's nodejs is 18: on Debian 12 install node 20
# yourself (NodeSource's nodejs 20 package, or Debian 13's); the script says so when node is older.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO="sudo"
    else
      echo "install-browser: ${missing[*]} missing; install with: apt-get install -y ${missing[*]}" >&2
      exit 0
    fi
  fi
  echo "install-browser: installing ${missing[*]} from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if command -v node >/dev/null 2>&1; then
  version="$(node --version | sed 's/^v//')"
  major="${version%%.*}"
  minor="${version#*.}"
  minor="${minor%%.*}"
  if [ "$major" -lt 20 ] || { [ "$major" -eq 20 ] && [ "$minor" -lt 19 ]; }; then
    echo "install-browser: node $version is older than 20.19, which the widget's build needs;" \
      "install node 20.19 or later (e.g. NodeSource's nodejs 20 package)" >&2
  fi
fi
