#!/usr/bin/env bash
# Start one slmflow process of the one-machine topology (deploy/Procfile): point it at the local Redis,
# Postgres and model (unless .env names servers of its own), wait until the services it uses answer at those
# addresses, then exec the command, so that honcho's SIGTERM reaches it.
#
#   deploy/local/run.sh [--wait redis|postgres|model]... -- COMMAND [ARG]...
#
# A worker that starts before Redis or Postgres accepts would exit, and honcho stops every process when one
# exits: hence the waits (compose.yaml's depends_on with condition: service_healthy).
set -euo pipefail

: "${SLMFLOW_REDIS_URL:=redis://:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0}"
: "${SLMFLOW_CHECKPOINT_URL:=postgresql://${POSTGRES_USER}:${POSTGRES_PASSWORD}@127.0.0.1:${PG_PORT}/${POSTGRES_DB}}"
: "${SLMFLOW_SLM_BASE_URL:=http://127.0.0.1:${MODEL_PORT}/v1}"
export SLMFLOW_REDIS_URL SLMFLOW_CHECKPOINT_URL SLMFLOW_SLM_BASE_URL
timeout_s=${WAIT_TIMEOUT_S:-120}

fail() {
  echo "run.sh: $*" >&2
  exit 1
}

# Until something accepts TCP connections at the host and port of URL $1 (default port $2).
wait_url() {
  [[ $1 =~ ^[a-z]+://([^@/]*@)?([^:/?]+)(:([0-9]+))? ]] || fail "cannot read a host from $1"
  local host=${BASH_REMATCH[2]} port=${BASH_REMATCH[4]:-$2} deadline=$((SECONDS + timeout_s))
  until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
    ((SECONDS < deadline)) || fail "nothing accepts on $host:$port after ${timeout_s}s"
    sleep 0.2
  done
}

# Postgres listens before it takes sessions ("the database system is starting up"): ask it.
wait_postgres() {
  wait_url "$SLMFLOW_CHECKPOINT_URL" 5432
  command -v pg_isready >/dev/null || return 0
  local deadline=$((SECONDS + timeout_s))
  until pg_isready --quiet --dbname "$SLMFLOW_CHECKPOINT_URL"; do
    ((SECONDS < deadline)) || fail "PostgreSQL not ready after ${timeout_s}s"
    sleep 0.2
  done
}

while (($#)); do
  case $1 in
    --wait)
      case ${2:-} in
        redis) wait_url "$SLMFLOW_REDIS_URL" 6379 ;;
        postgres) wait_postgres ;;
        model) wait_url "$SLMFLOW_SLM_BASE_URL" 80 ;;
        *) fail "--wait takes redis, postgres or model, not '${2:-}'" ;;
      esac
      shift 2
      ;;
    --) shift; break ;;
    *) fail "unknown option $1 (usage: run.sh [--wait redis|postgres|model]... -- COMMAND...)" ;;
  esac
done
(($#)) || fail "no command after --"
exec "$@"
