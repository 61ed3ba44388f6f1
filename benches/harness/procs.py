"""Starting, probing and stopping the processes of a run, all on 127.0.0.1.

Every process is started under `taskset` when the run pins CPUs (taskset execs the program, so
the pid we hold is the program's). Each process writes its output to a log file in the run
directory. Only processes started here are ever signalled, by their pid.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


class Proc:
    """A process this harness started."""

    def __init__(self, name: str, argv: list[str], log: Path, cpus: str | None,
                 stdout: Path | None = None, cwd: Path | None = None,
                 own_session: bool = False):
        """`own_session`: start it in a new session, hence its own scheduler autogroup, so that
        it gets an equal share of a contended CPU whatever its thread count."""
        self.name = name
        self.log = log
        self.started = time.monotonic()
        self.started_wall = time.time()
        prefix = ["taskset", "-c", cpus] if cpus else []
        err = log.open("ab")
        out = stdout.open("ab") if stdout else err
        self.popen = subprocess.Popen(prefix + argv, stdout=out, stderr=err,
                                      stdin=subprocess.DEVNULL, cwd=cwd,
                                      start_new_session=own_session)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def http_get(port: int, path: str = "/", headers: dict | None = None,
             timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http(proc: Proc, port: int, path: str = "/", timeout: float = 60.0,
              ok=lambda status: True) -> float:
    """Waits until `GET path` on `port` answers with a status `ok` accepts; returns the seconds
    since the process started. Raises if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n"
                               f"{proc.log_tail()}")
        try:
            status, _ = http_get(port, path, timeout=1.0)
            if ok(status):
                return time.monotonic() - proc.started
            last = f"status {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} not ready on port {port} after {timeout}s ({last}):\n"
                       f"{proc.log_tail()}")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process and its children (nginx workers), in KiB."""
    return status_kib(pid, "VmRSS") + sum(status_kib(c, "VmRSS") for c in _children(pid))


def render(template: Path, values: dict, dest: Path) -> Path:
    """Fills `{{NAME}}` placeholders; an unknown or leftover placeholder is an error."""
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    if "{{" in text:
        start = text.index("{{")
        raise ValueError(f"{template}: unfilled placeholder {text[start:text.index('}}', start) + 2]}")
    dest.write_text(text)
    return dest
