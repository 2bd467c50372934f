#!/usr/bin/env bash
# Three regions on one machine: three redis-servers and three ruvector-streaming servers on
# loopback, each region configured with the other two as peers. A rehearsal of a multi-region
# deployment (the runbook's rehearsal), not a production launcher.
#
#   deploy/local-regions.sh start [--http-port 8080] [--redis-port 6390] [--dir /tmp/ruvector-regions]
#                                 [--bin target/release/ruvector-streaming] [--regions us,eu,ap]
#   deploy/local-regions.sh status [--dir ...]
#   deploy/local-regions.sh stop   [--dir ...]
#
# Region i (0-based) serves HTTP on http-port + i and its Redis on redis-port + i. Everything a
# run creates (configs, data directories, logs, pid files) lives under --dir.
set -euo pipefail

cmd="${1:-}"
shift || true
http_port=8080
redis_port=6390
dir=/tmp/ruvector-regions
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/ruvector-streaming"
regions="us,eu,ap"
while [ $# -gt 0 ]; do
  case "$1" in
    --http-port) http_port="$2"; shift 2 ;;
    --redis-port) redis_port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --regions) regions="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
IFS=',' read -r -a names <<< "$regions"

wait_ready() { # url seconds
  local i
  for i in $(seq 1 $(( $2 * 10 ))); do
    if curl -sf "$1/health/ready" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

start() {
  command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
  [ -x "$bin" ] || { echo "no server binary at $bin (cargo build --release, or --bin)" >&2; exit 1; }
  mkdir -p "$dir"
  local i n peer j
  for i in "${!names[@]}"; do
    n="${names[$i]}"
    mkdir -p "$dir/$n/redis" "$dir/$n/data"
    redis-server --port $(( redis_port + i )) --bind 127.0.0.1 --save "" --appendonly yes \
      --dir "$dir/$n/redis" --daemonize yes --pidfile "$dir/$n/redis.pid" \
      --logfile "$dir/$n/redis.log"
    {
      echo "[server]"
      echo "region = \"$n\""
      echo "host = \"127.0.0.1\""
      echo "port = $(( http_port + i ))"
      echo "[storage]"
      echo "data_dir = \"$dir/$n/data\""
      echo "[redis]"
      echo "url = \"redis://127.0.0.1:$(( redis_port + i ))\""
      for j in "${!names[@]}"; do
        [ "$j" = "$i" ] && continue
        peer="${names[$j]}"
        echo "[[regions.peers]]"
        echo "name = \"$peer\""
        echo "redis_url = \"redis://127.0.0.1:$(( redis_port + j ))\""
        echo "http_url = \"http://127.0.0.1:$(( http_port + j ))\""
      done
    } > "$dir/$n/config.toml"
    nohup "$bin" --config "$dir/$n/config.toml" > "$dir/$n/server.log" 2>&1 &
    echo $! > "$dir/$n/server.pid"
  done
  for i in "${!names[@]}"; do
    n="${names[$i]}"
    if ! wait_ready "http://127.0.0.1:$(( http_port + i ))" 60; then
      echo "region $n did not become ready; see $dir/$n/server.log" >&2
      exit 1
    fi
    echo "region $n: http://127.0.0.1:$(( http_port + i )) redis://127.0.0.1:$(( redis_port + i ))"
  done
}

status() {
  local n
  for n in "$dir"/*/; do
    n="$(basename "$n")"
    if [ -f "$dir/$n/server.pid" ] && kill -0 "$(cat "$dir/$n/server.pid")" 2>/dev/null; then
      echo "region $n: running (pid $(cat "$dir/$n/server.pid"))"
    else
      echo "region $n: stopped"
    fi
  done
}

stop() {
  local n pid t
  for n in "$dir"/*/; do
    n="$(basename "$n")"
    for what in server redis; do
      [ -f "$dir/$n/$what.pid" ] || continue
      pid="$(cat "$dir/$n/$what.pid")"
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for t in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$dir/$n/$what.pid"
    done
  done
  echo "stopped (data kept under $dir)"
}

case "$cmd" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  *) echo "usage: $0 start|status|stop [--http-port N] [--redis-port N] [--dir D] [--bin B] [--regions a,b,c]" >&2; exit 2 ;;
esac
