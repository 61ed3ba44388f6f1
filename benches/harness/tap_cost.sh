#!/usr/bin/env bash
# The per-request cost of a change to the connection path, in instructions (valgrind callgrind),
# for two fenfa-gateway binaries: e.g. the build before and after the parser-rejection tap
# (gateway/src/tap.rs, BENCHMARKS.md "Cost of the connection tap").
#
#   benches/harness/tap_cost.sh BEFORE_BIN AFTER_BIN [N_SMALL N_LARGE]
#
# Each binary runs the fenfa-bare config (1 thread, audit off) under callgrind in front of the
# benchmark's nginx upstream, serves N_SMALL and then, in a fresh process, N_LARGE keep-alive
# requests (fixed_load.py: 4 connections), and is stopped. The per-request figure is
# (Ir(N_LARGE) - Ir(N_SMALL)) / (N_LARGE - N_SMALL): start-up and shutdown cancel out.
# Instruction counts do not depend on how busy the machine is, unlike wall time.
set -euo pipefail
before=$1 after=$2 small=${3:-2000} large=${4:-12000}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
run=$(mktemp -d "${TMPDIR:-/tmp}/tap-cost.XXXXXX")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(free_port)
body=$(python3 -c 'print("{\"ok\":true,\"pad\":\"" + "x"*1000 + "\"}")')
mkdir -p "$run/nginx-tmp"
sed -e "s|{{RUN_DIR}}|$run|g" -e "s|{{UPSTREAM_PORT}}|$up|g" -e "s|{{BODY}}|$body|" \
    "$repo/benches/configs/upstream-nginx.conf" >"$run/upstream.conf"
nginx -c "$run/upstream.conf" -p "$run" 2>"$run/nginx.log" &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null || true' EXIT
sleep 0.5

measure() { # bin label n -> prints total Ir
    local bin=$1 label=$2 n=$3 port status data conf out
    port=$(free_port) status=$(free_port) data="$run/$label-$n-data" conf="$run/$label-$n.yaml"
    out="$run/callgrind.$label.$n"
    mkdir -p "$data"
    sed -e "s|{{PROXY_PORT}}|$port|" -e "s|{{STATUS_PORT}}|$status|" -e "s|{{THREADS}}|1|" \
        -e "s|{{UPSTREAM_PORT}}|$up|" -e "s|{{AUDIT}}|audit: { enabled: false }|" \
        "$repo/benches/configs/fenfa-bare.yaml" >"$conf"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --config "$conf" \
        --data-dir "$data" >"$run/$label-$n.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do
        curl -fs "http://127.0.0.1:$status/readyz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    python3 "$here/fixed_load.py" "$port" "$n" 4
    kill -INT $pid
    wait $pid || true
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'
}

for label in before after; do
    bin=$before
    [ $label = after ] && bin=$after
    a=$(measure "$bin" $label "$small")
    b=$(measure "$bin" $label "$large")
    echo "$label: Ir($small)=$a Ir($large)=$b per request=$(( (b - a) / (large - small) ))"
done
echo "callgrind files in $run"
