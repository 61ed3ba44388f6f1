"""Per-request cost in instructions (valgrind callgrind) of two fenfa-gateway builds side by side:
a regression check that does not depend on how busy the machine is, unlike wall time.

    python3 benches/harness/instr_cost.py BASE_BIN THIS_BIN [--config full|bare]
                                          [--small 2000] [--large 12000]
    # one build, two configs: what a plugin costs per request, and in which functions
    python3 benches/harness/instr_cost.py BIN BIN --config full --this-config full-masking \
                                          [--path /api/bench] [--post-bytes 1024]

Each binary runs the config (`fenfa-full.yaml`: jwt-auth ES256 with one reused token, channel
check, rate-limit, audit on; or `fenfa-bare.yaml`) with 1 proxy thread under callgrind in front of
the benchmark's nginx upstream, serves N_SMALL and then, in a fresh process, N_LARGE keep-alive
requests (fixed_load.py, 4 connections), and is stopped. The per-request figure is
(Ir(N_LARGE) - Ir(N_SMALL)) / (N_LARGE - N_SMALL): start-up and shutdown cancel out.
`--this-config` gives the second binary another config (`full-waf`, `full-masking`, ...;
`full-noaudit` is the full chain with `audit.enabled: false`: `--config full-noaudit
--this-config full` is what the audit record costs, writer thread included);
`callgrind_annotate` on the files it names shows where the difference goes.
`--floor BARE_PINGORA_BIN` also measures `bare-pingora` (benches/src/bin/bare-pingora.rs) the
same way: the framework floor the full chain is compared against (issue 19).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import procs
import targets
import tokens
from sidebyside import write_big_json
from load import HERE

REPO = HERE.parent.parent
CONFIGS = ["full", "bare", "full-waf", "full-masking", "full-noaudit"]


def total_ir(out: Path) -> int:
    text = subprocess.run(["callgrind_annotate", str(out)], capture_output=True,
                          text=True).stdout
    for line in text.splitlines():
        if "PROGRAM TOTALS" in line:
            return int(line.split()[0].replace(",", ""))
    raise RuntimeError(f"no totals in {out}")


def measure(ctx: targets.Ctx, binary: Path, config: str | None, label: str, n: int,
            token: str | None, load_opts: list[str]) -> int:
    """Ir of one process serving `n` requests of `config` (a name in CONFIGS); None runs
    `binary` as bare-pingora."""
    template = None if config is None else f"fenfa-{config.removesuffix('-noaudit')}.yaml"
    port, status = procs.free_port(), procs.free_port()
    out = ctx.run_dir / f"callgrind.{label}.{n}"
    log = open(ctx.run_dir / f"{label}-{n}.log", "w")
    if template is None:
        argv = [str(binary), f"127.0.0.1:{port}", f"127.0.0.1:{ctx.upstream_port}", "1"]
    else:
        data = ctx.run_dir / f"{label}-{n}-data"
        data.mkdir()
        conf = procs.render(ctx.configs / template,
                            targets.fenfa_values(ctx, 1, port, status,
                                                   not config.endswith("-noaudit")),
                            ctx.run_dir / f"{label}-{n}.yaml")
        argv = [str(binary), "--config", str(conf), "--data-dir", str(data)]
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + argv,
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        if template is None:
            _wait_port(port, p)
        else:
            _wait_ready(status, p)
        argv = [sys.executable, str(HERE / "fixed_load.py"), str(port), str(n), "4"]
        if token:
            argv.append(token)
        argv += load_opts
        subprocess.run(argv, check=True)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=120)
    return total_ir(out)


def _wait_port(port: int, p: subprocess.Popen) -> None:
    import socket

    def listening() -> bool:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    _wait_until(listening, p, "bare-pingora")


def _wait_ready(status_port: int, p: subprocess.Popen) -> None:
    _wait_until(lambda: procs.http_get(status_port, "/readyz")[0] == 200, p, "the gateway")


def _wait_until(ready, p: subprocess.Popen, what: str) -> None:
    """Polls `ready()` (an OSError counts as not yet) for up to 120 s while `p` runs."""
    import time
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{what} exited before it was ready")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("base", type=Path)
    ap.add_argument("this", type=Path)
    ap.add_argument("--config", choices=CONFIGS, default="full")
    ap.add_argument("--this-config", choices=CONFIGS,
                    help="config of the second binary (default: --config)")
    ap.add_argument("--path", default="/api/bench")
    ap.add_argument("--post-bytes", type=int)
    ap.add_argument("--fresh", action="store_true",
                    help="a fresh token on every request (minted beforehand), not one reused")
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=12000)
    ap.add_argument("--floor", type=Path, metavar="BARE_PINGORA_BIN",
                    help="also measure bare-pingora, the framework floor")
    a = ap.parse_args(argv)
    run_dir = Path(tempfile.mkdtemp(prefix="instr-cost."))
    keys = tokens.make_keys(run_dir)
    token = keys.mint(sub="u-reused", jti="reused-1") if a.config != "bare" else None
    ctx = targets.Ctx(repo=REPO, run_dir=run_dir, bin_dir=a.this.parent, keys=keys)
    ctx.audit_supported = True
    write_big_json(run_dir / "big.json")  # served at /api/big
    upstream = targets.start_upstream(ctx, None)
    load_opts = ["--path", a.path]
    if a.post_bytes:
        load_opts += ["--post-bytes", str(a.post_bytes)]
    if a.fresh and token:
        tokens.mint_many(keys, a.large, run_dir / "fresh-tokens.txt")
        load_opts += ["--tokens-file", str(run_dir / "fresh-tokens.txt")]
    configs = {"base": a.config, "this": a.this_config or a.config}
    per: dict[str, int] = {}
    try:
        runs = [("base", a.base), ("this", a.this)]
        if a.floor:
            runs.append(("floor", a.floor))
        for label, binary in runs:
            config = configs[label] if label != "floor" else None
            small = measure(ctx, binary, config, label, a.small, token, load_opts)
            large = measure(ctx, binary, config, label, a.large, token, load_opts)
            per[label] = (large - small) // (a.large - a.small)
            print(f"{label}: Ir({a.small})={small:,} Ir({a.large})={large:,} "
                  f"per request={per[label]:,}", flush=True)
    finally:
        upstream.stop()
    print(f"this / base = {per['this'] / per['base']:.3f} "
          f"({per['this'] - per['base']:+,} instructions per request); files in {run_dir}")
    if a.floor:
        for label in ("base", "this"):
            print(f"{label} - floor = {per[label] - per['floor']:+,} instructions per request "
                  f"({per[label] / per['floor']:.3f}x the floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
