"""The load generator: wrk, with the same parameters for every target.

Two request shapes:
- *reused token*: a static request; the token goes in with `-H`, and `report.lua` only adds the
  summary line. This is what a real client does (and the cheapest thing wrk can send).
- *rotating*: `rotate.lua` builds each request, taking the next token (fresh-token workload)
  and/or the next path (scale runs) from a file.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from procs import LOOPBACK

HERE = Path(__file__).resolve().parent


@dataclass
class WrkParams:
    threads: int
    connections: int
    duration_s: float
    warmup_s: float
    cpus: str | None  # taskset list for wrk, or None

    def describe(self) -> str:
        pin = f", pinned to CPU {self.cpus}" if self.cpus else ""
        return (f"wrk -t{self.threads} -c{self.connections} -d{self.duration_s:g}s "
                f"(after a {self.warmup_s:g}s warm-up{pin})")


@dataclass
class Result:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors + timeouts
    non_2xx: int

    @property
    def clean(self) -> bool:
        return self.errors == 0 and self.non_2xx == 0 and self.requests > 0


class Wrk:
    """One wrk invocation; `start()` runs it in the background, `wait()` collects the result."""

    def __init__(self, params: WrkParams, port: int, path: str, *, token: str | None = None,
                 tokens_file: Path | None = None, paths_file: Path | None = None,
                 duration_s: float | None = None):
        d = params.duration_s if duration_s is None else duration_s
        argv = ["wrk", f"-t{params.threads}", f"-c{params.connections}", f"-d{d:g}s",
                "--timeout", "10s"]
        if tokens_file or paths_file:
            argv += ["-s", str(HERE / "rotate.lua"), f"http://{LOOPBACK}:{port}{path}", "--",
                     f"threads={params.threads}"]
            if tokens_file:
                argv.append(f"tokens={tokens_file}")
            elif token:
                argv.append(f"token={token}")
            if paths_file:
                argv.append(f"paths={paths_file}")
        else:
            if token:
                argv += ["-H", f"Authorization: Bearer {token}"]
            argv += ["-s", str(HERE / "report.lua"), f"http://{LOOPBACK}:{port}{path}"]
        if params.cpus:
            argv = ["taskset", "-c", params.cpus] + argv
        self.argv = argv
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Wrk":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, stdin=subprocess.DEVNULL)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self) -> Result:
        assert self.proc is not None
        out, err = self.proc.communicate()
        line = next((l for l in out.splitlines() if l.startswith("WRKJSON ")), None)
        if self.proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({self.proc.returncode}): {' '.join(self.argv)}\n"
                               f"{out}\n{err}")
        j = json.loads(line[len("WRKJSON "):])
        secs = j["duration_us"] / 1e6
        return Result(
            requests=j["requests"],
            duration_s=secs,
            rps=j["requests"] / secs if secs > 0 else 0.0,
            p50_ms=j["p50_us"] / 1000,
            p90_ms=j["p90_us"] / 1000,
            p99_ms=j["p99_us"] / 1000,
            max_ms=j["max_us"] / 1000,
            errors=j["connect"] + j["read"] + j["write"] + j["timeout"],
            non_2xx=j["status"],
        )

    def run(self) -> Result:
        return self.start().wait()
