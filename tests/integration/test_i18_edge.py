"""Issue 18, the edges of the hot path: a cache miss does not wait behind the
worker's own Redis traffic (the usage flush), and a stalled Redis is
invisible to cached traffic (no errors, no misses). Outcomes only: the order
in which Redis ran the commands, status codes and counters — never time."""
import socket
import threading
import time

import redis

from harness import metric_value, read_monitor, redis_stalled, wait_until


def monitor(redis_server):
    mon = socket.create_connection((redis_server.host, redis_server.port), timeout=0.5)
    mon.sendall(b"MONITOR\r\n")
    return mon


def sleep_redis(redis_server, seconds):
    """DEBUG SLEEP in a thread; returns the thread once Redis has stalled."""
    sleeper = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=60)
    t = threading.Thread(target=lambda: sleeper.execute_command("DEBUG", "SLEEP", str(seconds)),
                         daemon=True)
    t.start()
    wait_until(lambda: redis_stalled(redis_server), timeout=5, what="redis to stall")
    return t


def is_flush(line):
    return any(c in line for c in (b'"HINCRBY"', b'"EXPIRE"', b'"HSET"')) and b" lua] " not in line


def flush_after_lookup(lines):
    at = next((i for i, ln in enumerate(lines) if b"byok:apikey:" in ln), None)
    return -1 if at is None else sum(map(is_flush, lines[at:]))


def test_i18_edge_01_a_cache_miss_is_not_queued_behind_the_usage_flush(gateway, fake_provider,
                                                                      redis_server):
    """The usage flush of a busy worker is hundreds of commands once a second
    (HINCRBY/EXPIRE per project row). Sent all at once, a cache-miss lookup
    issued after it ran only when Redis had run all of them: the cold path's
    10-60 ms tail. Now at most 64 of the worker's own commands are
    unanswered at a time, so Redis runs the lookup before most of the flush.

    Made deterministic with a stall: Redis sleeps while cached requests of
    24 projects build up usage and a flush happens; then a new gateway key
    needs its lookup. Redis wakes and MONITOR shows the order it ran them."""
    gw = gateway(worker_processes=1,
                 overrides={"byok_redis": f"byok_redis {redis_server.address} timeout=20s;"})
    projects = [gw.provision() for _ in range(24)]
    cold = gw.provision()
    for p in projects:
        assert gw.chat(p).status_code == 200
    time.sleep(1.5)  # the warm-up's usage has left (the flush runs every second)
    mon = monitor(redis_server)
    t = sleep_redis(redis_server, 4)
    for p in projects:  # cached: answered while Redis sleeps
        r = gw.chat(p, timeout=30)
        assert (r.status_code, r.headers.get("x-byok-route")) == (200, "byok")
    time.sleep(1.5)  # a flush tick while Redis sleeps: its commands wait unanswered
    assert t.is_alive(), "Redis woke up before the flush and the miss were queued"
    answer = {}
    miss = threading.Thread(target=lambda: answer.update(r=gw.chat(cold, timeout=60)), daemon=True)
    miss.start()
    lines = read_monitor(mon, lambda ls: flush_after_lookup(ls) >= 100, limit=15)
    miss.join(60)
    t.join(30)
    mon.close()
    assert answer["r"].status_code == 200, answer["r"].text[:300]
    lookup = next(i for i, ln in enumerate(lines) if b"byok:apikey:" in ln)
    before = sum(map(is_flush, lines[:lookup]))
    after = sum(map(is_flush, lines[lookup:]))
    assert before <= 64, f"the lookup ran after {before} of the worker's own commands"
    assert after >= 100, f"the flush was small ({before} + {after} commands): nothing to prove"
    gw.assert_no_leaks()


def test_i18_edge_02_cached_traffic_during_a_redis_stall_has_no_errors_and_no_misses(
        gateway, fake_provider, redis_server):
    """Redis sleeps past the command deadline while cached keys keep being
    used: every answer is a 200 routed byok and the cache counts no miss."""
    gw = gateway(overrides={"byok_redis": f"byok_redis {redis_server.address} timeout=200ms;"})
    projects = [gw.provision() for _ in range(3)]
    for p in projects:
        for _ in range(4):  # in the zone and in both workers
            assert gw.chat(p).status_code == 200
    before = metric_value(gw.metrics(), "byok_cache_misses_total")
    t = sleep_redis(redis_server, 3)
    answered = []
    for _ in range(10):
        for p in projects:
            r = gw.chat(p, timeout=30)
            answered.append((r.status_code, r.headers.get("x-byok-route")))
    stalled_throughout = t.is_alive()
    t.join(30)
    assert answered == [(200, "byok")] * 30, answered
    assert stalled_throughout, "the requests finished while Redis was asleep"
    assert metric_value(gw.metrics(), "byok_cache_misses_total") == before
    gw.assert_no_leaks()
