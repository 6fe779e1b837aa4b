"""Issue 19: README promises that no test checked before — the JSON bodies of
the gateway's own errors, upstream timeouts, no retry after the first byte,
the negative cache, `byok_redis … prefix=` and the metrics. Every wait is a
hang guard; ordering is proved with the fake provider's `hold` event."""

import base64
import json
import secrets
import threading
import time

import pytest
import requests

from harness import (GATEWAY_CONF, assert_json_error, free_port, metric_value, providers_yaml,
                     until, wait_until)

CHAT = "/v1/chat/completions"
HANG_GUARD = 30  # seconds; only stops a hung test


def route(r):
    return r.headers.get("x-byok-route")


def reason(r):
    return r.headers.get("x-byok-fallback-reason")


def gateway_error(r, status, code, type_):
    """The OpenAI error shape with exactly these fields (README Responses)."""
    err = assert_json_error(r, status)
    assert set(r.json()) == {"error"} and set(err) == {"message", "type", "code"}, r.text
    assert (err["code"], err["type"]) == (code, type_), r.text
    return err


def no_operator_key(gateway, **kw):
    """A gateway without byok_system_key: no route system, no fallback."""
    return gateway(overrides={"byok_system_key": None}, **kw)


def with_read_timeout(gateway, seconds=1, **kw):
    """A gateway whose proxy_read_timeout (300s in conf/byok_proxy.conf) is
    `seconds`, so an upstream read timeout happens within the test."""
    gw = gateway(start=False, **kw)
    # byok_proxy.conf (shared by the four proxying locations) is read from
    # the gateway's own directory, next to its nginx.conf.
    conf = gw.dir / "byok_proxy.conf"
    text = conf.read_text()
    assert text.count("proxy_read_timeout            300s;") == 1, "proxy conf changed"
    conf.write_text(text.replace("proxy_read_timeout            300s;",
                                 f"proxy_read_timeout {seconds}s;"))
    return gw.start()


def tamper(redis_server, pid, provider="openai"):
    rc = redis_server.client
    key = f"byok:{{{pid}}}:keys"
    rec = json.loads(rc.hget(key, provider))
    ct = bytearray(base64.b64decode(rec["ct"]))
    ct[0] ^= 1
    rec["ct"] = base64.b64encode(bytes(ct)).decode()
    rc.hset(key, provider, json.dumps(rec))
    rc.publish("byok:invalidate", pid)


# -- the gateway's own error bodies ------------------------------------------------

def test_i19_no_credential_body(gateway, fake_provider):
    gw = no_operator_key(gateway)
    p = gw.provision(keys={})
    r = gw.chat(p, model="gpt-4o")
    err = gateway_error(r, 403, "no_credential", "permission_error")  # issue 17 item 5: 4xx
    assert "openai" in err["message"]
    assert fake_provider.requests() == []
    gw.assert_no_leaks(r)


def test_i19_key_unavailable_body(gw, fake_provider, redis_server):
    """Policy no_key does not cover a key that does not decrypt: 422
    key_unavailable (issue 17 item 5), nothing sent anywhere."""
    p = gw.provision(fallback="no_key", keys={"openai": None})
    tamper(redis_server, p.pid)
    r = until(lambda: gw.chat(p, model="gpt-4o", headers={"Connection": "close"}),
              lambda r: r.status_code != 200, HANG_GUARD, what="the tampered record to be seen")
    gateway_error(r, 422, "key_unavailable", "invalid_request_error")
    fake_provider.clear()
    gateway_error(gw.chat(p, model="gpt-4o"), 422, "key_unavailable", "invalid_request_error")
    assert fake_provider.requests() == []
    gw.assert_no_leaks(r)


def test_i19_unknown_model_body(gateway, fake_provider):
    """Without a fallback provider an unmatched model has nowhere to go."""
    gw = no_operator_key(gateway)
    p = gw.provision(keys={"openai": None})
    err = gateway_error(gw.chat(p, model="llama-3-70b"), 400, "unknown_model",
                        "invalid_request_error")
    assert "llama-3-70b" in err["message"]
    gateway_error(gw.chat(p, model=None), 400, "unknown_model", "invalid_request_error")
    assert fake_provider.requests() == []


def test_i19_unknown_provider_body(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.chat(p, model="gpt-4o", headers={"x-byok-provider": "nosuch"})
    assert "nosuch" in gateway_error(r, 400, "unknown_provider", "invalid_request_error")["message"]
    r = gw.request("POST", "/nosuch/v1/chat/completions", headers=p.auth,
                   json={"model": "gpt-4o", "messages": []})
    gateway_error(r, 404, "unknown_provider", "invalid_request_error")
    assert fake_provider.requests() == []


UNREACHABLE = {"error": {"message": "the provider could not be reached", "type": "api_error",
                         "code": "upstream_unreachable"}}
TIMEOUT = {"error": {"message": "the provider did not answer in time", "type": "api_error",
                     "code": "upstream_timeout"}}


def test_i19_upstream_unreachable_body(gateway, fake_provider):
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway(providers=providers_yaml(fake_provider.base).replace(
        f"{fake_provider.base}/openai", f"{dead}/openai"))
    p = gw.provision(fallback="off", keys={"openai": None})
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 502 and r.json() == UNREACHABLE, (r.status_code, r.text)
    assert "json" in r.headers["content-type"]
    assert route(r) == "byok"
    assert fake_provider.requests() == []


def test_i19_upstream_timeout_body(gateway, fake_provider):
    """The 504 comes from the read timeout while the provider still holds its
    answer (it has not answered at all when the client gets the 504)."""
    gw = with_read_timeout(gateway)
    p = gw.provision(fallback="off", keys={"openai": None})
    hold = threading.Event()
    fake_provider.set_rule("/openai", hold=hold)
    t0 = time.monotonic()
    r = gw.chat(p, model="gpt-4o", timeout=HANG_GUARD)
    print(f"504 after {time.monotonic() - t0:.2f}s")
    assert not hold.is_set()
    assert r.status_code == 504 and r.json() == TIMEOUT, (r.status_code, r.text)
    assert route(r) == "byok"
    hold.set()
    assert len(fake_provider.requests("/openai")) == 1
    assert fake_provider.requests("/openrouter") == []


# -- fallback on timeout, never after the first byte ------------------------------

def test_i19_upstream_read_timeout_falls_back(gateway, fake_provider):
    gw = with_read_timeout(gateway)
    p = gw.provision(keys={"openai": None})
    hold = threading.Event()
    fake_provider.set_rule("/openai", hold=hold)
    before = metric_value(gw.metrics(), 'byok_fallbacks_total{reason="upstream_error"}')
    r = gw.chat(p, model="gpt-4o", timeout=HANG_GUARD)
    assert not hold.is_set()  # the direct call never answered: the retry came from the timeout
    assert r.status_code == 200, r.text
    assert (route(r), reason(r)) == ("fallback", "upstream_error")
    rec = fake_provider.last("/openrouter")
    assert rec.headers["authorization"] == f"Bearer {gw.system_key}"
    assert rec.json()["model"] == "openai/gpt-4o"
    assert len(fake_provider.requests("/openai")) == 1
    assert metric_value(gw.metrics(),
                        'byok_fallbacks_total{reason="upstream_error"}') == before + 1
    hold.set()


@pytest.mark.parametrize("failure", ["cut", "stall"])
def test_i19_no_retry_after_first_byte(gateway, fake_provider, failure):
    """A direct call that fails after its first byte (connection cut, or read
    timeout mid-stream) is never retried on the fallback provider."""
    gw = with_read_timeout(gateway)
    p = gw.provision(keys={"openai": None})
    hold = threading.Event()
    if failure == "cut":
        hold.set()
    fake_provider.stream("/openai", chunks=3, hold=hold, cut=failure == "cut")
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = gw.request("POST", CHAT, headers=p.auth, json=body, stream=True, timeout=HANG_GUARD)
    assert r.status_code == 200 and route(r) == "byok", r.text
    got = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in r.iter_content(chunk_size=None):
            got += chunk
    assert b"tok0 " in got and b"[DONE]" not in got, got
    hold.set()
    assert len(fake_provider.requests("/openai")) == 1
    assert fake_provider.requests("/openrouter") == []


# -- negative cache ------------------------------------------------------------------

def test_i19_negative_cache_lifetime(gw, fake_provider, redis_server):
    """README: unknown keys are cached for at most 10 s (the positive ttl is
    300 s here). While cached, the answer stays 401 without a Redis lookup
    even though the key now exists (no invalidation names it); then the
    entry expires by itself and the key works."""
    p = gw.provision(keys={"openai": None})
    rc = redis_server.client
    sha_key = next(iter(rc.scan_iter(match="byok:apikey:*")))
    rc.rename(sha_key, "parked")
    def misses():  # lookups that went to Redis (an expired entry counts as stale)
        m = gw.metrics()
        return metric_value(m, "byok_cache_misses_total") + metric_value(m, "byok_cache_stale_total")
    m0 = misses()
    assert_json_error(gw.chat(p, model="gpt-4o"), 401)
    assert misses() == m0 + 1
    t0 = time.monotonic()
    rc.rename("parked", sha_key)
    for _ in range(4):
        r = gw.chat(p, model="gpt-4o", headers={"Connection": "close"})
        if r.status_code == 200:
            break
        assert_json_error(r, 401)
        assert misses() == m0 + 1, "a negatively cached key went to Redis"
    assert r.status_code == 401, "the unknown key was not cached"
    r = until(lambda: gw.chat(p, model="gpt-4o", headers={"Connection": "close"}),
              lambda r: r.status_code == 200, HANG_GUARD, interval=0.2,
              what="the negative entry to expire")
    print(f"negative entry expired after {time.monotonic() - t0:.1f}s")
    assert route(r) == "byok"
    assert misses() == m0 + 2


# -- byok_redis prefix= --------------------------------------------------------------

def test_i19_redis_prefix_option(gateway, fake_provider, redis_server):
    gw = gateway(overrides={"byok_redis": f"byok_redis {redis_server.address} timeout=500ms "
                                          "prefix=tenant7:;"})
    p = gw.provision(keys={"openai": None})
    rc = redis_server.client
    names = set(rc.scan_iter(count=1000))
    assert names and all(n.startswith("tenant7:") for n in names), names
    assert f"tenant7:project:{{{p.pid}}}" in names and "tenant7:audit" in names
    assert f"tenant7:{{{p.pid}}}:keys" in names
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200 and route(r) == "byok", r.text
    # invalidation goes over tenant7:invalidate
    ps = rc.pubsub()
    ps.subscribe("tenant7:invalidate")
    wait_until(lambda: ps.get_message(timeout=0.1), HANG_GUARD, what="subscription")
    assert gw.admin("DELETE", f"/projects/{p.pid}/keys/openai").status_code == 200
    msg = wait_until(lambda: (lambda m: m if m and m["type"] == "message" else None)(
        ps.get_message(timeout=0.1)), HANG_GUARD, what="invalidation on tenant7:invalidate")
    assert msg["data"] == p.pid
    ps.close()
    wait_until(lambda: reason(gw.chat(p, model="gpt-4o", headers={"Connection": "close"}))
               == "no_key", HANG_GUARD, what="the delete to reach the gateway")
    # a gateway with the default prefix does not see the project
    other = gateway(master_keys=gw.master_key_lines, admin_tokens=gw.admin_tokens)
    assert_json_error(other.chat(p, model="gpt-4o"), 401)
    assert other.admin("GET", f"/projects/{p.pid}").status_code == 404


# -- metrics ---------------------------------------------------------------------------

def deltas(before, after, samples):
    return {s: metric_value(after, s) - metric_value(before, s) for s in samples}


def test_i19_request_route_and_fallback_metrics(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    q = gw.provision(keys={})
    free = gw.provision(tier="free", keys={"openai": None})
    off = gw.provision(fallback="off", keys={})
    before = gw.metrics()
    for _ in range(2):
        assert route(gw.chat(p, model="gpt-4o")) == "byok"
    assert route(gw.chat(p, model="llama-3-70b")) == "system"
    assert reason(gw.chat(q, model="gpt-4o")) == "no_key"
    assert reason(gw.chat(free, model="gpt-4o")) == "tier"
    assert gw.chat(off, model="gpt-4o").status_code == 403
    fake_provider.fail("/openai", 400)
    assert gw.chat(p, model="gpt-4o").status_code == 400
    after = gw.metrics()
    want = {
        'byok_requests_total{provider="openai",route="byok",status="2xx"}': 2,
        'byok_requests_total{provider="openai",route="byok",status="4xx"}': 1,
        'byok_requests_total{provider="openrouter",route="system",status="2xx"}': 1,
        'byok_requests_total{provider="openai",route="fallback",status="2xx"}': 2,
        # a denied decision has no provider row
        'byok_requests_total{provider="unknown",route="denied",status="4xx"}': 1,
        'byok_fallbacks_total{reason="no_key"}': 1,
        'byok_fallbacks_total{reason="tier"}': 1,
        'byok_fallbacks_total{reason="inactive"}': 0,
        'byok_fallbacks_total{reason="decrypt_error"}': 0,
        "byok_upstream_latency_seconds_count": 6,  # every proxied request, not the denied one
        'byok_upstream_latency_seconds_bucket{le="+Inf"}': 6,
    }
    assert deltas(before, after, want) == want
    assert metric_value(after, "byok_upstream_latency_seconds_sum") >= \
        metric_value(before, "byok_upstream_latency_seconds_sum")
    # the histogram is cumulative
    buckets = [float(l.rsplit(" ", 1)[1]) for l in after.splitlines()
               if l.startswith("byok_upstream_latency_seconds_bucket")]
    assert buckets == sorted(buckets) and len(buckets) == 14, buckets
    gw.assert_no_leaks(after)
    for proj in (p, q, free, off):
        assert proj.pid not in after


def test_i19_cache_auth_admin_metrics(gw, fake_provider):
    before = gw.metrics()
    p = gw.provision(keys={"openai": None})  # project, gateway key, provider key: 3 writes
    assert gw.admin("POST", "/projects", {"id": "Bad Id", "name": "x"}).status_code == 422
    mid = gw.metrics()
    assert deltas(before, mid, ["byok_admin_mutations_total"]) == \
        {"byok_admin_mutations_total": 3}
    for _ in range(3):
        assert gw.chat(p, model="gpt-4o", headers={"Connection": "close"}).status_code == 200
    assert gw.chat("byok_" + secrets.token_hex(20), model="gpt-4o").status_code == 401
    assert gw.chat(None, model="gpt-4o").status_code == 401
    assert gw.chat("sk-not-a-gateway-key", model="gpt-4o").status_code == 401
    after = gw.metrics()
    want = {"byok_cache_misses_total": 2,  # p once, the unknown byok_ key once
            "byok_cache_hits_total": 2,
            "byok_cache_stale_total": 0,
            "byok_auth_failures_total": 3,
            "byok_cache_entries": 2,  # p and the negative entry
            "byok_admin_mutations_total": 0,
            "byok_decrypt_failures_total": 0}
    assert deltas(mid, after, want) == want


def test_i19_redis_error_and_reconnect_metrics(gw, fake_provider, redis_server):
    p = gw.provision(keys={"openai": None})
    before = gw.metrics()
    assert metric_value(before, "byok_redis_errors_total") == 0
    redis_server.stop()
    try:
        assert_json_error(gw.chat(p, model="gpt-4o"), 503)
        wait_until(lambda: metric_value(gw.metrics(), "byok_redis_errors_total") > 0, HANG_GUARD,
                   what="the Redis error to be counted")
        reconnects = metric_value(gw.metrics(), "byok_redis_reconnects_total")
    finally:
        redis_server.start()
    # Redis is back (empty: no persistence); the links reconnect by themselves
    # (commands and the invalidation subscriber, in each worker)
    wait_until(lambda: metric_value(gw.metrics(), "byok_redis_reconnects_total") > reconnects,
               HANG_GUARD, interval=0.2, what="a counted reconnect")
    wait_until(lambda: gw.admin("GET", "/projects").status_code == 200, HANG_GUARD,
               interval=0.2, what="admin reads after the reconnect")


# -- the leak scan itself ----------------------------------------------------------------

def test_i19_leak_scan_sees_parts_and_encodings(gw):
    """The scan must fail on a secret that shows up re-encoded or in part,
    in any log nginx writes (nginx.stdout included) or in a response."""
    p = gw.provision(keys={"openai": None})
    key = p.keys["openai"]
    body = key[len("sk-test-"):]
    forms = {"whole": key, "upper": key.upper(),
             "base64": base64.b64encode(key.encode()).decode(),
             "first 12": body[:12], "middle 12": body[10:22], "last 12": key[-12:]}
    gw.assert_no_leaks()
    logs = {"error.log": gw.error_log_path, "nginx.stdout": gw.dir / "logs" / "nginx.stdout"}
    for form, leaked in forms.items():
        text = f"something {leaked} something"
        with pytest.raises(AssertionError, match="secrets leaked"):
            gw.assert_no_leaks(text)
        for where, path in logs.items():
            saved = path.read_bytes()
            path.write_bytes(saved + text.encode() + b"\n")
            try:
                with pytest.raises(AssertionError, match=f"secrets leaked.* in {where}"):
                    gw.assert_no_leaks()
            finally:
                path.write_bytes(saved)
    gw.assert_no_leaks()
