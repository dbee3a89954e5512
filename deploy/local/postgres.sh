#!/usr/bin/env bash
# A private PostgreSQL cluster for the one-machine topology (deploy/Procfile), in the foreground on
# 127.0.0.1:$PG_PORT. Created under $LOCAL_DIR/postgres on the first start: superuser $POSTGRES_USER with
# $POSTGRES_PASSWORD (password auth over TCP), database $POSTGRES_DB. PostgreSQL refuses to run as root: as
# root, it runs as the `postgres` user.
set -euo pipefail

bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
if [[ -z $bin ]]; then
  initdb=$(command -v initdb) || { echo "postgres.sh: no initdb under /usr/lib/postgresql/*/bin or on PATH" >&2; exit 1; }
  bin=$(dirname "$initdb")
fi

root=$LOCAL_DIR/postgres
data=$root/data
sockets=$root/run
mkdir -p "$data" "$sockets"
chmod 700 "$data"
as_postgres=()
if [[ $(id -u) == 0 ]]; then
  chown -R postgres:postgres "$root"
  as_postgres=(runuser -u postgres --)
fi

if [[ ! -s $data/PG_VERSION ]]; then
  pwfile=$root/pwfile
  (umask 077 && printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile")
  ((${#as_postgres[@]} == 0)) || chown postgres:postgres "$pwfile"
  "${as_postgres[@]}" "$bin/initdb" --pgdata="$data" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-instructions >"$root/initdb.log"
  rm -f "$pwfile"
  if [[ $POSTGRES_DB != postgres ]]; then
    # Single-user mode: the database exists before the server first listens.
    echo "CREATE DATABASE \"$POSTGRES_DB\";" |
      "${as_postgres[@]}" "$bin/postgres" --single -D "$data" postgres >>"$root/initdb.log"
  fi
fi

exec "${as_postgres[@]}" "$bin/postgres" -D "$data" -p "$PG_PORT" -k "$sockets" -c listen_addresses=127.0.0.1
