#!/usr/bin/env python3
"""Fenfa's loopback load harness (issue 6, points 2 and 3). Run it through `benches/run.sh`.

One command builds the release binaries, starts a 1 KiB JSON upstream, and measures in turn, with
the same wrk parameters and the same proxy thread count (1, then 2): the upstream directly, nginx,
bare pingora, Fenfa without plugins, Fenfa's full chain with audit off and on, and HAProxy doing
the same job — with one token reused and with a fresh token on every request. Then Fenfa with 10,
1k, 10k and 100k routes. It prints the tables and ratios and appends them, dated, with the command
and the machine, to BENCHMARKS.md. Everything listens on and talks to 127.0.0.1 only.

See BENCHMARKS.md for what each target runs and how to read the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import audit_cost  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
import scale  # noqa: E402
import targets  # noqa: E402
import tokens  # noqa: E402
from load import Wrk, WrkParams  # noqa: E402
from report import Row  # noqa: E402

REPO = HERE.parents[1]


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benches/run.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 s warm-up, 3 s per measurement, 2 idle reloads (~3 min)")
    p.add_argument("--threads", default="1,2", help="proxy thread counts, in order (default 1,2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every target this many times, round-robin, and report the "
                        "median (default 1; 3 for a final run on a noisy machine)")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 15, quick 3)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each (default 3, quick 1)")
    p.add_argument("--targets", help="comma-separated subset of: "
                   + ",".join(t.name for t in targets.TARGETS))
    p.add_argument("--fresh-tokens", type=int, default=50_000,
                   help="distinct tokens for the fresh-token workload (default 50000; more than "
                        "jwt-auth's per-thread cache of 10000, so every request misses it)")
    p.add_argument("--routes", default="10,1000,10000,100000",
                   help="route counts for the scale runs (default 10,1000,10000,100000)")
    p.add_argument("--no-scale", action="store_true", help="skip the scale runs")
    p.add_argument("--no-compare", action="store_true", help="skip the side-by-side runs")
    p.add_argument("--audit-slices", type=int,
                   help="slices of the side-by-side audit-cost measurement (default 8, quick 2; "
                        "0 skips it)")
    p.add_argument("--audit-slice", type=float,
                   help="seconds per audit-cost slice (default 5, quick 2)")
    p.add_argument("--audit-aa", action="store_true",
                   help="A/A check of the audit-cost method: audit on in both gateways")
    p.add_argument("--reload-every", type=float, default=1.0,
                   help="under load, at most one reload per this many seconds (default 1)")
    p.add_argument("--no-pin", action="store_true",
                   help="never pin CPUs with taskset (default: pin when a CPU is left over)")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--bin-dir", type=Path,
                   help="where fenfa-gateway and bare-pingora are (default: cargo's target/release)")
    p.add_argument("--no-append", action="store_true", help="print only; leave BENCHMARKS.md")
    p.add_argument("--keep", action="store_true",
                   help="keep audit trails and access logs in the run directory")
    a = p.parse_args(argv)
    a.duration = a.duration or (3.0 if a.quick else 15.0)
    a.warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 3.0)
    a.idle_reloads = 2 if a.quick else 5
    a.audit_slices = a.audit_slices if a.audit_slices is not None else (2 if a.quick else 8)
    a.audit_slice = a.audit_slice or (2.0 if a.quick else 5.0)
    a.threads = [int(t) for t in a.threads.split(",") if t]
    a.routes = [int(r) for r in a.routes.split(",") if r]
    names = [t.name for t in targets.TARGETS]
    a.targets = a.targets.split(",") if a.targets else names
    unknown = [t for t in a.targets if t not in names]
    if unknown:
        p.error(f"unknown target(s) {unknown}; known: {names}")
    return a


def require_tools() -> None:
    missing = [t for t in ("wrk", "nginx", "haproxy", "taskset", "cargo")
               if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} "
                 "(apt-get install wrk nginx haproxy util-linux; cargo from rustup)")


def build(a: argparse.Namespace) -> Path:
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    bin_dir = a.bin_dir or target_dir / "release"
    if not a.no_build:
        cmd = ["cargo", "build", "--release", "-p", "fenfa-gateway", "-p", "fenfa-benches",
               "--bins"]
        log(f"$ {' '.join(cmd)}")
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            sys.exit("build failed")
    for b in ("fenfa-gateway", "bare-pingora"):
        if not (bin_dir / b).is_file():
            sys.exit(f"{bin_dir / b} not found (build it, or pass --bin-dir)")
    return bin_dir


def cpu_layout(threads: int, pin: bool = True) -> tuple[str | None, str | None, int]:
    """(proxy CPUs, load CPUs, wrk threads). With a spare CPU, the proxy gets CPUs 0..threads-1
    and wrk plus the upstream get the rest, so that the proxy is measured, not its neighbours.
    Without one (e.g. 2 proxy threads on 2 CPUs), or with `--no-pin`, nothing is pinned and
    everything shares. Pinning applies to the whole proxy process, background threads included
    (Fenfa's audit writer and config compiler run on the proxy CPUs too)."""
    n = os.cpu_count() or 1
    if pin and n > threads:
        load = n - threads
        proxy = "0" if threads == 1 else f"0-{threads - 1}"
        rest = str(threads) if load == 1 else f"{threads}-{n - 1}"
        return proxy, rest, min(load, 4)
    return None, None, min(n, 4)


def measure_target(a, ctx: targets.Ctx, t: targets.Target, threads: int,
                   proxy_cpus: str | None, params: WrkParams, token: str,
                   tokens_file: Path, round_no: int) -> list[Row]:
    """Starts one target, checks it, measures its workloads, stops it. Never raises: a failure
    becomes a row with `error` set."""
    workloads = ["reused", "fresh"] if t.fresh else ["reused"]
    rows: list[Row] = []
    try:
        running = t.start(ctx, threads, proxy_cpus)
    except Exception as e:  # noqa: BLE001 - reported in the table
        log(f"  {t.name}: could not start: {e}")
        return [Row(threads, t.name, w, error=f"could not start: {e}", round=round_no)
                for w in workloads]
    try:
        targets.check_serves(running.port, token)
        if t.jwt:
            targets.check_enforces(running.port, ctx.keys)
        for w in workloads:
            kw = {"token": token} if w == "reused" else {"tokens_file": tokens_file}
            Wrk(params, running.port, targets.PATH, duration_s=params.warmup_s, **kw).run()
            res = Wrk(params, running.port, targets.PATH, **kw).run()
            rss = procs.tree_rss_kib(running.proc.pid) / 1024 if running.proc else 0.0
            rows.append(Row(threads, t.name, w, res, rss, round=round_no))
            log(f"  {t.name:<19} {w:<6} {res.rps:>10,.0f} rps  p50 {res.p50_ms:6.2f} ms  "
                f"p99 {res.p99_ms:6.2f} ms  RSS {rss:5.0f} MiB"
                + ("" if res.clean else
                   f"  !! {res.non_2xx} non-2xx, {res.errors} socket errors"))
    except Exception as e:  # noqa: BLE001 - reported in the table
        log(f"  {t.name}: failed: {e}")
        done = {r.workload for r in rows}
        rows += [Row(threads, t.name, w, error=str(e), round=round_no)
                 for w in workloads if w not in done]
    finally:
        running.stop()
        mib = running.artefact_bytes() / 2**20
        both = " (both workloads)" if len(workloads) > 1 else ""
        if rows and t.name.startswith("fenfa-full") and ctx.audit_supported:
            rows[0].note = f"audit trail {mib:.1f} MiB{both}"
        elif rows and t.name == "haproxy":
            rows[0].note = f"access log {mib:.1f} MiB{both}"
        if not a.keep:
            running.cleanup()
    return rows


def compare(a, ctx: targets.Ctx, token: str, tokens_file: Path, rows: list[Row],
            setups: dict[int, str]) -> None:
    for threads in a.threads:
        proxy_cpus, load_cpus, wrk_threads = cpu_layout(threads, not a.no_pin)
        params = WrkParams(wrk_threads, a.connections, a.duration, a.warmup, load_cpus)
        pin = (f"proxy on CPU {proxy_cpus}, upstream and wrk on CPU {load_cpus}"
               if proxy_cpus else "nothing pinned: proxy, upstream and wrk share all CPUs")
        rounds = f"; {a.rounds} rounds, median shown" if a.rounds > 1 else ""
        setups[threads] = f"{params.describe()}; {pin}{rounds}"
        log(f"\n== {threads} proxy thread(s): {setups[threads]}")
        upstream = targets.start_upstream(ctx, load_cpus)
        try:
            for round_no in range(a.rounds):
                if a.rounds > 1:
                    log(f"  -- round {round_no + 1} of {a.rounds}")
                for t in targets.TARGETS:
                    if t.name not in a.targets or (t.needs_audit and not ctx.audit_supported):
                        continue
                    rows += measure_target(a, ctx, t, threads, proxy_cpus, params, token,
                                           tokens_file, round_no)
        finally:
            upstream.stop()


def measure_audit_cost(a, ctx: targets.Ctx, token: str, threads: int) -> audit_cost.AuditCost:
    proxy_cpus, load_cpus, wrk_threads = cpu_layout(threads, not a.no_pin)
    params = WrkParams(wrk_threads, a.connections, a.audit_slice, min(a.warmup, 1.0), load_cpus)
    upstream = targets.start_upstream(ctx, load_cpus)
    try:
        return audit_cost.measure(ctx, threads, proxy_cpus, params, token, a.audit_slices,
                                  a.audit_slice, log, aa=a.audit_aa)
    finally:
        upstream.stop()


def run_scale(a, ctx: targets.Ctx, token: str) -> tuple[list[scale.ScaleRow], str, str]:
    threads = 1
    proxy_cpus, load_cpus, wrk_threads = cpu_layout(threads, not a.no_pin)
    params = WrkParams(wrk_threads, a.connections, a.duration, a.warmup, load_cpus)
    setup = (f"{params.describe()}; 1 proxy thread"
             + (f" on CPU {proxy_cpus}, upstream and wrk on CPU {load_cpus}" if proxy_cpus else ""))
    log(f"\n== scale: {setup}")
    rows, errors = [], []
    upstream = targets.start_upstream(ctx, load_cpus)
    try:
        for n in a.routes:
            try:
                rows.append(scale.run_one(ctx, n, threads, proxy_cpus, params, token,
                                          a.idle_reloads, a.reload_every, log))
            except Exception as e:  # noqa: BLE001 - reported below the table
                log(f"    {n} routes: failed: {e}")
                errors.append(f"- {n} routes: **failed**: {str(e).splitlines()[0][:300]}")
    finally:
        upstream.stop()
    return rows, setup, "\n".join(errors)


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    require_tools()
    command = os.environ.get("FENFA_BENCH_CMD") or "python3 benches/harness/bench.py"
    command = " ".join([command] + argv)
    started = datetime.now(timezone.utc)
    facts = report.machine_facts(REPO)
    bin_dir = build(a)

    run_dir = REPO / "target" / "bench" / started.strftime("%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"run directory: {run_dir}")
    keys = tokens.make_keys(run_dir)
    token = keys.mint(sub="u-reused", jti="reused-1")
    tokens_file = run_dir / "fresh-tokens.txt"
    secs = tokens.mint_many(keys, a.fresh_tokens, tokens_file)
    log(f"minted {a.fresh_tokens:,} fresh tokens in {secs:.1f}s")
    ctx = targets.Ctx(repo=REPO, run_dir=run_dir, bin_dir=bin_dir, keys=keys)
    targets.probe_audit(ctx)
    audit_note = ("audit: on in fenfa-full and the scale runs (`audit.enabled: true`), off in "
                  "fenfa-full-noaudit and fenfa-bare" if ctx.audit_supported else
                  "audit: **this fenfa-gateway has no `audit` section yet** (check said: "
                  f"`{ctx.audit_probe_error}`): the full chain and the scale runs ran "
                  "without audit, and fenfa-full-noaudit was skipped")
    log(audit_note)

    busy_before = report.cpu_busy()
    log(f"CPU busy before measuring (other processes): {busy_before:.0f}%")
    t0 = time.monotonic()
    rows: list[Row] = []
    setups: dict[int, str] = {}
    if not a.no_compare:
        compare(a, ctx, token, tokens_file, rows, setups)
    costs: dict[int, audit_cost.AuditCost] = {}
    if a.audit_slices > 0 and ctx.audit_supported:
        for threads in a.threads:
            costs[threads] = measure_audit_cost(a, ctx, token, threads)
    scale_rows, scale_setup, scale_errors = ([], "", "")
    if not a.no_scale:
        scale_rows, scale_setup, scale_errors = run_scale(a, ctx, token)
    elapsed = time.monotonic() - t0
    busy_after = report.cpu_busy()

    md = [f"### {started.strftime('%Y-%m-%d %H:%M')} UTC — `{command}`", ""]
    if a.quick:
        md += [f"Smoke run (`--quick`: {a.duration:g} s measurements): proves the harness works; "
               "too short to draw conclusions from.", ""]
    md += [f"- {k}: {v}" for k, v in facts]
    md += [f"- {report.quiet_note(busy_before, busy_after)}",
           f"- {audit_note}",
           f"- fresh-token workload: {a.fresh_tokens:,} distinct ES256 tokens, each wrk thread "
           f"walks its own share in turn; reused: one token on every request",
           f"- measured in {elapsed / 60:.1f} min; run directory `{run_dir.relative_to(REPO)}`"]
    table = report.medians(rows)
    for threads in a.threads:
        if threads not in setups:
            continue
        md += ["", f"#### {threads} proxy thread{'s' if threads > 1 else ''}",
               "", f"{setups[threads]}.", "", report.comparison_table(table, threads), "",
               report.ratios(table, threads, costs.get(threads))]
    for threads, cost in costs.items():
        md += ["", f"#### Audit cost, {threads} proxy thread{'s' if threads > 1 else ''} "
               "(side by side)", "", f"{cost.setup}.", "", audit_cost.table(cost)]
    if not a.no_scale:
        md += ["", "#### Scale (full chain, audit on)", "", f"{scale_setup}.", "",
               report.scale_table(scale_rows)]
        if scale_errors:
            md += ["", scale_errors]
    text = "\n".join(md) + "\n"
    log("\n" + text)
    if not a.no_append:
        report.append(REPO / "BENCHMARKS.md", text)
        log("appended to BENCHMARKS.md")
    if not a.keep:
        tokens_file.unlink(missing_ok=True)
    failed = (any(r.error for r in rows) or bool(scale_errors)
              or any(c.error or not c.complete for c in costs.values()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
