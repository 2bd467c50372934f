#!/usr/bin/env bash
# Three regions on one machine: three redis-servers and three ruvector-streaming servers on
# loopback, each region configured with the other two as peers. A rehearsal of a multi-region
# deployment (the runbook's rehearsal), not a production launcher.
#
#   deploy/local-regions.sh start [--http-port 8080] [--redis-port 6390] [--dir /tmp/ruvector-regions]
#                                 [--bin target/release/ruvector-streaming] [--regions us,eu,ap]
#                                 [--wait 900]   # seconds start and start-region wait for readiness
#   deploy/local-regions.sh status [--dir ...]
#   deploy/local-regions.sh stop   [--dir ...]
#   deploy/local-regions.sh kill <region> [--wipe] [--dir ...]   # the region fails: kill -9 its
#                                  server and its Redis (--wipe: both lose their data as well)
#   deploy/local-regions.sh start-region <region> [--dir ...] [--bin B]  # start its Redis and server
#                                  again with the binary `start` ran (runbook: docs/OPERATIONS.md "Region recovery")
#
# Region i (0-based) serves HTTP on http-port + i and its Redis on redis-port + i. Everything a
# run creates (configs, data directories, logs, pid files) lives under --dir.
set -euo pipefail

cmd="${1:-}"
shift || true
target=""
wipe=0
case "$cmd" in
  kill|start-region) target="${1:-}"; shift || true
    [ -n "$target" ] || { echo "$cmd needs a region name" >&2; exit 2; } ;;
esac
http_port=8080
redis_port=6390
dir=/tmp/ruvector-regions
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/ruvector-streaming"
regions="us,eu,ap"
bin_given=0
# How long start and start-region wait for readiness (s): a region that starts on an empty disk
# is ready only once it has caught up with its peers (regions.catch_up_wait_s).
wait_s=900
while [ $# -gt 0 ]; do
  case "$1" in
    --http-port) http_port="$2"; shift 2 ;;
    --redis-port) redis_port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --bin) bin="$2"; bin_given=1; shift 2 ;;
    --regions) regions="$2"; shift 2 ;;
    --wipe) wipe=1; shift ;;
    --wait) wait_s="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
IFS=',' read -r -a names <<< "$regions"

wait_ready() { # url seconds region — fails at once if the region's server exits
  local i
  for i in $(seq 1 $(( $2 * 10 ))); do
    if curl -sf "$1/health/ready" >/dev/null 2>&1; then return 0; fi
    kill -0 "$(cat "$dir/$3/server.pid")" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Starts region $1's Redis (AOF on, its own directory) and waits until it answers.
launch_redis() {
  local port
  port="$(cat "$dir/$1/redis.port")"
  mkdir -p "$dir/$1/redis"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes \
    --dir "$dir/$1/redis" --daemonize yes --pidfile "$dir/$1/redis.pid" \
    --logfile "$dir/$1/redis.log"
  local t
  for t in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis of region $1 did not start; see $dir/$1/redis.log" >&2
  return 1
}

# Starts region $1's server on its config and data directory (logs appended).
launch() {
  nohup "$bin" --config "$dir/$1/config.toml" >> "$dir/$1/server.log" 2>&1 &
  echo $! > "$dir/$1/server.pid"
}

# The HTTP port of region $1 (from its config).
port_of() {
  sed -n 's/^port = \([0-9]*\)$/\1/p' "$dir/$1/config.toml" | head -1
}

kill_region() {
  [ -f "$dir/$target/server.pid" ] || { echo "region $target is not running" >&2; exit 1; }
  local what
  for what in server redis; do
    [ -f "$dir/$target/$what.pid" ] || continue
    kill -9 "$(cat "$dir/$target/$what.pid")" 2>/dev/null || true
    rm -f "$dir/$target/$what.pid"
  done
  if [ "$wipe" = 1 ]; then
    rm -rf "$dir/$target/data" "$dir/$target/redis"
    mkdir -p "$dir/$target/data" "$dir/$target/redis"
    echo "region $target: killed (server and Redis), data lost"
  else
    echo "region $target: killed (server and Redis)"
  fi
}

start_region() {
  [ -f "$dir/$target/config.toml" ] || { echo "no region $target under $dir" >&2; exit 1; }
  if [ -f "$dir/$target/server.pid" ] && kill -0 "$(cat "$dir/$target/server.pid")" 2>/dev/null; then
    echo "region $target is already running" >&2; exit 1
  fi
  # The binary `start` ran, unless --bin names another (a fresh checkout has no release build).
  if [ "$bin_given" = 0 ] && [ -f "$dir/bin" ]; then bin="$(cat "$dir/bin")"; fi
  [ -x "$bin" ] || { echo "no server binary at $bin (cargo build --release, or --bin)" >&2; exit 1; }
  launch_redis "$target"
  launch "$target"
  local port
  port="$(port_of "$target")"
  if ! wait_ready "http://127.0.0.1:$port" "$wait_s" "$target"; then
    echo "region $target did not become ready; see $dir/$target/server.log" >&2
    exit 1
  fi
  echo "region $target: http://127.0.0.1:$port ready"
}

start() {
  command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
  [ -x "$bin" ] || { echo "no server binary at $bin (cargo build --release, or --bin)" >&2; exit 1; }
  mkdir -p "$dir"
  echo "$bin" > "$dir/bin"
  local i n peer j
  for i in "${!names[@]}"; do
    n="${names[$i]}"
    mkdir -p "$dir/$n/redis" "$dir/$n/data"
    echo "$(( redis_port + i ))" > "$dir/$n/redis.port"
    launch_redis "$n"
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
    launch "$n"
  done
  for i in "${!names[@]}"; do
    n="${names[$i]}"
    if ! wait_ready "http://127.0.0.1:$(( http_port + i ))" "$wait_s" "$n"; then
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
  kill) kill_region ;;
  start-region) start_region ;;
  *) echo "usage: $0 start|status|stop|kill <region> [--wipe]|start-region <region> [--http-port N] [--redis-port N] [--dir D] [--bin B] [--regions a,b,c] [--wait S]" >&2; exit 2 ;;
esac
