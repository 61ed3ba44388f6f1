"""Sends exactly N keep-alive `GET /api/bench` requests to 127.0.0.1:PORT over C connections,
round-robin, one at a time, and checks each answer is a 200. For instruction counting
(`tap_cost.sh`, `instr_cost.sh`), where a fixed amount of work matters, not its rate.

    python3 fixed_load.py PORT N [C] [TOKEN]

With TOKEN, every request carries `Authorization: Bearer TOKEN`.
"""

import socket
import sys


def read_response(s: socket.socket, buf: bytes) -> bytes:
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed mid-response")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200 "):
        raise SystemExit(f"not a 200: {head[:200]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed mid-body")
        rest += chunk
    return rest[length:]


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    bufs = [b""] * conns
    token = sys.argv[4] if len(sys.argv) > 4 else None
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    req = b"GET /api/bench HTTP/1.1\r\nHost: bench\r\n" + auth + b"\r\n"
    for i in range(n):
        k = i % conns
        socks[k].sendall(req)
        bufs[k] = read_response(socks[k], bufs[k])
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
