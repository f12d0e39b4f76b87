#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on loopback for the test suite and
# prints the admin URL. Usage: eval "$(scripts/pg-start.sh)"; stop it with
# "$INKAN_PG_STOP". initdb refuses root, so as root the cluster runs as the
# postgres user on a directory it owns.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/initdb" ] || { echo "echo 'PostgreSQL server binaries not found' >&2; exit 1"; exit 1; }
dir=$(mktemp -d /tmp/inkan-pg.XXXXXX)
# A free loopback port, unless one is given.
port=${INKAN_PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$dir"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
if ! "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on -c max_connections=200" start >/dev/null; then
  cat "$dir/log" >&2
  exit 1
fi
echo "export INKAN_TEST_POSTGRES='postgres://postgres@127.0.0.1:$port/postgres'"
echo "export INKAN_PG_STOP='${as_pg[*]} $bin/pg_ctl -D $dir/data -m fast stop'"
