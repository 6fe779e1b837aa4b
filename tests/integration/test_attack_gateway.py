"""Issue 10, request-path items: what a hostile tenant, a hostile provider or
an unauthenticated flood could do to the gateway, asserted on what the fake
provider, Redis and the nginx workers actually saw."""

import hashlib
import http.client
import json
import os
import re
import secrets
import socket
import threading

import pytest

from harness import assert_json_error, canary, raw_http, status_of, until, wait_until

HANG_GUARD = 30  # seconds; only stops a hung wait, never decides a verdict

CHAT = "/v1/chat/completions"


# -- item 9: X-Accel-* from providers ------------------------------------------

PROVIDER_BODY = {"id": "from-the-provider", "object": "chat.completion", "choices": []}


@pytest.mark.parametrize("target", ["/metrics", "@byok_fallback", "@byok_direct",
                                    "/admin/v1/projects"])
@pytest.mark.parametrize("policy", ["auto", "off"])
def test_i10_09_provider_x_accel_redirect_is_ignored(gw, fake_provider, target, policy):
    # policy auto proxies from `location /`, policy off from @byok_direct.
    p = gw.provision(keys={"openai": None}, fallback=policy)
    fake_provider.set_rule("/openai", body=PROVIDER_BODY,
                           headers={"X-Accel-Redirect": target, "X-Accel-Buffering": "yes",
                                    "X-Accel-Expires": "60", "X-Accel-Charset": "koi8-r"})
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200, r.text[:300]
    assert r.json() == PROVIDER_BODY
    assert "byok_requests_total" not in r.text
    assert not [h for h in r.headers if h.lower().startswith("x-accel-")], r.headers
    assert r.headers.get("x-byok-route") == "byok"
    # Only the one direct call: no fallback with the operator's key.
    assert [rec.provider for rec in fake_provider.requests()] == ["openai"]
    gw.assert_no_leaks(r)


def test_i10_09_x_accel_redirect_in_fallback_answer_is_ignored(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 500)
    fake_provider.set_rule("/openrouter", body=PROVIDER_BODY,
                           headers={"X-Accel-Redirect": "/metrics"})
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200, r.text[:300]
    assert r.json() == PROVIDER_BODY
    assert r.headers.get("x-byok-route") == "fallback"
    assert "x-accel-redirect" not in {h.lower() for h in r.headers}


@pytest.mark.parametrize("target", ["/metrics", "/_byok/key-test"])
def test_i10_09_key_test_ignores_x_accel_redirect(gw, fake_provider, target):
    p = gw.provision(keys={"openai": None})
    fake_provider.set_rule("/openai/models", status=401, body={"error": {"message": "bad key"}},
                           headers={"X-Accel-Redirect": target})
    r = gw.admin("POST", f"/projects/{p.pid}/keys/openai/test")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["http_status"]) == ("invalid", 401), body
    assert len(fake_provider.requests("/openai/models")) == 1
    gw.assert_no_leaks(r)


# -- item 15: key= in any case ------------------------------------------------------

def test_i10_15_key_query_parameter_stripped_in_any_case(gw, fake_provider):
    p = gw.provision(keys={"openai": None, "google": None})
    junk = [canary("sk-junk-") for _ in range(5)]
    gw.track(*junk)
    query = (f"Key={junk[0]}&alt=sse&KEY={junk[1]}&kEY={junk[2]}&%6Bey={junk[3]}"
             f"&%4B%45%59={junk[4]}&keys=1")
    for method, path in (("POST", "/openai/chat/completions"), ("POST", "/google/chat"),
                         ("POST", CHAT), ("GET", "/v1/models")):
        r = gw.request(method, f"{path}?{query}",
                       headers={**p.auth, "x-byok-provider": "openai"},
                       json={"model": "gpt-4o", "messages": []} if method == "POST" else None)
        assert r.status_code == 200, (path, r.text)
        rec = fake_provider.last()
        assert rec.query == "alt=sse&keys=1", (path, rec.query)
        assert not re.search(r"(^|&)(k|%6b)(e|%65)(y|%79)(=|&|$)", rec.query, re.I), rec.query
    text = fake_provider.all_text()
    for j in junk:
        assert j not in text, f"{j[:10]}… reached the provider"
    gw.assert_no_leaks()


# -- item 4: big bodies stay in nginx's buffers and temp file ----------------------

BIG = 15 * 1024 * 1024  # under the gateway's client_max_body_size 16m, over its 1m buffer


def big_body(model: str, model_first: bool = False, size: int = BIG) -> bytes:
    """A chat body of about `size` bytes whose content has every JSON-relevant
    byte class in it (escapes, unicode) so a bad splice would show."""
    unit = 'abc \\"q\\" \\\\ \\n \\u00e9 {x:[1]}, '
    content = (unit * (size // len(unit) + 1))[:size]
    content = content[:len(content) - 8] + "the-end."  # no dangling escape at the cut
    msgs = '"messages":[{"role":"user","content":"' + content + '"}]'
    m = '"model" : "' + model + '"'
    text = "{" + (m + "," + msgs if model_first else msgs + ", " + m) + ',"stream":false}'
    return text.encode()


def expected_json(body: bytes, model: str) -> dict:
    want = json.loads(body)
    want["model"] = model
    return want


@pytest.mark.parametrize("model_first", [False, True])
def test_i10_04_spilled_body_model_rewrite_arrives_intact(gw, fake_provider, model_first):
    # "openai/gpt-4o" goes direct with the prefix stripped: the value shrinks.
    p = gw.provision(keys={"openai": None})
    body = big_body("openai/gpt-4o", model_first)
    r = gw.request("POST", CHAT, data=body, timeout=120,
                   headers={**p.auth, "content-type": "application/json"})
    assert r.status_code == 200, r.text[:300]
    assert r.headers.get("x-byok-route") == "byok"
    rec = fake_provider.last("/openai")
    assert int(rec.headers["content-length"]) == len(rec.body)
    assert rec.json() == expected_json(body, "gpt-4o")
    fake_provider.clear()


def test_i10_04_spilled_body_fallback_grows_model_and_retry_resends(gw, fake_provider):
    # The direct call strips the prefix (old value blanked in the temp file),
    # fails with 500, and the fallback re-sends the body with the full name.
    p = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 500)
    body = big_body("openai/gpt-4o")
    r = gw.request("POST", CHAT, data=body, timeout=120,
                   headers={**p.auth, "content-type": "application/json"})
    assert r.status_code == 200, r.text[:300]
    assert r.headers.get("x-byok-route") == "fallback"
    direct, fallback = fake_provider.last("/openai"), fake_provider.last("/openrouter")
    assert direct.json() == expected_json(body, "gpt-4o")
    assert fallback.json() == expected_json(body, "openai/gpt-4o")
    assert int(fallback.headers["content-length"]) == len(fallback.body)
    fake_provider.clear()

    # No key for openai at all: the model grows ("gpt-4o" -> "openai/gpt-4o").
    q = gw.provision(keys={})
    body = big_body("gpt-4o", model_first=True)
    r = gw.request("POST", CHAT, data=body, timeout=120,
                   headers={**q.auth, "content-type": "application/json"})
    assert r.status_code == 200, r.text[:300]
    assert r.headers.get("x-byok-route") == "fallback"
    assert fake_provider.last("/openrouter").json() == expected_json(body, "openai/gpt-4o")
    fake_provider.clear()


def test_i10_04_small_bodies_rewritten_in_memory(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    for model, sent in (("openai/gpt-4o", "gpt-4o"), ("openai/x\\u0022y", 'x"y')):
        raw = ('{"a":[1,{"model":"nested"}],"model":"' + model + '","z":"\\u00e9"}').encode()
        r = gw.request("POST", CHAT, data=raw, headers={**p.auth, "x-byok-provider": "openai"})
        assert r.status_code == 200, r.text
        rec = fake_provider.last("/openai")
        assert rec.json() == {"a": [1, {"model": "nested"}], "model": sent, "z": "\u00e9"}
        assert int(rec.headers["content-length"]) == len(rec.body)
    body = b'{"model":"gpt-4o",  "n":1}'
    r = gw.request("POST", CHAT, data=body, headers=p.auth)
    assert r.status_code == 200 and fake_provider.last("/openai").body == body  # untouched


def worker_hwm_kib(gw) -> int:
    total = 0
    for pid in gw.workers():
        with open(f"/proc/{pid}/status") as f:
            total = max(total, int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)))
    return total


RSS_REQUESTS = int(os.environ.get("BYOK_RSS_REQUESTS", "20"))


def test_i10_04_worker_memory_bounded_by_buffers(gateway, fake_provider):
    # One worker, every request alive at once (the provider answers after a
    # pause), each body 15 MiB with a model rewrite. Copying bodies into
    # worker memory costs >= 15 MiB per request; nginx's buffers cost 1 MiB.
    gw = gateway(worker_processes=1)
    p = gw.provision(keys={"openai": None})
    fake_provider.set_rule("/openai", delay=3)
    before = worker_hwm_kib(gw)
    body = big_body("openai/gpt-4o")
    results = []

    def send():
        r = gw.request("POST", CHAT, data=body, timeout=300,
                       headers={**p.auth, "content-type": "application/json"})
        results.append((r.status_code, r.headers.get("x-byok-route")))

    threads = [threading.Thread(target=send) for _ in range(RSS_REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert results == [(200, "byok")] * RSS_REQUESTS, results
    got = fake_provider.requests("/openai")
    assert len(got) == RSS_REQUESTS
    want = expected_json(body, "gpt-4o")
    assert all(rec.json() == want for rec in got)
    fake_provider.clear()
    after = worker_hwm_kib(gw)
    grew_mib = (after - before) / 1024
    print(f"\nworker VmHWM {before // 1024} MiB -> {after // 1024} MiB "
          f"for {RSS_REQUESTS} x {BIG // 2**20} MiB bodies")
    # Generous: 4 MiB per request; a copy of each body alone would be 15 MiB.
    assert grew_mib < 4 * RSS_REQUESTS, f"worker grew by {grew_mib:.0f} MiB"


# -- item 5: a lost invalidation ------------------------------------------------------

def test_i10_05_resubscribe_revalidates_cached_keys(gw, fake_provider, redis_server):
    p = gw.provision(keys={"openai": None})
    rc = redis_server.client
    until(lambda: rc.pubsub_numsub("byok:invalidate")[0][1], lambda n: n >= gw.worker_processes,
          what="every worker subscribed")
    for _ in range(4):  # cached by every worker that serves one
        assert gw.chat(p).status_code == 200

    # The subscription drops and the revocation happens while nobody listens
    # (written straight to Redis: no message is ever published).
    assert rc.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
    sha = hashlib.sha256(p.gateway_key.encode()).hexdigest()
    rc.hset(f"byok:apikey:{sha}", "revoked", "1")
    until(lambda: rc.pubsub_numsub("byok:invalidate")[0][1], lambda n: n >= gw.worker_processes,
          timeout=15, what="the workers to subscribe again")
    # Bounded poll: the old code kept answering 200 for the whole ttl (300 s).
    r = until(lambda: gw.chat(p), lambda resp: resp.status_code != 200, timeout=10,
              what="the revoked key to be refused")
    assert_json_error(r, 401)
    for _ in range(4):
        assert_json_error(gw.chat(p), 401)
    gw.assert_no_leaks(r)


def test_i10_05_stale_not_served_for_unverified_entries(gateway, fake_provider, redis_server):
    # ttl 1s: entries turn stale fast; stale=15m would serve them while Redis
    # is away, but not once a resubscription made them unverified.
    gw = gateway(ttl="1s")
    p = gw.provision(keys={"openai": None})
    rc = redis_server.client
    until(lambda: rc.pubsub_numsub("byok:invalidate")[0][1], lambda n: n >= gw.worker_processes,
          what="every worker subscribed")
    assert gw.chat(p).status_code == 200
    rc.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    until(lambda: rc.pubsub_numsub("byok:invalidate")[0][1], lambda n: n >= gw.worker_processes,
          timeout=15, what="the workers to subscribe again")
    redis_server.stop()
    r = gw.chat(p)
    assert_json_error(r, 503)
    redis_server.start()


# -- item 14: floods of random gateway keys -------------------------------------------

def eval_calls(rc) -> int:
    return int(rc.info("commandstats").get("cmdstat_eval", {}).get("calls", 0))


def cache_counts(gw):
    """(byok_cache_hits_total, byok_cache_misses_total) of the gateway."""
    m = dict(line.rsplit(" ", 1) for line in gw.metrics().splitlines()
             if line.startswith(("byok_cache_hits_total ", "byok_cache_misses_total ")))
    return int(float(m["byok_cache_hits_total"])), int(float(m["byok_cache_misses_total"]))


def random_key() -> str:
    return "byok_" + secrets.token_hex(20)


def flood(port: int, source: str, keys, path: str = CHAT):
    """Sends one chat request per key over one keep-alive connection from
    `source` (any 127.x.y.z works on loopback); returns (status, headers, body)."""
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    try:
        for k in keys:
            conn.request("POST", path, body=b'{"model":"gpt-4o"}',
                         headers={"Authorization": f"Bearer {k}",
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            out.append((resp.status, dict(resp.getheaders()), resp.read()))
    finally:
        conn.close()
    return out


def test_i10_14_unknown_key_flood_is_rate_limited_per_address(gateway, fake_provider,
                                                              redis_server):
    gw = gateway(overrides={"byok_cache": "byok_cache zone=byok:16m ttl=300s stale=15m "
                                          "unknown_key_rate=1r/m unknown_key_burst=5;"})
    p = gw.provision(keys={"openai": None})
    # Known keys never use up the budget: more cold lookups than the burst.
    for key in [p.gateway_key] + [gw.mint_key(p.pid)[0] for _ in range(8)]:
        assert gw.chat(key).status_code == 200
    rc = redis_server.client
    # The usage events of those 9 requests go out in a batch script (EVAL)
    # of their own: let it land before counting lookups.
    wait_until(lambda: rc.xlen("byok:usage:events") >= 9, HANG_GUARD,
               what="the usage events to be flushed")
    before = eval_calls(rc)
    got = flood(gw.port, "127.0.0.1", [random_key() for _ in range(60)])
    statuses = [s for s, _, _ in got]
    assert statuses[:6] == [401] * 6, statuses
    assert statuses[6:] == [429] * 54, statuses
    _, headers, body = got[-1]
    retry = int({k.lower(): v for k, v in headers.items()}["retry-after"])
    assert 1 <= retry <= 64, retry
    err = json.loads(body)["error"]
    assert err["code"] == "rate_limited" and err["type"] == "rate_limit_error", err
    # burst 5 + 1, and at 1r/m at most one more while the flood ran
    assert eval_calls(rc) - before <= 7, eval_calls(rc) - before
    # Another address is not affected; the tenant's cached key still works.
    assert [s for s, _, _ in flood(gw.port, "127.0.0.2", [random_key()])] == [401]
    assert gw.chat(p).status_code == 200
    assert not fake_provider.requests("/openrouter")
    gw.assert_no_leaks()


def test_i10_14_negative_entries_never_evict_tenants(gateway, fake_provider, redis_server):
    # A small zone: its unknown-key budget (and, before, the whole zone) is
    # smaller than the flood. The flood comes from many addresses, so the
    # per-address limit alone does not stop it.
    gw = gateway(overrides={"byok_cache": "byok_cache zone=byok:256k ttl=300s stale=15m;"})
    tenants = [gw.provision(keys={"openai": None}) for _ in range(3)]
    for t in tenants:
        assert gw.chat(t).status_code == 200
    rc = redis_server.client
    statuses = []

    def one(i):
        statuses.extend(s for s, _, _ in flood(gw.port, f"127.0.{1 + i // 200}.{1 + i % 200}",
                                               [random_key() for _ in range(21)]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(120)]
    for i in range(0, len(threads), 8):
        batch = threads[i:i + 8]
        for t in batch:
            t.start()
        for t in batch:
            t.join(120)
    assert statuses.count(401) >= 2000, (statuses.count(401), statuses.count(429))
    # Counted by the gateway, not by Redis's EVAL count: the tenants' usage
    # events go out in a batch script of their own at any moment.
    hits, misses = cache_counts(gw)
    for t in tenants:
        assert gw.chat(t).status_code == 200
    assert cache_counts(gw) == (hits + len(tenants), misses), \
        "a tenant's cache entry was evicted by the flood"
