#!/usr/bin/python3
"""Time to first SSE chunk, interleaved over several targets (stdlib only).

    sse_ttfb.py <samples> '<json list of {"name","port","path","headers":{}}>'

For each sample and target: new TCP connection to 127.0.0.1:<port>, POST a
streaming chat-completions body, and stop the clock when the first `data:`
line of the body has arrived (headers alone do not count). Prints one JSON
object: {name: {"p50_us", "p90_us", "min_us", "max_us", "n", "errors"}}.
"""
import json
import socket
import statistics
import sys
import time

BODY = json.dumps({"model": "gpt-4o-mini", "stream": True,
                   "messages": [{"role": "user", "content": "Say hello in one word."}]}).encode()


def one(port, path, headers):
    req = ["POST %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port,
           "Content-Type: application/json", "Accept: text/event-stream",
           "Content-Length: %d" % len(BODY), "Connection: close"]
    req += ["%s: %s" % kv for kv in headers.items()]
    data = ("\r\n".join(req) + "\r\n\r\n").encode() + BODY
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        t0 = time.perf_counter()
        s.sendall(data)
        buf = b""
        while True:
            got = s.recv(65536)
            if not got:
                raise RuntimeError("closed before first chunk: %r" % buf[:200])
            buf += got
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                if not buf.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError("status: %r" % buf[:200])
                if b"data:" in buf[end:]:
                    return (time.perf_counter() - t0) * 1e6
    finally:
        s.close()


def main():
    n = int(sys.argv[1])
    targets = json.loads(sys.argv[2])
    res = {t["name"]: [] for t in targets}
    errs = {t["name"]: [] for t in targets}
    for t in targets:  # warm-up, not counted
        try:
            one(t["port"], t["path"], t.get("headers", {}))
        except Exception:
            pass
    for _ in range(n):
        for t in targets:
            try:
                res[t["name"]].append(one(t["port"], t["path"], t.get("headers", {})))
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                errs[t["name"]].append(str(e)[:200])
            time.sleep(0.01)
    out = {}
    for name, xs in res.items():
        xs.sort()
        out[name] = {"n": len(xs), "errors": len(errs[name]), "first_error": errs[name][0] if errs[name] else None}
        if xs:
            out[name].update(p50_us=round(statistics.median(xs), 1),
                             p90_us=round(xs[min(len(xs) - 1, int(0.9 * len(xs)))], 1),
                             min_us=round(xs[0], 1), max_us=round(xs[-1], 1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
