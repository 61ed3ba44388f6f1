"""The targets of the comparison: how each is configured, started, checked and stopped.

Every target listens on a fresh loopback port and forwards to the same upstream. Configs come from
`benches/configs/` and are rendered into the run directory, so what ran can be read afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import procs
from procs import Proc
from tokens import AUDIENCE, ISSUER, Keys

#: The upstream's answer: a JSON object of exactly 1024 bytes.
_SHELL = '{"code":0,"message":"ok","data":{"id":"bench","items":"%s"}}'
BODY = _SHELL % ("x" * (1024 - len(_SHELL % "")))
assert len(BODY) == 1024

#: Requests go to this path on every target (Fenfa's route is `/api/*`).
PATH = "/api/bench"
#: The port of the OTLP sink, when one runs (sidebyside.py --cluster sets it).
OTLP_PORT = 0
#: Per second, per app: far above anything one machine sends, so nothing is denied.
RATE_LIMIT = 1_000_000


@dataclass
class Ctx:
    """What every target needs to know about the run."""
    repo: Path
    run_dir: Path
    bin_dir: Path
    keys: Keys
    upstream_port: int = 0
    #: True/False once probed: does this fenfa-gateway know the `audit:` section?
    audit_supported: bool | None = None
    audit_probe_error: str = ""

    @property
    def configs(self) -> Path:
        return self.repo / "benches" / "configs"

    @property
    def fenfa(self) -> Path:
        return self.bin_dir / "fenfa-gateway"


@dataclass
class Running:
    name: str
    port: int
    proc: Proc | None = None
    status_port: int | None = None
    #: Files or directories whose size says how much was logged/audited; removed after the run.
    artefacts: list[Path] = field(default_factory=list)
    #: Measured by the harness after the run, e.g. "audit 12.3 MiB".
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def artefact_bytes(self) -> int:
        total = 0
        for a in self.artefacts:
            if a.is_file():
                total += a.stat().st_size
            elif a.is_dir():
                total += sum(p.stat().st_size for p in a.rglob("*") if p.is_file())
        return total

    def cleanup(self) -> None:
        for a in self.artefacts:
            if a.is_dir():
                shutil.rmtree(a, ignore_errors=True)
            elif a.exists():
                a.unlink()


@dataclass
class Target:
    name: str
    #: One line: what exactly runs (goes into BENCHMARKS.md).
    what: str
    #: Verifies tokens: gets the auth checks (401/403 cases) before it is measured.
    jwt: bool
    start: Callable[[Ctx, int, str | None], Running]
    #: Also measured with a fresh token on every request.
    fresh: bool = False
    #: Only meaningful when the gateway has an audit switch.
    needs_audit: bool = False


# --- upstream --------------------------------------------------------------------------------

def start_upstream(ctx: Ctx, cpus: str | None) -> Proc:
    ctx.upstream_port = procs.free_port()
    (ctx.run_dir / "nginx-tmp").mkdir(exist_ok=True)
    conf = procs.render(ctx.configs / "upstream-nginx.conf",
                        {"RUN_DIR": ctx.run_dir, "UPSTREAM_PORT": ctx.upstream_port,
                         "BODY": BODY},
                        ctx.run_dir / "upstream-nginx.conf")
    p = Proc("upstream nginx", ["nginx", "-e", "stderr", "-p", str(ctx.run_dir), "-c", str(conf)],
             ctx.run_dir / "upstream-nginx.log", cpus)
    procs.wait_http(p, ctx.upstream_port, "/", timeout=10)
    status, body = procs.http_get(ctx.upstream_port, PATH)
    if status != 200 or body != BODY.encode():
        raise RuntimeError(f"upstream answered {status} with {len(body)} bytes, not the 1 KiB body")
    return p


def _upstream_direct(ctx: Ctx, threads: int, cpus: str | None) -> Running:
    return Running("upstream", ctx.upstream_port)


# --- nginx -----------------------------------------------------------------------------------

def _nginx(ctx: Ctx, threads: int, cpus: str | None) -> Running:
    port = procs.free_port()
    (ctx.run_dir / "nginx-tmp").mkdir(exist_ok=True)
    conf = procs.render(ctx.configs / "nginx.conf",
                        {"RUN_DIR": ctx.run_dir, "THREADS": threads, "PROXY_PORT": port,
                         "UPSTREAM_PORT": ctx.upstream_port},
                        ctx.run_dir / f"nginx-t{threads}.conf")
    p = Proc("nginx", ["nginx", "-e", "stderr", "-p", str(ctx.run_dir), "-c", str(conf)],
             ctx.run_dir / f"nginx-t{threads}.log", cpus)
    procs.wait_http(p, port, PATH, timeout=10)
    return Running("nginx", port, p)


# --- bare pingora ----------------------------------------------------------------------------

def _start_bare(ctx: Ctx, name: str, threads: int, cpus: str | None,
                *extra: str) -> tuple[int, Proc]:
    """Starts `bare-pingora` with `extra` arguments after its three, and waits until it answers."""
    port = procs.free_port()
    p = Proc(name,
             [str(ctx.bin_dir / "bare-pingora"), f"127.0.0.1:{port}",
              f"127.0.0.1:{ctx.upstream_port}", str(threads), *extra],
             ctx.run_dir / f"{name}-t{threads}.log", cpus)
    procs.wait_http(p, port, PATH, timeout=20)
    return port, p


def _bare_pingora(ctx: Ctx, threads: int, cpus: str | None) -> Running:
    port, p = _start_bare(ctx, "bare-pingora", threads, cpus)
    return Running("bare-pingora", port, p)


def _bare_pingora_es256(ctx: Ctx, threads: int, cpus: str | None) -> Running:
    port, p = _start_bare(ctx, "bare-pingora-es256", threads, cpus,
                          str(ctx.run_dir / "jwks.json"))
    # It must really check: a floor that let a forged signature through would flatter itself.
    for what, headers in [("no token", {}),
                          ("forged signature", {"Authorization": f"Bearer {forged(ctx.keys)}"})]:
        status, _ = procs.http_get(port, PATH, headers)
        if status != 401:
            p.stop()
            raise RuntimeError(f"bare-pingora-es256 answered {status} to {what}, not 401")
    return Running("bare-pingora-es256", port, p)


# --- HAProxy ---------------------------------------------------------------------------------

def _haproxy(ctx: Ctx, threads: int, cpus: str | None) -> Running:
    port = procs.free_port()
    conf = procs.render(ctx.configs / "haproxy.cfg",
                        {"THREADS": threads, "PROXY_PORT": port,
                         "UPSTREAM_PORT": ctx.upstream_port, "ISSUER": ISSUER,
                         "AUDIENCE": AUDIENCE, "PUBLIC_KEY_PEM": ctx.keys.public_pem,
                         "RATE_LIMIT": RATE_LIMIT},
                        ctx.run_dir / f"haproxy-t{threads}.cfg")
    check = subprocess.run(["haproxy", "-c", "-f", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy -c rejected {conf}:\n{check.stdout}{check.stderr}")
    access_log = ctx.run_dir / f"haproxy-t{threads}-access.log"
    p = Proc("haproxy", ["haproxy", "-db", "-f", str(conf)],
             ctx.run_dir / f"haproxy-t{threads}.log", cpus, stdout=access_log)
    procs.wait_http(p, port, PATH, timeout=10)
    return Running("haproxy", port, p, artefacts=[access_log])


# --- Fenfa -----------------------------------------------------------------------------------

def audit_block(enabled: bool | None) -> str:
    return "" if enabled is None else f"audit:\n  enabled: {'true' if enabled else 'false'}\n"


def fenfa_values(ctx: Ctx, threads: int, port: int, status_port: int,
                 audit: bool | None) -> dict:
    return {"THREADS": threads, "PROXY_PORT": port, "STATUS_PORT": status_port,
            "UPSTREAM_PORT": ctx.upstream_port, "ISSUER": ISSUER, "AUDIENCE": AUDIENCE,
            "JWK": json.dumps(ctx.keys.jwk), "RATE_LIMIT": RATE_LIMIT,
            "AUDIT": audit_block(audit if ctx.audit_supported else None),
            # fenfa-full-redis.yaml only: the machine's Redis, and a key prefix of this run's own.
            "REDIS_URL": os.environ.get("FENFA_BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
            "REDIS_PREFIX": f"fenfa:bench:{os.getpid()}",
            # fenfa-full-tracing.yaml only: the OTLP sink sidebyside.py --cluster runs.
            "OTLP_PORT": OTLP_PORT}


def probe_audit(ctx: Ctx) -> None:
    """Does this gateway binary know the `audit:` section? (It is being added; the harness runs
    either way and says which.)"""
    probe_dir = ctx.run_dir / "audit-probe"
    probe_dir.mkdir(exist_ok=True)
    ctx.audit_supported = True
    conf = procs.render(ctx.configs / "fenfa-bare.yaml",
                        fenfa_values(ctx, 1, 1, 2, False), probe_dir / "probe.yaml")
    r = subprocess.run([str(ctx.fenfa), "check", "--config", str(conf), "--data-dir",
                        str(probe_dir)], capture_output=True, text=True)
    if r.returncode == 0:
        return
    ctx.audit_supported = False
    said = (r.stderr or r.stdout).strip()
    said = said.splitlines()[-1] if said else f"exit {r.returncode}"
    # "fenfa-gateway: <file>: <field path>: <message>": keep from the field path on.
    ctx.audit_probe_error = said.split(f"{conf}: ", 1)[-1]
    if "audit" not in ctx.audit_probe_error:
        raise RuntimeError(f"fenfa-gateway check rejected the bench config: {said}")


def start_fenfa(ctx: Ctx, name: str, template: str, threads: int, cpus: str | None,
                audit: bool | None, values: dict | None = None,
                ready_timeout: float = 30.0, own_session: bool = False,
                check: bool = True) -> Running:
    port, status_port = procs.free_port(), procs.free_port()
    data_dir = ctx.run_dir / f"{name}-t{threads}-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir()
    v = fenfa_values(ctx, threads, port, status_port, audit)
    v.update(values or {})
    conf = procs.render(ctx.configs / template, v, ctx.run_dir / f"{name}-t{threads}.yaml")
    if check:
        r = subprocess.run([str(ctx.fenfa), "check", "--config", str(conf), "--data-dir",
                            str(data_dir)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"fenfa-gateway check rejected {conf}: {r.stderr.strip()}")
    p = Proc(name, [str(ctx.fenfa), "--config", str(conf), "--data-dir", str(data_dir)],
             ctx.run_dir / f"{name}-t{threads}.log", cpus, own_session=own_session)
    procs.wait_http(p, status_port, "/readyz", timeout=ready_timeout, ok=lambda s: s == 200)
    return Running(name, port, p, status_port=status_port, artefacts=[data_dir])


def _fenfa_bare(ctx: Ctx, threads: int, cpus: str | None) -> Running:
    return start_fenfa(ctx, "fenfa-bare", "fenfa-bare.yaml", threads, cpus, audit=False)


def _fenfa_full(ctx: Ctx, threads: int, cpus: str | None) -> Running:
    return start_fenfa(ctx, "fenfa-full", "fenfa-full.yaml", threads, cpus, audit=True)


def _fenfa_full_noaudit(ctx: Ctx, threads: int, cpus: str | None) -> Running:
    return start_fenfa(ctx, "fenfa-full-noaudit", "fenfa-full.yaml", threads, cpus,
                       audit=False)


TARGETS: list[Target] = [
    Target("upstream", "the upstream itself (nginx `return 200`, 1 KiB JSON): the ceiling of "
           "this machine and load generator", False, _upstream_direct),
    Target("nginx", "nginx plain reverse proxy, `worker_processes` = threads, keepalive 128 to "
           "the upstream, no access log (configs/nginx.conf)", False, _nginx),
    Target("bare-pingora", "`bare-pingora`: a pingora ProxyHttp that forwards everything to "
           "the upstream, no routing/plugins/metrics (src/bin/bare-pingora.rs)", False,
           _bare_pingora),
    Target("bare-pingora-es256", "`bare-pingora JWKS_FILE`: the same, plus one ES256 "
           "signature check per request (ring, as Fenfa; no claims, no cache): the floor of a "
           "fresh-token request", False, _bare_pingora_es256, fresh=True),
    Target("fenfa-bare", "Fenfa, one route, no plugins, audit off, metrics on "
           "(configs/fenfa-bare.yaml)", False, _fenfa_bare),
    Target("fenfa-full-noaudit", "Fenfa full chain as below with `audit.enabled: false`",
           True, _fenfa_full_noaudit, needs_audit=True),
    Target("fenfa-full", "Fenfa full chain: jwt-auth ES256 + channel check + rate-limit by app "
           "+ audit + metrics (configs/fenfa-full.yaml)", True, _fenfa_full, fresh=True),
    Target("haproxy", "HAProxy 2.6 doing the same job: jwt_verify ES256 + iss/aud/exp + "
           "channel + stick-table rate by app + identity headers + a log line per request to a "
           "file (configs/haproxy.cfg)", True, _haproxy, fresh=True),
]


# --- checks ----------------------------------------------------------------------------------

def check_serves(port: int, token: str) -> None:
    status, body = procs.http_get(port, PATH, {"Authorization": f"Bearer {token}"})
    if status != 200 or len(body) != len(BODY):
        raise RuntimeError(f"GET {PATH} with a good token: {status}, {len(body)} bytes "
                           f"(expected 200 and the {len(BODY)}-byte upstream body): {body[:200]!r}")


def forged(keys: Keys) -> str:
    """A good token with one character of its signature changed."""
    head, payload, sig = keys.mint(sub="check", jti="check-good").split(".")
    mid = len(sig) // 2
    return f"{head}.{payload}.{sig[:mid]}{'A' if sig[mid] != 'A' else 'B'}{sig[mid + 1:]}"


def check_enforces(port: int, keys: Keys) -> None:
    """Proves the chain is really on: no token, an expired one, a forged one → 401; a token
    from a channel the service is not published on → 403."""
    cases = [
        ("no token", {}, 401),
        ("expired token", {"Authorization": "Bearer " + keys.mint(
            sub="check", jti="check-exp", exp=1_000_000_000)}, 401),
        ("forged signature", {"Authorization": f"Bearer {forged(keys)}"}, 401),
        ("unpublished channel (baidu)", {"Authorization": "Bearer " + keys.mint(
            sub="check", chn="baidu", jti="check-chn")}, 403),
    ]
    for what, headers, want in cases:
        status, body = procs.http_get(port, PATH, headers)
        if status != want:
            raise RuntimeError(f"{what}: got {status}, expected {want}: {body[:200]!r}")
