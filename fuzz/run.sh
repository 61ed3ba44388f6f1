#!/usr/bin/env bash
# Runs every fuzz target for a bounded time each, on the seeds in fuzz/seeds plus whatever an
# earlier run left in fuzz/corpus. Usage: fuzz/run.sh [seconds per target] [target…]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(jwt_verify path_route route_patterns forwarded_for audit_verify pii_mask waf_inspect)
fi
# No sanitizer: Fenfa forbids unsafe code; coverage guidance and the targets' own assertions
# do the work, at about twice the speed of ASan builds.
cargo +nightly fuzz build -s none
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  echo "== fuzz $t for ${secs}s"
  cargo +nightly fuzz run -s none "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$secs" -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss|Done|==|SUMMARY|thread)" || true
  # libFuzzer leaves crash-* / leak-* files in fuzz/artifacts/<target> on failure.
  if compgen -G "fuzz/artifacts/$t/*" >/dev/null; then
    echo "fuzz target $t FAILED; reproduce with: cargo +nightly fuzz run -s none $t fuzz/artifacts/$t/<file>"
    exit 1
  fi
done
