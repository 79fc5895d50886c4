#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the engine tests and print the URL to export:
#
#   export MANGAASSIST_TEST_PG_URL="$(scripts/ci-postgres.sh)"
#
# Installs PostgreSQL from Debian's packages when it is missing (as root, or with sudo), then runs
# one cluster on 127.0.0.1:$MANGAASSIST_PG_PORT (default 54329) with its data under
# $MANGAASSIST_PG_DATA (default /tmp/mangaassist-pg), as the `postgres` user when run as root.
# Idempotent: a second call reuses the running cluster. Only the URL goes to stdout.
# Stop it with: pg_ctl -D /tmp/mangaassist-pg stop (as the same user).
set -euo pipefail

PORT="${MANGAASSIST_PG_PORT:-54329}"
DATA="${MANGAASSIST_PG_DATA:-/tmp/mangaassist-pg}"
DB="${MANGAASSIST_PG_DB:-mangaassist_test}"

log() { echo "ci-postgres: $*" >&2; }
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

BIN="$(bindir || true)"
if [ -z "$BIN" ] || [ ! -x "$BIN/pg_ctl" ]; then
  log "PostgreSQL not found; installing it from Debian's packages"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq postgresql >&2
  BIN="$(bindir)"
fi

if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  as_pg() { runuser -u postgres -- "$@"; }
  mkdir -p "$DATA"
  chown postgres "$DATA"
else
  as_pg() { "$@"; }
  mkdir -p "$DATA"
fi
chmod 700 "$DATA"

if [ ! -f "$DATA/PG_VERSION" ]; then
  log "initdb $DATA"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres -A trust --no-sync -E UTF8 >&2
fi

if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:$PORT"
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k /tmp -c fsync=off -c synchronous_commit=off -c max_connections=200" \
    start >&2
fi

PSQL=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
for _ in $(seq 1 30); do
  "${PSQL[@]}" -d postgres -c "SELECT 1" >/dev/null 2>&1 && break
  sleep 1
done
if [ "$("${PSQL[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB" >&2
fi

echo "postgresql://postgres@127.0.0.1:$PORT/$DB"
