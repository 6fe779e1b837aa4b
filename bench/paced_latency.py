#!/usr/bin/python3
"""Latency of sparse traffic (stdlib only): one keep-alive connection per
target, one request at a time with a pause between requests, targets
interleaved. wrk -c1 sends back to back, which keeps the proxy's code and
data hot in the CPU caches; a gateway usually sees sparser traffic, and a
larger per-request footprint costs more when it has gone cold.

    paced_latency.py <samples> <gap seconds> '<json list of {"name","port","path","headers":{}}>'

Prints {name: {"p50_us", "p90_us", "p99_us", "n", "errors"}}; the clock runs
from sending the request to having the whole response.
"""
import json
import socket
import statistics
import sys
import time

BODY = json.dumps({"model": "gpt-4o-mini",
                   "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                {"role": "user", "content": "Say hello in one word."}]}).encode()


class Conn:
    def __init__(self, t):
        self.t = t
        self.s = None
        hdr = ["POST %s HTTP/1.1" % t["path"], "Host: 127.0.0.1:%d" % t["port"],
               "Content-Type: application/json", "Content-Length: %d" % len(BODY)]
        hdr += ["%s: %s" % kv for kv in t.get("headers", {}).items()]
        self.req = ("\r\n".join(hdr) + "\r\n\r\n").encode() + BODY

    def one(self):
        if self.s is None:
            self.s = socket.create_connection(("127.0.0.1", self.t["port"]), timeout=5)
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        self.s.sendall(self.req)
        buf = b""
        while True:
            got = self.s.recv(65536)
            if not got:
                self.s = None
                raise RuntimeError("connection closed")
            buf += got
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = buf[:end].decode("latin-1").lower()
            if not head.startswith("http/1.1 200"):
                self.s.close()
                self.s = None
                raise RuntimeError(head.split("\r\n")[0])
            n = None
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    n = int(line.split(":", 1)[1])
            if n is None:  # chunked: good enough for these small bodies
                if buf.endswith(b"0\r\n\r\n"):
                    break
            elif len(buf) - end - 4 >= n:
                break
        return (time.perf_counter() - t0) * 1e6


def main():
    n, gap = int(sys.argv[1]), float(sys.argv[2])
    conns = [Conn(t) for t in json.loads(sys.argv[3])]
    res = {c.t["name"]: [] for c in conns}
    errs = {c.t["name"]: 0 for c in conns}
    for c in conns:  # warm-up
        for _ in range(5):
            try:
                c.one()
            except Exception:  # noqa: BLE001
                pass
    for _ in range(n):
        for c in conns:
            try:
                res[c.t["name"]].append(c.one())
            except Exception:  # noqa: BLE001 - counted
                errs[c.t["name"]] += 1
            time.sleep(gap)
    out = {}
    for name, xs in res.items():
        xs.sort()
        out[name] = {"n": len(xs), "errors": errs[name]}
        if xs:
            out[name].update(p50_us=round(statistics.median(xs), 1),
                             p90_us=round(xs[min(len(xs) - 1, int(0.9 * len(xs)))], 1),
                             p99_us=round(xs[min(len(xs) - 1, int(0.99 * len(xs)))], 1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
