#!/usr/bin/env bash
# Fenfa's loopback load harness: Fenfa side by side with nginx, HAProxy and bare pingora, then
# Fenfa at 10 to 100k routes. See BENCHMARKS.md; `benches/run.sh --help` lists the options.
#
#   benches/run.sh            # the measured run (~10 min), appends to BENCHMARKS.md
#   benches/run.sh --quick    # smoke run (~3 min)
#
# Needs: wrk, nginx, haproxy (apt), python3 >= 3.9 with PyJWT (pip install 'pyjwt[crypto]').
# All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
  echo "benches/run.sh needs PyJWT with crypto support: pip install 'pyjwt[crypto]'" >&2
  exit 2
fi
export FENFA_BENCH_CMD="benches/run.sh"
exec python3 benches/harness/bench.py "$@"
