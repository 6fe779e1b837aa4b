#!/usr/bin/python3
"""Sends N requests back to back on one keep-alive connection and checks
every answer (bench/probe.sh: counts per request do not depend on speed).

    hit_client.py N PORT PATH AUTH [stream]

POSTs the bench chat body (with "stream": true when `stream` is given) with
"Authorization: Bearer AUTH". Prints one JSON line: {"ok": n, "bad": n,
"chunks": n} — chunks counts SSE "data:" events read. Exits 1 when any
answer is not a 200.
"""
import http.client
import json
import sys


def main():
    n, port, path, auth = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    stream = len(sys.argv) > 5 and sys.argv[5] == "stream"
    body = {"model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "Say hello in one word."}]}
    if stream:
        body["stream"] = True
    data = json.dumps(body).encode()
    headers = {"Authorization": "Bearer " + auth, "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ok = bad = chunks = 0
    for _ in range(n):
        conn.request("POST", path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status == 200:
            ok += 1
        else:
            bad += 1
        if stream:
            chunks += sum(1 for line in raw.split(b"\n") if line.startswith(b"data:"))
    print(json.dumps({"ok": ok, "bad": bad, "chunks": chunks}))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
