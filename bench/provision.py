#!/usr/bin/python3
"""Provisioning for `make bench` (standard library + redis-cli only).

    provision.py --admin http://127.0.0.1:PORT --token-file F --redis-port P
                 --projects 2000 --keys 80000 --out DIR

1. Through the admin API of a running gateway: project `bench` (tier starter)
   with an OpenAI key and one gateway key (-> DIR/hot.key), and `--projects`
   projects `cold00000`... each with its own OpenAI key record (encrypted by
   the module, so every record decrypts only for its own project: AAD binds
   the project id).
2. Directly in Redis (SPEC §6 layout, via `redis-cli --pipe`): `--keys`
   gateway keys `byok_bench...`, spread round-robin over the cold projects
   (byok:apikey:<sha256 hex> -> {project, id, label, created_at, revoked}).
   The plaintext keys go to DIR/cold.keys in a shuffled order, one a line,
   for wrk's rotating mode. Each is a distinct cache entry in the gateway
   (the cache is keyed by gateway key), holding a real one-record snapshot.
"""
import argparse
import hashlib
import http.client
import json
import os
import random
import secrets
import subprocess
import sys
import time
import urllib.parse

FAKE_PROVIDER_KEY = "sk-bench-" + "0" * 40  # goes only to the local fake upstream


class Admin:
    def __init__(self, base, token):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.prefix = u.hostname, u.port, u.path.rstrip("/")
        self.token = token
        self.conn = None

    def call(self, method, path, body=None, ok=(200, 201)):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"}
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.conn.request(method, self.prefix + path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)
        if resp.status not in ok:
            sys.exit("provision: %s %s -> %d %s" % (method, path, resp.status, raw[:300].decode(errors="replace")))
        return json.loads(raw) if raw else {}


def resp_cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--admin", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--projects", type=int, default=2000)
    ap.add_argument("--keys", type=int, default=80000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    token = open(a.token_file).read().split()[0]
    adm = Admin(a.admin, token)
    t0 = time.time()

    adm.call("POST", "/projects", {"id": "bench", "name": "bench hot", "tier": "starter"})
    adm.call("PUT", "/projects/bench/keys/openai", {"key": FAKE_PROVIDER_KEY})
    hot = adm.call("POST", "/projects/bench/api-keys", {"label": "bench"})["key"]
    with open(os.path.join(a.out, "hot.key"), "w") as f:
        f.write(hot + "\n")

    pids = ["cold%05d" % i for i in range(a.projects)]
    for pid in pids:
        adm.call("POST", "/projects", {"id": pid, "name": "bench " + pid, "tier": "starter"})
        adm.call("PUT", "/projects/%s/keys/openai" % pid, {"key": FAKE_PROVIDER_KEY})
    t1 = time.time()

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    keys, pipe = [], []
    for i in range(a.keys):
        key = "byok_bench%07d%s" % (i, secrets.token_hex(12))
        sha = hashlib.sha256(key.encode()).hexdigest()
        pipe.append(resp_cmd("HSET", "byok:apikey:" + sha, "project", pids[i % len(pids)],
                             "id", "g%07d" % i, "label", "bench", "created_at", now, "revoked", "0"))
        keys.append(key)
    r = subprocess.run(["redis-cli", "-p", str(a.redis_port), "--pipe"], input=b"".join(pipe),
                       capture_output=True, timeout=120)
    if r.returncode != 0 or b"errors: 0" not in r.stdout:
        sys.exit("provision: redis-cli --pipe failed: %s %s" % (r.stdout[-300:], r.stderr[-300:]))
    random.Random(1).shuffle(keys)
    with open(os.path.join(a.out, "cold.keys"), "w") as f:
        f.write("\n".join(keys) + "\n")
    print(json.dumps({"admin_projects": a.projects + 1, "admin_seconds": round(t1 - t0, 2),
                      "redis_gateway_keys": a.keys, "redis_seconds": round(time.time() - t1, 2)}))


if __name__ == "__main__":
    main()
