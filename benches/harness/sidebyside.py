"""Side-by-side runs that answer one question each, in one run, as ratios (see BENCHMARKS.md):

- *regression*: the full chain (reused token, audit on) on this commit's `fenfa-gateway` and on
  another build of it (`--base-bin DIR`, e.g. the previous commit's), alternating in every round;
- *body cost*: a no-op request-body plugin (`body-noop` from examples/body-plugin, buffering the
  whole body) against the same route without it, in one `fenfa-example-gateway` process, on
  POST bodies of 1 KiB and 64 KiB;
- *inspection cost* (`--inspection`): the full chain with and without the `waf` plugin (block
  mode) on a GET with a query and a POST with a 1 KiB JSON body, and with and without
  `response-masking` on a 1 KiB JSON response and a 64 KiB one full of personal data;
- *cluster cost* (`--cluster`): the full chain with its rate limit kept in the gateway
  (`store: local`) and in Redis (`store: redis`, one round trip per request; the machine's Redis,
  `FENFA_BENCH_REDIS_URL`, default `redis://127.0.0.1:6379`), and with OpenTelemetry tracing at a
  10% sample ratio exporting to an OTLP sink the harness runs on loopback.

    python3 benches/harness/sidebyside.py --base-bin /path/to/previous/release [--rounds 3]
    python3 benches/harness/sidebyside.py --inspection [--rounds 3]
    python3 benches/harness/sidebyside.py --cluster [--rounds 3]

Builds nothing: build `fenfa-gateway` and `fenfa-example-gateway` (`cargo build --release -p
fenfa-gateway -p fenfa-example-body-plugin`) and the base first. 1 proxy thread pinned to CPU 0,
wrk and the upstream on the other CPUs, as in the main harness.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import procs
import report
import targets
import tokens
from bench import cpu_layout
from load import HERE, Result, Wrk, WrkParams

REPO = HERE.parent.parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class PostWrk(Wrk):
    """wrk POSTing a JSON body of `size` bytes (post.lua), with a bearer token if given."""

    def __init__(self, params: WrkParams, port: int, path: str, size: int,
                 duration_s: float | None = None, token: str | None = None):
        super().__init__(params, port, path, duration_s=duration_s)
        d = params.duration_s if duration_s is None else duration_s
        argv = ["wrk", f"-t{params.threads}", f"-c{params.connections}", f"-d{d:g}s",
                "--timeout", "10s", "-s", str(HERE / "post.lua")]
        if token:
            argv += ["-H", f"Authorization: Bearer {token}"]
        argv += [f"http://{procs.LOOPBACK}:{port}{path}", "--", f"size={size}"]
        self.argv = (["taskset", "-c", params.cpus] + argv) if params.cpus else argv


def write_big_json(path: Path, size: int = 65536) -> None:
    """A JSON array of citizen records, each with a name, a mobile and a (valid) resident ID
    number, padded to exactly `size` bytes."""
    records, out = [], "[]"
    i = 0
    while True:
        rec = ('{"id":%d,"name":"张三","mobile":"13812345678","idcard":"11010519491231002X",'
               '"address":"北京市朝阳区某街道1号","status":"已办结"}' % i)
        nxt = "[" + ",".join(records + [rec]) + "]"
        if len(nxt.encode()) > size - 16:
            break
        records.append(rec)
        out = nxt
        i += 1
    pad = size - len(out.encode()) - len(',{"pad":""}')
    out = out[:-1] + ',{"pad":"' + "x" * pad + '"}]'
    assert len(out.encode()) == size, len(out.encode())
    path.write_text(out)


def measure(make, params: WrkParams) -> Result:
    make(params.warmup_s).run()
    res = make(None).run()
    if not res.clean:
        raise RuntimeError(f"{res.non_2xx} non-2xx, {res.errors} socket errors")
    return res


def fmt(results: list[Result]) -> tuple[float, float, str]:
    rps = statistics.median(r.rps for r in results)
    p99 = statistics.median(r.p99_ms for r in results)
    spread = f"{min(r.rps for r in results):,.0f}–{max(r.rps for r in results):,.0f}"
    return rps, p99, spread


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-bin", type=Path,
                   help="directory with the fenfa-gateway to compare against (regression)")
    p.add_argument("--inspection", action="store_true",
                   help="measure the waf and response-masking plugins instead")
    p.add_argument("--cluster", action="store_true",
                   help="measure the rate limit in Redis against the local one instead")
    p.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=64)
    a = p.parse_args(argv)
    variants = a.inspection or a.cluster
    if not variants and not a.base_bin:
        sys.exit("give --base-bin DIR (regression and body cost), --inspection or --cluster")
    needed = [a.bin_dir / "fenfa-gateway"]
    if not variants:
        needed += [a.base_bin / "fenfa-gateway", a.bin_dir / "fenfa-example-gateway"]
    for b in needed:
        if not b.is_file():
            sys.exit(f"{b} not found: build it first")

    started = datetime.now(timezone.utc)
    run_dir = REPO / "target" / "bench" / ("sbs-" + started.strftime("%Y%m%dT%H%M%SZ"))
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = tokens.make_keys(run_dir)
    token = keys.mint(sub="u-reused", jti="reused-1")
    proxy_cpus, load_cpus, wrk_threads = cpu_layout(1)
    params = WrkParams(wrk_threads, a.connections, a.duration, a.warmup, load_cpus)
    busy_before = report.cpu_busy()

    def ctx_for(bin_dir: Path) -> targets.Ctx:
        c = targets.Ctx(repo=REPO, run_dir=run_dir, bin_dir=bin_dir, keys=keys,
                        upstream_port=upstream_port)
        targets.probe_audit(c)
        return c

    def ctx_example(probed: targets.Ctx) -> targets.Ctx:
        """This build's `fenfa-example-gateway` (it has no `check` command to probe with: it
        knows what `probed`, the same build's `fenfa-gateway`, knows)."""
        class Example(targets.Ctx):
            @property
            def fenfa(self) -> Path:
                return a.bin_dir / "fenfa-example-gateway"
        e = Example(repo=REPO, run_dir=run_dir, bin_dir=a.bin_dir, keys=keys,
                    upstream_port=upstream_port)
        e.audit_supported = probed.audit_supported
        return e

    write_big_json(run_dir / "big.json")
    upstream_ctx = targets.Ctx(repo=REPO, run_dir=run_dir, bin_dir=a.bin_dir, keys=keys)
    upstream = targets.start_upstream(upstream_ctx, load_cpus)
    upstream_port = upstream_ctx.upstream_port
    if variants:
        try:
            return compare_variants(a, ctx_for(a.bin_dir), params, proxy_cpus, token, started,
                                    busy_before, argv)
        finally:
            upstream.stop()
    full: dict[str, list[Result]] = {"base": [], "this": []}
    body: dict[tuple[str, int], list[Result]] = {}
    t0 = time.monotonic()
    try:
        ctxs = {"base": ctx_for(a.base_bin), "this": ctx_for(a.bin_dir)}
        example = ctx_example(ctxs["this"])
        for rnd in range(a.rounds):
            order = ["base", "this"] if rnd % 2 == 0 else ["this", "base"]
            for which in order:
                run = targets.start_fenfa(ctxs[which], f"full-{which}", "fenfa-full.yaml", 1,
                                          proxy_cpus, audit=True)
                try:
                    r = measure(lambda d: Wrk(params, run.port, targets.PATH, token=token,
                                              duration_s=d), params)
                finally:
                    run.stop()
                    run.cleanup()
                full[which].append(r)
                log(f"round {rnd + 1} full chain {which:<4} {r.rps:>9,.0f} rps  "
                    f"p99 {r.p99_ms:.2f} ms")
            # fenfa-example-gateway has no `check` command; a bad config fails its start.
            run = targets.start_fenfa(example, "body-noop", "fenfa-body-noop.yaml", 1,
                                      proxy_cpus, audit=True, check=False)
            try:
                for size in (1024, 65536):
                    paths = [("/bare/x", "without"), ("/api/x", "body-noop")]
                    if rnd % 2:
                        paths.reverse()
                    for path, label in paths:
                        r = measure(lambda d: PostWrk(params, run.port, path, size,
                                                      duration_s=d), params)
                        body.setdefault((label, size), []).append(r)
                        log(f"round {rnd + 1} POST {size:>5} B {label:<9} {r.rps:>9,.0f} rps  "
                            f"p99 {r.p99_ms:.2f} ms")
            finally:
                run.stop()
                run.cleanup()
    finally:
        upstream.stop()
    busy_after = report.cpu_busy()
    elapsed = time.monotonic() - t0

    cmd = "python3 benches/harness/sidebyside.py " + " ".join(argv)
    md = [f"### {started.strftime('%Y-%m-%d %H:%M')} UTC — `{cmd}`", ""]
    md += [f"- {k}: {v}" for k, v in report.machine_facts(REPO)]
    md += [f"- {report.quiet_note(busy_before, busy_after)}",
           f"- {params.describe()}; 1 proxy thread on CPU {proxy_cpus}, upstream and wrk on "
           f"CPU {load_cpus}; {a.rounds} rounds, alternating order, medians shown; "
           f"measured in {elapsed / 60:.1f} min", "",
           "| full chain, reused token, audit on | RPS (median) | spread | p99 ms |",
           "|---|---:|---:|---:|"]
    rb, pb, sb = fmt(full["base"])
    rt, pt, st = fmt(full["this"])
    md += [f"| base (`--base-bin`) | {rb:,.0f} | {sb} | {pb:.2f} |",
           f"| this commit | {rt:,.0f} | {st} | {pt:.2f} |",
           f"| **ratio this / base** | **{rt / rb:.3f}** | | {pt / pb:.2f} |", "",
           "| POST body | without plugin RPS | with `body-noop` RPS | ratio | p99 without / with ms |",
           "|---|---:|---:|---:|---:|"]
    for size in (1024, 65536):
        r0, p0, _ = fmt(body[("without", size)])
        r1, p1, _ = fmt(body[("body-noop", size)])
        md.append(f"| {size // 1024} KiB | {r0:,.0f} | {r1:,.0f} | **{r1 / r0:.3f}** | "
                  f"{p0:.2f} / {p1:.2f} |")
    print("\n".join(md))
    return 0


class OtlpSink:
    """An OTLP/HTTP traces endpoint on loopback that takes every export (200) and counts it, so
    the tracing variant pays for real exports; its port goes into the configs as OTLP_PORT."""

    def __init__(self) -> None:
        import http.server
        import threading
        sink = self
        self.posts, self.bytes = 0, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                n = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(n)
                sink.posts += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        targets.OTLP_PORT = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def compare_variants(a, ctx: targets.Ctx, params: WrkParams, proxy_cpus, token: str, started,
                     busy_before: float, argv: list[str]) -> int:
    """The full chain against variants of it (`--inspection`, `--cluster`), one variant per
    table row group, each in a process of its own, alternating in every round."""
    query = "/api/bench?q=%E7%A4%BE%E4%BF%9D%E6%9F%A5%E8%AF%A2&page=2&size=20&sort=date"
    inspection = {
        "waf": [
            ("GET with a query", lambda port, d: Wrk(params, port, query, token=token,
                                                     duration_s=d)),
            ("POST 1 KiB JSON", lambda port, d: PostWrk(params, port, "/api/bench", 1024,
                                                        duration_s=d, token=token)),
        ],
        "masking": [
            ("1 KiB JSON response", lambda port, d: Wrk(params, port, targets.PATH,
                                                        token=token, duration_s=d)),
            ("64 KiB JSON response", lambda port, d: Wrk(params, port, "/api/big",
                                                         token=token, duration_s=d)),
        ],
    }
    cluster = {
        "redis-limit": [
            ("GET, 1 limit", lambda port, d: Wrk(params, port, targets.PATH, token=token,
                                                 duration_s=d)),
        ],
        "tracing": [
            ("GET, 10% sampled", lambda port, d: Wrk(params, port, targets.PATH, token=token,
                                                     duration_s=d)),
        ],
    }
    workloads = inspection if a.inspection else cluster
    templates = {"waf": "fenfa-full-waf.yaml", "masking": "fenfa-full-masking.yaml",
                 "redis-limit": "fenfa-full-redis.yaml", "tracing": "fenfa-full-tracing.yaml"}
    names = {"waf": "`waf`", "masking": "`response-masking`",
             "redis-limit": "`rate-limit` `store: redis`",
             "tracing": "`tracing` at `sample_ratio: 0.1`"}
    sink = OtlpSink() if a.cluster else None
    results: dict[tuple[str, str, str], list[Result]] = {}
    t0 = time.monotonic()
    for rnd in range(a.rounds):
        for plugin, loads in workloads.items():
            order = [("without", "fenfa-full.yaml"), ("with", templates[plugin])]
            if rnd % 2:
                order.reverse()
            for label, template in order:
                run = targets.start_fenfa(ctx, f"{plugin}-{label}", template, 1, proxy_cpus,
                                          audit=True)
                try:
                    for name, make in loads:
                        r = measure(lambda d: make(run.port, d), params)
                        results.setdefault((plugin, name, label), []).append(r)
                        log(f"round {rnd + 1} {plugin:<7} {name:<20} {label:<7} "
                            f"{r.rps:>9,.0f} rps  p99 {r.p99_ms:.2f} ms")
                finally:
                    run.stop()
                    run.cleanup()
    busy_after = report.cpu_busy()
    if sink:
        sink.stop()
        log(f"OTLP sink: {sink.posts} exports, {sink.bytes:,} bytes of spans received")
    cmd = "python3 benches/harness/sidebyside.py " + " ".join(argv)
    md = [f"### {started.strftime('%Y-%m-%d %H:%M')} UTC — `{cmd}`", ""]
    md += [f"- {k}: {v}" for k, v in report.machine_facts(REPO)]
    md += [f"- {report.quiet_note(busy_before, busy_after)}",
           f"- {params.describe()}; 1 proxy thread on CPU {proxy_cpus}; full chain = jwt-auth "
           f"ES256 (reused token) + channel check + rate-limit + audit on; {a.rounds} rounds, "
           f"alternating order, medians shown; measured in {(time.monotonic() - t0) / 60:.1f} min",
           "", "| variant | workload | full chain RPS | with it RPS | ratio | cost | "
           "p99 without / with ms |", "|---|---|---:|---:|---:|---:|---:|"]
    for plugin, loads in workloads.items():
        for name, _ in loads:
            r0, p0, _ = fmt(results[(plugin, name, "without")])
            r1, p1, _ = fmt(results[(plugin, name, "with")])
            md.append(f"| {names[plugin]} | {name} | "
                      f"{r0:,.0f} | {r1:,.0f} | **{r1 / r0:.3f}** | {100 * (1 - r1 / r0):.1f}% | "
                      f"{p0:.2f} / {p1:.2f} |")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
