"""Where a reload's memory goes: resident memory of one gateway with N generated routes (the
scale runs' config), idle, sampled every few milliseconds through back-to-back reloads.

Prints: RSS after boot, the peak RSS of the boot (VmHWM right after it), and for each reload the
highest RSS sampled while it ran and the RSS once it was live. The ratio reload peak / steady is
issue 19's target (≤ 2). Memory does not depend on how busy the CPU is, so unlike the
throughput runs this one can run on a loaded machine.

    python3 benches/harness/reload_memory.py --routes 100000 --reloads 5
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import threading
import time
from pathlib import Path

import procs
import scale
import targets
import tokens

REPO = Path(__file__).resolve().parents[2]


def sample_peak(pid: int, stop: threading.Event, out: list[float]) -> None:
    peak = 0
    while not stop.is_set():
        try:
            peak = max(peak, procs.status_kib(pid, "VmRSS"))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            break
        time.sleep(0.003)
    out.append(peak / 1024)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--routes", type=int, default=100000)
    p.add_argument("--reloads", type=int, default=5)
    p.add_argument("--every", type=float, default=0.0,
                   help="seconds from one reload's start to the next (default: back to back)")
    p.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release")
    p.add_argument("--keep-config", type=Path,
                   help="copy the generated config here (for the snapshot-memory bin)")
    a = p.parse_args()
    run_dir = REPO / "target" / "bench" / f"reload-memory-{int(time.time())}"
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = tokens.make_keys(run_dir)
    base = targets.Ctx(repo=REPO, run_dir=run_dir, bin_dir=a.bin_dir, keys=keys)
    upstream = targets.start_upstream(base, None)
    ctx = targets.Ctx(repo=REPO, run_dir=run_dir, bin_dir=a.bin_dir, keys=keys,
                      upstream_port=base.upstream_port)
    targets.probe_audit(ctx)
    values, _ = scale.generate(ctx, a.routes)
    gw = targets.start_fenfa(ctx, f"reload-{a.routes}", "fenfa-scale.yaml", 1, None,
                             audit=True, values=values, ready_timeout=600)
    try:
        assert gw.proc is not None and gw.status_port is not None
        if a.keep_config:
            shutil.copyfile(run_dir / f"reload-{a.routes}-t1.yaml", a.keep_config)
        time.sleep(5.0)
        boot_peak = procs.status_kib(gw.proc.pid, "VmHWM") / 1024
        steady = procs.status_kib(gw.proc.pid, "VmRSS") / 1024
        print(f"{a.routes} routes: RSS after boot {steady:.0f} MiB, boot peak {boot_peak:.0f} MiB")
        peaks, afters = [], []
        for i in range(a.reloads):
            t0 = time.monotonic()
            stop, out = threading.Event(), []
            t = threading.Thread(target=sample_peak, args=(gw.proc.pid, stop, out))
            t.start()
            before = scale.generation(gw.status_port)
            gw.proc.signal(signal.SIGHUP)
            while scale.generation(gw.status_port) <= before:
                time.sleep(0.01)
            time.sleep(0.3)
            stop.set()
            t.join()
            after = procs.status_kib(gw.proc.pid, "VmRSS") / 1024
            peaks.append(out[0])
            afters.append(after)
            time.sleep(max(0.0, a.every - (time.monotonic() - t0)))
            settled = procs.status_kib(gw.proc.pid, "VmRSS") / 1024
            print(f"  reload {i + 1}: peak {out[0]:.0f} MiB, live after {after:.0f} MiB, "
                  f"before the next {settled:.0f} MiB")
        if not peaks:
            return
        peak = statistics.median(peaks)
        settled = statistics.median(afters)
        print(f"median reload peak {peak:.0f} MiB / RSS after reloads {settled:.0f} MiB "
              f"= {peak / settled:.2f}x; / RSS after boot {steady:.0f} MiB = {peak / steady:.2f}x")
    finally:
        gw.stop()
        gw.cleanup()
        upstream.stop()


if __name__ == "__main__":
    main()
