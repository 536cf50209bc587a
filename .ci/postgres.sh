# shellcheck shell=bash
# A throwaway PostgreSQL server on loopback for the store tests. Sourced by .ci/run, which calls
# postgres_start before the tests and postgres_stop on exit.
#
#   postgres_start  installs the Debian server package if it is missing (apt-get, non-interactive,
#                   needs root), creates a data directory with initdb, starts the server on
#                   127.0.0.1 on a free port as the unprivileged `postgres` user (created if
#                   absent), creates a database and exports
#                   METAROUTER_TEST_POSTGRES_URL=postgresql+psycopg://metarouter@127.0.0.1:PORT/metarouter_test
#   postgres_stop   stops the server and removes the data directory.
#
# Both are safe to call twice: a second start while the server runs does nothing, a stop without
# a running server does nothing. Any failure prints the reason (and the server log) and returns 1.
#
# Knobs: METAROUTER_PG_BINDIR (folder with initdb/pg_ctl; default: newest /usr/lib/postgresql/*/bin),
#        METAROUTER_PG_USER (system user running the server when root; default: postgres).

_mr_pg_log() { echo "postgres.sh: $*" >&2; }

_mr_pg_bindir() {
  if [ -n "${METAROUTER_PG_BINDIR:-}" ]; then
    [ -x "$METAROUTER_PG_BINDIR/initdb" ] && echo "$METAROUTER_PG_BINDIR" && return 0
    _mr_pg_log "METAROUTER_PG_BINDIR=$METAROUTER_PG_BINDIR has no initdb"
    return 1
  fi
  local dir
  dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
    return 0
  fi
  return 1
}

_mr_pg_install() {
  if _mr_pg_bindir >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    _mr_pg_log "PostgreSQL server binaries not found and not root: install the 'postgresql' package or set METAROUTER_PG_BINDIR"
    return 1
  fi
  _mr_pg_log "installing the Debian 'postgresql' package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || { _mr_pg_log "apt-get update failed"; return 1; }
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null ||
    { _mr_pg_log "apt-get install postgresql failed"; return 1; }
  _mr_pg_bindir >/dev/null || { _mr_pg_log "postgresql installed but initdb not found under /usr/lib/postgresql"; return 1; }
}

# Run a command as the server's user (postgres refuses to run as root).
_mr_pg_as() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$_MR_PG_OWNER" -- "$@"
  else
    "$@"
  fi
}

_mr_pg_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

postgres_start() {
  if [ -n "${_MR_PG_DIR:-}" ] && [ -d "$_MR_PG_DIR/data" ] &&
    _mr_pg_as "$_MR_PG_BIN/pg_ctl" -D "$_MR_PG_DIR/data" status >/dev/null 2>&1; then
    _mr_pg_log "already running on port $_MR_PG_PORT ($_MR_PG_DIR)"
    return 0
  fi
  _mr_pg_install || return 1
  _MR_PG_BIN="$(_mr_pg_bindir)" || return 1

  if [ "$(id -u)" -eq 0 ]; then
    _MR_PG_OWNER="${METAROUTER_PG_USER:-postgres}"
    if ! id -u "$_MR_PG_OWNER" >/dev/null 2>&1; then
      _mr_pg_log "creating system user $_MR_PG_OWNER"
      useradd --system --no-create-home --shell /usr/sbin/nologin "$_MR_PG_OWNER" ||
        { _mr_pg_log "could not create user $_MR_PG_OWNER"; return 1; }
    fi
  else
    _MR_PG_OWNER="$(id -un)"
  fi

  _MR_PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/metarouter-pg.XXXXXX")" || return 1
  chmod 755 "$_MR_PG_DIR"
  mkdir -p "$_MR_PG_DIR/data" "$_MR_PG_DIR/socket"
  if [ "$(id -u)" -eq 0 ]; then
    chown -R "$_MR_PG_OWNER" "$_MR_PG_DIR" || { _mr_pg_log "chown failed"; return 1; }
  fi

  if ! _mr_pg_as "$_MR_PG_BIN/initdb" -D "$_MR_PG_DIR/data" -U metarouter --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$_MR_PG_DIR/initdb.log" 2>&1; then
    _mr_pg_log "initdb failed:"
    cat "$_MR_PG_DIR/initdb.log" >&2
    return 1
  fi

  local attempt started=""
  for attempt in 1 2 3; do
    _MR_PG_PORT="$(_mr_pg_free_port)" || { _mr_pg_log "could not find a free port"; return 1; }
    if _mr_pg_as "$_MR_PG_BIN/pg_ctl" -D "$_MR_PG_DIR/data" -l "$_MR_PG_DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $_MR_PG_PORT -k $_MR_PG_DIR/socket -c max_connections=200" \
      start >/dev/null 2>&1; then
      started=1
      break
    fi
    _mr_pg_log "start attempt $attempt on port $_MR_PG_PORT failed"
  done
  if [ -z "$started" ]; then
    _mr_pg_log "the server did not start; its log:"
    cat "$_MR_PG_DIR/server.log" >&2 2>/dev/null
    return 1
  fi

  if ! "$_MR_PG_BIN/createdb" -h 127.0.0.1 -p "$_MR_PG_PORT" -U metarouter metarouter_test; then
    _mr_pg_log "createdb failed; server log:"
    cat "$_MR_PG_DIR/server.log" >&2
    return 1
  fi
  if ! "$_MR_PG_BIN/psql" -h 127.0.0.1 -p "$_MR_PG_PORT" -U metarouter -d metarouter_test \
    -qAtc "select 1" >/dev/null; then
    _mr_pg_log "the server runs but does not answer queries"
    return 1
  fi
  export METAROUTER_TEST_POSTGRES_URL="postgresql+psycopg://metarouter@127.0.0.1:$_MR_PG_PORT/metarouter_test"
  export _MR_PG_DIR _MR_PG_BIN _MR_PG_PORT _MR_PG_OWNER
  _mr_pg_log "PostgreSQL running: $METAROUTER_TEST_POSTGRES_URL (data in $_MR_PG_DIR)"
}

postgres_stop() {
  if [ -z "${_MR_PG_DIR:-}" ]; then
    return 0
  fi
  if [ -d "$_MR_PG_DIR/data" ]; then
    _mr_pg_as "$_MR_PG_BIN/pg_ctl" -D "$_MR_PG_DIR/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      _mr_pg_log "pg_ctl stop failed (server already down?)"
  fi
  rm -rf "$_MR_PG_DIR"
  _mr_pg_log "stopped and removed $_MR_PG_DIR"
  unset _MR_PG_DIR _MR_PG_PORT METAROUTER_TEST_POSTGRES_URL
  return 0
}
