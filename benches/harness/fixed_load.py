"""Sends exactly N keep-alive requests to 127.0.0.1:PORT over C connections, round-robin, one at a
time, and checks each answer is a 200 (reading Content-Length or chunked bodies). For instruction
counting (`tap_cost.sh`, `instr_cost.py`), where a fixed amount of work matters, not its rate.

    python3 fixed_load.py PORT N [C] [TOKEN] [--path /api/bench] [--post-bytes 1024]

With TOKEN, every request carries `Authorization: Bearer TOKEN`; with `--tokens-file F` (one token
a line), request i carries line i (modulo their number): a fresh token on every request. With `--post-bytes`, every
request is a POST of a JSON body of exactly that many bytes (the body `post.lua` sends).
"""

import argparse
import http.client


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("conns", type=int, nargs="?", default=1)
    ap.add_argument("token", nargs="?")
    ap.add_argument("--path", default="/api/bench")
    ap.add_argument("--post-bytes", type=int)
    ap.add_argument("--tokens-file")
    a = ap.parse_args()
    fresh = open(a.tokens_file).read().split() if a.tokens_file else None
    headers = {"Host": "bench"}
    if a.token:
        headers["Authorization"] = f"Bearer {a.token}"
    method, body = "GET", None
    if a.post_bytes:
        method = "POST"
        body = b'{"d":"' + b"x" * (a.post_bytes - 8) + b'"}'
        headers["Content-Type"] = "application/json"
    conns = [http.client.HTTPConnection("127.0.0.1", a.port) for _ in range(a.conns)]
    closes = 0
    for i in range(a.n):
        c = conns[i % a.conns]
        if fresh:
            headers["Authorization"] = f"Bearer {fresh[i % len(fresh)]}"
        c.request(method, a.path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise SystemExit(f"not a 200: {r.status} {data[:200]!r}")
        if r.will_close:
            # http.client reconnects on the next request. The gateway passes on an upstream's
            # `Connection: close` (nginx's `return` sometimes closes when it answers a POST
            # before reading its body); rare enough not to matter to a per-request count.
            closes += 1
    for c in conns:
        c.close()
    if closes:
        print(f"fixed_load: {closes} of {a.n} answers closed their connection")
    if closes * 100 > a.n:
        raise SystemExit("more than 1% of the answers closed their connection")


if __name__ == "__main__":
    main()
