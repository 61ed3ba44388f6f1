"""Scale runs: Fenfa's full chain with 10, 1k, 10k and 100k generated routes.

For each size: time to boot (first compile), resident memory, RPS and p99 with requests spread
over up to 1000 of the routes, the time to compile and swap a new snapshot, and p99 while reloads
happen under the same load.

How a reload is timed: the harness sends SIGHUP (the file is unchanged, which still builds and
swaps a complete new snapshot) and reads two numbers:
- *compile+swap*: from the gateway's own log, the time between `SIGHUP: reloading config` and
  `config is live` for that generation: read + parse + compile + pointer swap;
- *SIGHUP→live*: wall time from the signal until `/status` shows the new generation. This adds
  the watcher's tick (SIGHUP is picked up within 100 ms) and the status poll.
Under load, reloads are triggered back to back (next SIGHUP as soon as the previous snapshot is
live, at most one per `--reload-every` seconds) for the whole measured window, so the window's
p99 is the p99 *while reloading*, not a p99 that one short reload barely touches.
"""

from __future__ import annotations

import json
import random
import re
import signal
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import procs
from load import Result, Wrk, WrkParams
from targets import Ctx, Running, start_fenfa

MAX_SERVICES = 100
MAX_PATHS = 1000
_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s+\w+\s+(.*)$")


@dataclass
class ScaleRow:
    routes: int
    boot_s: float
    rss_idle_mib: float
    rss_load_mib: float
    peak_mib: float
    steady: Result
    compile_ms: float | None
    sighup_live_ms: float
    reloading: Result
    reloads: int


def route_path(i: int) -> tuple[str, str]:
    """Route i's pattern and a request path it matches (the shapes of benches/router.rs)."""
    kind = i % 3
    if kind == 0:
        return f"/svc{i}/items/{{id}}", f"/svc{i}/items/42"
    if kind == 1:
        return f"/svc{i}/static/*", f"/svc{i}/static/css/app.css"
    return f"/svc{i}/exact/path", f"/svc{i}/exact/path"


def generate(ctx: Ctx, n: int) -> tuple[dict, Path]:
    """Template values for `n` routes, and a file of request paths over up to 1000 of them."""
    services = min(n, MAX_SERVICES)
    svc_lines = [
        f'  - {{name: s{s}, publish: {{channels: [wechat, alipay]}}, upstream: {{targets: '
        f'[{{addr: "127.0.0.1:{ctx.upstream_port}"}}], retries: 0}}}}'
        for s in range(services)
    ]
    route_lines = []
    for i in range(n):
        pattern, _ = route_path(i)
        route_lines.append(f'  - {{name: r{i}, service: s{i % services}, '
                           f'paths: ["{pattern}"], methods: [GET]}}')
    rng = random.Random(n)
    picked = rng.sample(range(n), min(n, MAX_PATHS))
    paths_file = ctx.run_dir / f"scale-{n}-paths.txt"
    paths_file.write_text("".join(route_path(i)[1] + "\n" for i in picked))
    values = {"ROUTE_COUNT": n, "SERVICE_COUNT": services,
              "SERVICES": "\n".join(svc_lines), "ROUTES": "\n".join(route_lines)}
    return values, paths_file


def _log_times(log: Path) -> list[tuple[float, str]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stamp, rest = m.groups()
        if "." in stamp:
            head, frac = stamp.split(".")
            stamp = f"{head}.{frac[:6]:0<6}"
        t = datetime.fromisoformat(stamp + "+00:00").timestamp()
        out.append((t, rest))
    return out


def compile_ms_from_log(log: Path, generation: int) -> float | None:
    """`SIGHUP: reloading config` → `config is live … generation=N`, in ms, from the log."""
    start = None
    for t, msg in _log_times(log):
        if "SIGHUP: reloading config" in msg:
            start = t
        elif "config is live" in msg and re.search(rf"\bgeneration={generation}\b", msg):
            return (t - start) * 1000 if start is not None else None
    return None


def generation(status_port: int) -> int:
    _, body = procs.http_get(status_port, "/status", timeout=5)
    return int(json.loads(body)["config"]["generation"])


def reload_once(gw: Running, poll_s: float, timeout_s: float = 120.0) -> tuple[int, float]:
    """SIGHUP, then wait for the next generation on /status. Returns it and the wall ms."""
    assert gw.proc is not None and gw.status_port is not None
    before = generation(gw.status_port)
    t0 = time.monotonic()
    gw.proc.signal(signal.SIGHUP)
    deadline = t0 + timeout_s
    while time.monotonic() < deadline:
        g = generation(gw.status_port)
        if g > before:
            return g, (time.monotonic() - t0) * 1000
        time.sleep(poll_s)
    raise RuntimeError(f"no new generation {timeout_s}s after SIGHUP:\n{gw.proc.log_tail()}")


def run_one(ctx: Ctx, n: int, threads: int, cpus: str | None, params: WrkParams, token: str,
            idle_reloads: int, reload_every_s: float, log) -> ScaleRow:
    values, paths_file = generate(ctx, n)
    gw = start_fenfa(ctx, f"scale-{n}", "fenfa-scale.yaml", threads, cpus, audit=True,
                     values=values, ready_timeout=600)
    try:
        assert gw.proc is not None
        boot_s = time.monotonic() - gw.proc.started
        first = paths_file.read_text().splitlines()[0]
        status, body = procs.http_get(gw.port, first, {"Authorization": f"Bearer {token}"})
        if status != 200:
            raise RuntimeError(f"GET {first}: {status} {body[:200]!r}")
        rss_idle = procs.status_kib(gw.proc.pid, "VmRSS") / 1024
        Wrk(params, gw.port, "/", token=token, paths_file=paths_file,
            duration_s=params.warmup_s).run()
        steady = Wrk(params, gw.port, "/", token=token, paths_file=paths_file).run()
        rss_load = procs.status_kib(gw.proc.pid, "VmRSS") / 1024
        log(f"    {n} routes: boot {boot_s:.2f}s, {steady.rps:,.0f} rps, p99 "
            f"{steady.p99_ms:.2f} ms, RSS {rss_load:.0f} MiB")

        compile_times, wall_times = [], []
        for _ in range(idle_reloads):
            g, wall = reload_once(gw, poll_s=0.002)
            wall_times.append(wall)
            c = compile_ms_from_log(gw.proc.log, g)
            if c is not None:
                compile_times.append(c)
        compile_ms = statistics.median(compile_times) if compile_times else None
        sighup_live = statistics.median(wall_times)
        shown = "?" if compile_ms is None else f"{compile_ms:.1f}"
        log(f"    {n} routes: compile+swap {shown} ms, SIGHUP→live {sighup_live:.0f} ms "
            f"(median of {idle_reloads})")

        wrk = Wrk(params, gw.port, "/", token=token, paths_file=paths_file).start()
        reloads = 0
        end = time.monotonic() + params.duration_s - 0.2
        time.sleep(min(0.3, params.duration_s / 10))
        while wrk.running() and time.monotonic() < end:
            t0 = time.monotonic()
            reload_once(gw, poll_s=0.02)
            reloads += 1
            time.sleep(max(0.0, reload_every_s - (time.monotonic() - t0)))
        reloading = wrk.wait()
        peak = procs.status_kib(gw.proc.pid, "VmHWM") / 1024
        log(f"    {n} routes: p99 {reloading.p99_ms:.2f} ms while reloading ({reloads} reloads)")
        return ScaleRow(n, boot_s, rss_idle, rss_load, peak, steady, compile_ms, sighup_live,
                        reloading, reloads)
    finally:
        gw.stop()
        gw.cleanup()
