"""What the audit trail costs: Fenfa's full chain with audit on and off, measured side by side.

On a shared or virtualised machine, throughput drifts by more than the 5% this measures: the same
binary, a minute apart, can differ by 30% or more (this harness's own runs show it). Two runs
at different times therefore mostly measure the drift. Here both gateways run *at the same
time*, pinned to the same proxy CPU(s), each loaded by its own wrk with the same parameters. The
machine's drift then hits both alike, and what differs is what each gateway does per request.

Each gateway is started in its own session, so the kernel's autogroup scheduling gives the two
processes equal shares of the CPU whatever their thread counts (the audit writer thread does not
earn the audit gateway extra CPU). With equal shares, the throughput ratio is the inverse ratio of
CPU time per request; the harness reports both, per slice, and their medians:

- throughput cost: `1 - median(rps_on / rps_off)`;
- CPU cost: `1 - median(cpu_off / cpu_on)`, CPU per request being user + system time of all the
  gateway's threads (from /proc) over the requests wrk completed. It counts the encoding on the
  proxy thread and the chaining and writing on the writer thread; not counted is the kernel's
  later writeback of the page cache to disk, which runs in kernel threads.

After the last slice, the audit-on gateway's /metrics must show every measured request written and
none dropped; otherwise the comparison is void (a trail that drops records is cheap) and says so.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import procs
import targets
from load import Result, Wrk, WrkParams

@dataclass
class Slice:
    on: Result
    off: Result
    #: CPU µs per request of each gateway during the slice.
    cpu_on: float
    cpu_off: float
    #: Of `cpu_on`, the part spent in the audit threads (writer, shipper).
    cpu_audit_threads: float

    @property
    def rps_ratio(self) -> float:
        return self.on.rps / self.off.rps if self.off.rps else 0.0

    @property
    def cpu_ratio(self) -> float:
        return self.cpu_off / self.cpu_on if self.cpu_on else 0.0


@dataclass
class AuditCost:
    threads: int
    setup: str
    slices: list[Slice]
    written: int | None
    dropped: int | None
    error: str = ""
    #: Both gateways recorded (`--audit-aa`): the "cost" is the method's bias and noise.
    aa: bool = False

    @property
    def cost_pct(self) -> float | None:
        """Throughput lost with audit on, in percent (median over the slices)."""
        return (1 - statistics.median(s.rps_ratio for s in self.slices)) * 100 \
            if self.slices else None

    @property
    def cpu_cost_pct(self) -> float | None:
        return (1 - statistics.median(s.cpu_ratio for s in self.slices)) * 100 \
            if self.slices else None

    @property
    def complete(self) -> bool:
        """No record was dropped, and at least every measured audit-on request was written
        (warm-ups and checks add more)."""
        measured = sum(s.on.requests for s in self.slices)
        return self.dropped == 0 and (self.written or 0) >= measured


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[-1].split()
    return int(fields[11]) + int(fields[12])


def _thread_ticks(pid: int, prefix: str) -> int:
    """utime + stime of the threads of `pid` whose name starts with `prefix`."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name.startswith(prefix):
            fields = stat.rsplit(")", 1)[-1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def _metric(port: int, name: str) -> int | None:
    status, body = procs.http_get(port, "/metrics")
    if status != 200:
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


def _trail_counts(status_port: int) -> tuple[int | None, int | None]:
    """(written, dropped) once the writer has caught up (queue empty, at most 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _metric(status_port, "fenfa_audit_queue_depth"):
        time.sleep(0.05)
    return (_metric(status_port, "fenfa_audit_records_written_total"),
            _metric(status_port, "fenfa_audit_records_dropped_total"))


def measure(ctx: targets.Ctx, threads: int, proxy_cpus: str | None, params: WrkParams,
            token: str, slices: int, slice_s: float, log, aa: bool = False) -> AuditCost:
    """`aa`: the A/A check — the "off" gateway records too, so any cost shown is the method's
    own bias and noise."""
    setup = (f"both gateways at once, each loaded by its own wrk -t{params.threads} "
             f"-c{params.connections}: {slices} slices of {slice_s:g} s after a "
             f"{params.warmup_s:g} s warm-up; "
             + (f"both on CPU {proxy_cpus}, each in its own session (equal CPU shares)"
                if proxy_cpus else "nothing pinned, each in its own session")
             + ("; **A/A check: audit on in both**" if aa else ""))
    log(f"\n== audit cost, {threads} proxy thread(s): {setup}")
    tick = os.sysconf("SC_CLK_TCK")
    on = off = None
    done: list[Slice] = []
    try:
        off = targets.start_fenfa(ctx, "audit-off", "fenfa-full.yaml", threads, proxy_cpus,
                                  audit=aa, own_session=True)
        on = targets.start_fenfa(ctx, "audit-on", "fenfa-full.yaml", threads, proxy_cpus,
                                 audit=True, own_session=True)
        for gw in (off, on):
            targets.check_serves(gw.port, token)

        def both(duration: float) -> Slice:
            before = [_cpu_ticks(gw.proc.pid) for gw in (on, off)]
            audit_before = _thread_ticks(on.proc.pid, "fenfa-audit")
            runs = [Wrk(params, gw.port, targets.PATH, token=token, duration_s=duration).start()
                    for gw in (on, off)]
            r_on, r_off = (w.wait() for w in runs)
            used = [(_cpu_ticks(gw.proc.pid) - b) / tick * 1e6 for gw, b in zip((on, off), before)]
            audit = (_thread_ticks(on.proc.pid, "fenfa-audit") - audit_before) / tick * 1e6
            n_on, n_off = max(r_on.requests, 1), max(r_off.requests, 1)
            return Slice(r_on, r_off, used[0] / n_on, used[1] / n_off, audit / n_on)

        both(params.warmup_s)
        for _ in range(slices):
            s = both(slice_s)
            r_on, r_off, cpu_on, cpu_off = s.on, s.off, s.cpu_on, s.cpu_off
            done.append(s)
            dirty = [f"{n}: {r.non_2xx} non-2xx, {r.errors} errors"
                     for n, r in (("on", r_on), ("off", r_off)) if not r.clean]
            log(f"  off {r_off.rps:>8,.0f} rps {cpu_off:6.1f} µs CPU/req | on {r_on.rps:>8,.0f} "
                f"rps {cpu_on:6.1f} µs CPU/req | cost {(1 - s.rps_ratio) * 100:5.1f}% rps, "
                f"{(1 - s.cpu_ratio) * 100:5.1f}% CPU (writer {s.cpu_audit_threads:.1f} µs/record)"
                + (f"  !! {'; '.join(dirty)}" if dirty else ""))
        written, dropped = _trail_counts(on.status_port)
        return AuditCost(threads, setup, done, written, dropped, aa=aa)
    except Exception as e:  # noqa: BLE001 - reported in BENCHMARKS.md
        log(f"  audit cost: failed: {e}")
        return AuditCost(threads, setup, done, None, None, error=str(e), aa=aa)
    finally:
        for gw in (on, off):
            if gw:
                gw.stop()
                gw.cleanup()


def table(c: AuditCost) -> str:
    if c.error:
        return f"**failed**: {c.error.splitlines()[0][:300]}"

    def med(f) -> float:
        return statistics.median(f(s) for s in c.slices)

    rps_costs = sorted((1 - s.rps_ratio) * 100 for s in c.slices)
    cpu_on, cpu_off = med(lambda s: s.cpu_on), med(lambda s: s.cpu_off)
    lines = ([
        "**A/A check**: both gateways record; the row labelled *off* is the second one.", ""]
        if c.aa else []) + [
        "| audit | median RPS (half the CPU each) | median CPU µs per request |",
        "|---|---:|---:|",
        f"| off | {med(lambda s: s.off.rps):,.0f} | {cpu_off:.1f} |",
        f"| on | {med(lambda s: s.on.rps):,.0f} | {cpu_on:.1f} |",
        "",
        f"Audit cost: **{c.cost_pct:.1f}%** of throughput (median of {len(c.slices)} slices; "
        f"slices ranged {rps_costs[0]:.1f}% to {rps_costs[-1]:.1f}%), "
        f"**{c.cpu_cost_pct:.1f}%** of CPU per request, of which the audit writer thread "
        f"{med(lambda s: s.cpu_audit_threads):.1f} µs per record and the proxy thread(s) the rest "
        "(encoding the record, handing it over).",
    ]
    if c.written is not None:
        lines.append(f"Audit-on gateway: {c.written:,} records written, {c.dropped:,} dropped"
                     + ("." if c.complete else " — **the comparison is void: records were "
                        "dropped**."))
    return "\n".join(lines)
