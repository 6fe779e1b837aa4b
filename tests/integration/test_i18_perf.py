"""Issue 18: the cache-hit path at the limit — per-worker caches of decoded
snapshots and decrypted provider keys, without losing a security property:
a changed key or a revoked gateway key takes effect as before, no plaintext
key reaches a worker's core dump, and a stalled Redis is invisible to
cached traffic."""
import shutil
import socket
import subprocess
import threading
import time

import pytest
import redis

from harness import NGINX_ENV, leak_forms, read_monitor, redis_stalled, until, wait_until


def hit(gw, project, n=1):
    for _ in range(n):
        r = gw.chat(project)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        assert r.headers.get("x-byok-route") == "byok"
    return r


def test_i18_01_a_replaced_provider_key_is_used_at_once_after_cached_hits(gw, fake_provider):
    p = gw.provision()
    old = p.keys["openai"]
    hit(gw, p, 6)  # both workers decrypt once, then serve from their key cache
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {old}"
    new = gw.put_key(p.pid, "openai")

    def sent_new():
        hit(gw, p)
        return fake_provider.last("/openai").headers["authorization"] == f"Bearer {new}"

    wait_until(sent_new, timeout=5, what="the replaced key upstream")
    # Every worker has dropped the old plaintext: several more hits, none old.
    for _ in range(6):
        hit(gw, p)
        assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {new}"
    gw.assert_no_leaks()


def test_i18_02_a_revoked_gateway_key_is_refused_after_cached_hits(gw, fake_provider):
    p = gw.provision()
    hit(gw, p, 6)
    r = gw.admin("DELETE", f"/projects/{p.pid}/api-keys/{p.gateway_key_id}")
    assert r.status_code in (200, 204), (r.status_code, r.text)
    until(lambda: gw.chat(p).status_code, lambda s: s == 401, timeout=5,
          what="the revoked key refused")
    for _ in range(6):
        assert gw.chat(p).status_code == 401


@pytest.mark.skipif(shutil.which("gcore") is None, reason="gcore (gdb) not installed")
def test_i18_03_worker_core_dump_holds_no_provider_key(gateway, fake_provider, tmp_path):
    """The key cache is mlock'ed and MADV_DONTDUMP; the request's copies (the
    header list, nginx's upstream request buffer) are wiped when the request
    ends. A core of the worker taken while the key is cached: zero hits."""
    gw = gateway(worker_processes=1)
    p = gw.provision()
    key = p.keys["openai"]
    hit(gw, p, 20)
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {key}"
    (worker,) = gw.workers()
    # A sanitizer build (make test-asan) maps terabytes of shadow memory: its
    # core would fill the disk. Dump only an ordinary worker.
    vm_kb = next(int(line.split()[1]) for line in open(f"/proc/{worker}/status")
                 if line.startswith("VmSize:"))
    if NGINX_ENV or vm_kb > 4 << 20:
        pytest.skip(f"worker address space too large to dump ({vm_kb} kB, sanitizer runtime)")
    core = tmp_path / "core"
    out = subprocess.run(["gcore", "-o", str(core), str(worker)], capture_output=True,
                         text=True, timeout=120)
    dumped = list(tmp_path.glob("core*"))
    assert dumped, (out.returncode, out.stdout[-500:], out.stderr[-500:])
    data = dumped[0].read_bytes()
    dumped[0].unlink()  # never leave a core behind
    assert len(data) > 1 << 20, "a real core of the worker"
    assert b"byok" in data, "the module's memory is in the dump"
    hits = [what for form, what in leak_forms(key) if form.encode() in data]
    assert not hits, f"provider key in the worker's core dump: {hits}"
    hit(gw, p)  # the worker survived the dump


def test_i18_04_cached_requests_complete_during_a_redis_stall(gateway, fake_provider,
                                                              redis_server):
    """Redis sleeps (DEBUG SLEEP) longer than the command deadline while the
    usage flush, the deadline timer and the subscriber all have Redis work
    pending: cached traffic neither waits nor fails, and after the stall the
    usage counters and the event stream are exact."""
    gw = gateway(overrides={"byok_redis": f"byok_redis {redis_server.address} timeout=200ms;"})
    p = gw.provision()
    hit(gw, p, 4)  # cached in the zone and in both workers
    sleeper = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=60)
    done = threading.Event()

    def stall():
        try:
            sleeper.execute_command("DEBUG", "SLEEP", "6")
        finally:
            done.set()

    t = threading.Thread(target=stall, daemon=True)
    t.start()
    wait_until(lambda: redis_stalled(redis_server), timeout=5, what="redis to stall")
    answered = []
    for _ in range(20):
        r = gw.chat(p, timeout=30)
        answered.append((r.status_code, r.headers.get("x-byok-route")))
        if done.is_set():
            break
    stalled_throughout = not done.is_set()
    t.join(30)
    assert answered == [(200, "byok")] * 20, answered
    assert stalled_throughout, "the requests finished while Redis was asleep"
    # Nothing counted during the stall is lost or doubled once Redis is back.
    total = 4 + 20

    def usage():
        r = gw.admin("GET", f"/projects/{p.pid}/usage")
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["totals"]["requests"]

    until(usage, lambda n: n >= total, timeout=15, what=f"{total} metered requests")
    assert usage() == total
    events = until(lambda: redis_server.client.xlen("byok:usage:events"),
                   lambda n: n >= total, timeout=15, what=f"{total} usage events")
    assert events == total
    gw.assert_no_leaks()


def test_i18_05_usage_events_leave_in_batches_not_one_command_per_request(gw, fake_provider,
                                                                          redis_server):
    """What a stall used to hit: one XADD (and one reply, one deadline) per
    request. Events now leave as one command per batch; Redis's MONITOR
    shows every event added from a script, none sent one by one."""
    p = gw.provision()
    hit(gw, p, 2)
    until(lambda: redis_server.client.xlen("byok:usage:events"), lambda n: n >= 2, timeout=10,
          what="the warm-up events")
    mon = socket.create_connection((redis_server.host, redis_server.port), timeout=0.5)
    mon.sendall(b"MONITOR\r\n")
    hit(gw, p, 30)
    seen = b"\r\n".join(read_monitor(mon, lambda ls: b"\r\n".join(ls).count(b'"XADD"') >= 30))
    mon.close()
    lines = [ln for ln in seen.split(b"\r\n") if b'"XADD"' in ln and b"byok:usage:events" in ln]
    from_clients = [ln for ln in lines if b" lua] " not in ln]
    assert len(lines) == 30, f"{len(lines)} events seen"
    assert not from_clients, f"{len(from_clients)} events sent one command each"
    assert redis_server.client.xlen("byok:usage:events") == 32
