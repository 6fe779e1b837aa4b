"""Issue 18, the cache-hit path: what a hit request costs the worker, in a
count that does not depend on how busy the machine is (heap allocations
per request, counted by bench/malloc_count.c), and that the shared decoded
snapshot, the once-built route configuration and the per-row metering
change nothing a client, the counters or the usage events see."""
import shutil
import time

import pytest
import harness
from harness import wait_until

# Allocations of one worker per cache-hit request (malloc, calloc, realloc,
# the memalign family; nginx's own pool blocks included). Bare nginx
# proxy_pass makes about 4-5 in bench/probe.sh; the gateway made 33 before
# issue 18's hit-path work, 16 after its first pass, 12 after its second and
# 5.0 after session 4's (ctx out of the request pool, byok_gateway.conf's
# request_pool_size 16k, views instead of strings in the decision and the
# metering). With this harness's configuration (access log, more headers):
# 42, 22, 18.4, then 8.5 (10.5 without the pool size).
MAX_ALLOCS_PER_HIT = 10


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the malloc counter")
@pytest.mark.skipif("LD_PRELOAD" in harness.NGINX_ENV, reason="sanitizer runtimes own malloc")
def test_i18_04_a_cache_hit_allocates_a_bounded_number_of_times(gateway, tmp_path, monkeypatch):
    mc = harness.MallocCounter(tmp_path, monkeypatch)
    gw = gateway(worker_processes=1)
    p = gw.provision()
    for _ in range(30):  # warm: the snapshot and the key are cached, buffers grown
        r = gw.chat(p)
        assert r.status_code == 200, (r.status_code, r.text[:300])

    def hit():
        r = gw.chat(p)
        assert r.status_code == 200 and r.headers["x-byok-route"] == "byok"
    per_request = mc.per_call(gw, hit, 200)
    print("allocations per hit request:", per_request)
    assert 0 < per_request <= MAX_ALLOCS_PER_HIT, per_request
    gw.assert_no_leaks()


def test_i18_04_cached_hits_count_usage_and_meter_every_request(gw, fake_provider):
    """The usage counters are summed per (project, provider, route, day) row
    and the last use per key in reused buffers: what reaches Redis at the
    flush is still one count per request."""
    p = gw.provision()
    n = 7
    for _ in range(n):
        r = gw.chat(p)
        assert r.status_code == 200 and r.headers["x-byok-route"] == "byok"
    rds = gw.redis.client
    day = time.strftime("%Y%m%d", time.gmtime())

    def counted():
        for k in rds.scan_iter(f"*{p.pid}*usage:{day}"):
            return rds.hget(k, "openai:byok") == str(n)
        return False

    wait_until(counted, timeout=10, what="the usage counter at n requests")

    def last_used():
        for k in rds.scan_iter(f"*{p.pid}*last_used"):
            return rds.hgetall(k)
        return {}

    seen = wait_until(last_used, timeout=10, what="last_used written")
    assert f"gw:{p.gateway_key_id}" in seen, seen
    assert len(seen) == 2, seen  # the gateway key and the one provider key
    gw.assert_no_leaks()
