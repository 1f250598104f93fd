#!/usr/bin/env bash
# Runs real servers under start_server and measures, for each, how a reload's new generation
# waits on the passed socket and how long after its spawn the probe sees it (see README.md).
# Usage: bench/listening_probe/measure.sh [SERVER...]   (default: all of them)
# Needs Debian's starlet, starman + libnet-server-ss-prefork-perl, h2o, python3-uvicorn,
# gunicorn, nginx-light, golang-go.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cargo build --quiet --manifest-path "$repo/Cargo.toml" --bin start_server
cargo build --quiet --release --manifest-path "$here/Cargo.toml" \
  --target-dir "$repo/target/listening_probe"
start_server=$repo/target/debug/start_server
probe=$repo/target/listening_probe/release/listening_probe
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# h2o serves as nobody.
chmod 755 "$work"
port=${PORT:-18480}
rounds=${ROUNDS:-5}

cp "$repo/tests/common/workers/app.psgi" "$here/servers/"*.py "$work/"
(cd "$work" && HOME=$work GOCACHE=$work/gocache GO111MODULE=off \
  go build -o fileserver "$here/servers/fileserver.go")
mkdir -p "$work/www" && echo hello >"$work/www/index.html"
cat >"$work/h2o.conf" <<CONF
user: nobody
num-threads: 2
listen:
  host: 127.0.0.1
  port: $port
hosts:
  default:
    paths:
      /:
        file.dir: $work/www
CONF
cat >"$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log stderr;
events {}
http {
  access_log off;
  server { listen 127.0.0.1:$port; root $work/www; }
}
CONF

# name, then the worker's command line. gunicorn takes the socket from LISTEN_FDS (its --bind
# fd://3 would take the same fd twice and fail).
servers=(
  "starlet|plackup -s Starlet --max-workers=2 -E deployment app.psgi"
  "starlet10|plackup -s Starlet --max-workers=10 -E deployment app.psgi"
  "starlet64|plackup -s Starlet --max-workers=64 -E deployment app.psgi"
  "starman|plackup -s Starman --workers=2 -E deployment app.psgi"
  "uvicorn|/usr/bin/python3 -m uvicorn --fd 3 --log-level warning asgi_app:app"
  "gunicorn-sync|gunicorn --workers 2 wsgi_app:app"
  "gunicorn-gthread|gunicorn --workers 2 --threads 4 wsgi_app:app"
  "h2o|h2o -c h2o.conf"
  "nginx|env NGINX='3;' nginx -c $work/nginx.conf -g 'daemon off;'"
  "go|./fileserver"
  "sleep|sleep 600"
  "own-socket|/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); s.accept()'"
)

for entry in "${servers[@]}"; do
  name=${entry%%|*}
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
  eval "command=(${entry#*|})"
  echo "== $name: ${command[*]}"
  (cd "$work" && exec "$start_server" --port="127.0.0.1:$port" -- "${command[@]}") \
    >"$work/$name.log" 2>&1 &
  ss=$!
  # The first generation up (promoted), then the reloads.
  for _ in $(seq 300); do
    grep -q "new worker is now running" "$work/$name.log" && break
    sleep 0.1
  done
  case $name in sleep | own-socket) give_up=3000 ;; *) give_up=10000 ;; esac
  "$probe" reload "$ss" "$rounds" "$give_up" || true
  "$probe" cost "$ss" 300 || true
  kill -TERM "$ss"
  wait "$ss" || true
done
