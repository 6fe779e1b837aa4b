"""Issue 13, limits at the edge: PATCH /projects/{pid} limits (validated,
shown, audited, removable), refusal before any upstream call with 429,
Retry-After and x-byok-limit-* headers, scope operator vs all, enforcement
across two nginx nodes sharing one Redis (local counters synced once a
second), and the 80 %/100 % budget alerts (audit entry + metric, once)."""

import json
import time

import pytest

from harness import metric_value, providers_yaml, until

# Every chat answer of the fake provider reports 1 prompt + 3 completion
# tokens unless a rule says otherwise.
USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
TOKENS = 19
# OpenRouter (the operator's fallback) priced at 1000 $ / 2000 $ per 1M
# tokens: 12 * 1000 + 7 * 2000 = 26000 micro-dollars per answer.
COST_MICRO = 26000


def answer(model="openai/gpt-4o-mini"):
    return {"id": "c1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": USAGE}


def priced_catalog(base: str) -> str:
    # openrouter is the catalog's last provider: its pricing goes at the end.
    return providers_yaml(base) + '    pricing:\n      "*": { input: 1000, output: 2000 }\n'


@pytest.fixture
def lgw(gateway, fake_provider):
    return gateway(providers=priced_catalog(fake_provider.base))


def set_limits(gw, pid, limits, status=200):
    r = gw.admin("PATCH", f"/projects/{pid}", {"limits": limits})
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()


def not_near_minute_end():
    """requests_per_minute counts per UTC minute: start a test that needs
    one minute well inside it (waits at most 12 s, decides nothing)."""
    if time.gmtime().tm_sec >= 48:
        time.sleep(61 - time.gmtime().tm_sec)


def assert_limit_refusal(r, exceeded):
    assert r.status_code == 429, (r.status_code, r.text)
    body = r.json()
    assert body["error"]["type"] == "rate_limit_error", body
    assert body["error"]["code"] == "project_limit_exceeded", body
    assert exceeded in body["error"]["message"], body
    assert r.headers["x-byok-limit-exceeded"] == exceeded, dict(r.headers)
    assert int(r.headers["Retry-After"]) >= 1, dict(r.headers)
    assert r.headers["x-byok-route"] == "denied", dict(r.headers)


def spend_until_refused(gw, p, model="gpt-4o-mini", most=20, **kw):
    """Sends requests until the gateway refuses one; returns (admitted, 429)."""
    admitted = []

    def fetch():
        r = gw.chat(p, model=model, **kw)
        if r.status_code != 429:
            assert r.status_code == 200, (r.status_code, r.text)
            admitted.append(r)
            assert len(admitted) <= most, "never refused"
        return r

    refused = until(fetch, lambda r: r.status_code == 429, timeout=30, interval=0.05,
                    what="a refusal")
    return admitted, refused


# -- 1. the admin API ------------------------------------------------------------

def test_i13_01_patch_limits_validated_shown_audited_and_removed(lgw, redis_server):
    p = lgw.provision(keys={})
    body = set_limits(lgw, p.pid, {"requests_per_minute": 60, "tokens_per_day": 100000,
                                   "cost_per_month_usd": 12.5})
    want = {"requests_per_minute": 60, "tokens_per_day": 100000, "cost_per_month_usd": 12.5,
            "scope": "operator"}
    assert body["limits"] == want
    got = lgw.admin("GET", f"/projects/{p.pid}").json()
    assert got["limits"] == want
    listed = [x for x in lgw.admin("GET", "/projects").json() if x["id"] == p.pid]
    assert listed[0]["limits"] == want

    bad = [
        ({"rpm": 1}, "limits.rpm: unknown field"),
        ({"tokens_per_day": -1}, "limits.tokens_per_day: must be >= 0"),
        ({"requests_per_minute": 1.5}, "limits.requests_per_minute: expected a whole number"),
        ({"requests_per_minute": "10"}, "limits.requests_per_minute: expected a whole number"),
        ({"cost_per_month_usd": 0.0000001}, "limits.cost_per_month_usd"),
        ({"scope": "everyone"}, 'limits.scope: expected "operator" or "all"'),
        ([1, 2], "limits: expected an object"),
        ("all", "limits: expected an object"),
    ]
    for limits, message in bad:
        r = lgw.admin("PATCH", f"/projects/{p.pid}", {"limits": limits})
        assert r.status_code == 400, (limits, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_limits", r.text
        assert message in r.json()["error"]["message"], (limits, r.text)
    # Refused changes left the limits alone.
    assert lgw.admin("GET", f"/projects/{p.pid}").json()["limits"] == want

    # A tenant (its own gateway key) may not lift its limits.
    r = lgw.admin("PATCH", f"/projects/{p.pid}", {"limits": None},
                  headers={"Authorization": f"Bearer {p.gateway_key}"}, token=False)
    assert r.status_code == 403, (r.status_code, r.text)
    assert lgw.admin("GET", f"/projects/{p.pid}").json()["limits"] == want

    # Replaced as a whole; a null or 0 limit is no limit; null removes all.
    body = set_limits(lgw, p.pid, {"tokens_per_day": None, "requests_per_minute": 0,
                                   "cost_per_month_usd": "0.25", "scope": "all"})
    assert body["limits"] == {"cost_per_month_usd": 0.25, "scope": "all"}
    assert set_limits(lgw, p.pid, None)["limits"] is None
    assert lgw.admin("GET", f"/projects/{p.pid}").json()["limits"] is None

    audit = lgw.admin("GET", f"/audit?project={p.pid}&limit=10").json()
    updates = [e for e in audit if e["action"] == "project.update"]
    assert len(updates) == 3, audit  # the three accepted PATCHes, not the refused ones
    assert all(e["actor"].startswith("admin:") for e in updates), updates

    # Without limits the gateway sends no limit headers.
    r = lgw.chat(p)
    assert r.status_code == 200, r.text
    assert not [h for h in r.headers if h.lower().startswith("x-byok-limit")], dict(r.headers)


# -- 2. enforcement --------------------------------------------------------------

def test_i13_02_requests_per_minute_refuses_before_upstream(lgw, fake_provider):
    p = lgw.provision(keys={})  # no key: fallback on the operator's key
    set_limits(lgw, p.pid, {"requests_per_minute": 2})
    not_near_minute_end()
    remaining = []
    for _ in range(2):
        r = lgw.chat(p)
        assert r.status_code == 200, r.text
        assert r.headers["x-byok-route"] == "fallback"
        remaining.append(r.headers["x-byok-limit-requests-remaining"])
        assert "x-byok-limit-exceeded" not in r.headers
    assert remaining == ["1", "0"]
    upstream = len(fake_provider.requests("/openrouter"))
    r = lgw.chat(p)
    assert_limit_refusal(r, "requests_per_minute")
    assert r.headers["x-byok-limit-requests-remaining"] == "0"
    assert int(r.headers["Retry-After"]) <= 60
    assert len(fake_provider.requests("/openrouter")) == upstream, "the provider was called"
    lgw.assert_no_leaks(r)


def test_i13_02_tokens_per_day_refuses_in_the_native_error_shape(lgw, fake_provider):
    fake_provider.set_rule("/anthropic", body={
        "id": "m1", "type": "message", "role": "assistant", "model": "claude-3-haiku",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {"input_tokens": 12, "output_tokens": 7}})
    p = lgw.provision(keys={"anthropic": None})
    set_limits(lgw, p.pid, {"tokens_per_day": 30, "scope": "all"})
    body = {"model": "claude-3-haiku", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": p.gateway_key, "anthropic-version": "2023-06-01"}

    def send():
        return lgw.request("POST", "/anthropic/v1/messages", headers=headers, json=body)

    first = send()
    assert first.status_code == 200, first.text
    assert first.headers["x-byok-route"] == "byok"  # scope all: own keys count too
    assert first.headers["x-byok-limit-tokens-remaining"] == "30"
    # Tokens are known when a response ends: a bounded poll, not a timing.
    admitted = [first]

    def fetch():
        r = send()
        if r.status_code == 200:
            admitted.append(r)
        return r

    r = until(fetch, lambda r: r.status_code == 429, timeout=20, what="the tokens refusal")
    assert len(admitted) in (2, 3), len(admitted)  # 19 + 19 >= 30
    assert admitted[1].headers["x-byok-limit-tokens-remaining"] == "11"
    assert r.json()["type"] == "error", r.text
    assert r.json()["error"]["type"] == "rate_limit_error", r.text
    assert "tokens_per_day" in r.json()["error"]["message"]
    assert r.headers["x-byok-limit-exceeded"] == "tokens_per_day"
    assert r.headers["x-byok-limit-tokens-remaining"] == "0"
    # Retry-After: seconds to the next UTC midnight.
    assert 1 <= int(r.headers["Retry-After"]) <= 86400
    lgw.track(p.keys["anthropic"])
    lgw.assert_no_leaks(r, *admitted)


def test_i13_02_cost_per_month_refuses(lgw, fake_provider):
    fake_provider.set_rule("/openrouter", body=answer())
    p = lgw.provision(keys={})
    set_limits(lgw, p.pid, {"cost_per_month_usd": 0.05})
    admitted, r = spend_until_refused(lgw, p)
    assert len(admitted) in (2, 3), len(admitted)  # 2 * 0.026 >= 0.05
    assert admitted[0].headers["x-byok-limit-cost-remaining-usd"] == "0.050000"
    assert admitted[1].headers["x-byok-limit-cost-remaining-usd"] == "0.024000"
    assert_limit_refusal(r, "cost_per_month_usd")
    assert r.headers["x-byok-limit-cost-remaining-usd"] == "0.000000"
    assert int(r.headers["Retry-After"]) <= 31 * 86400
    lgw.assert_no_leaks(r)


def test_i13_02_scope_operator_counts_only_operator_keys_scope_all_counts_all(lgw,
                                                                               fake_provider):
    p = lgw.provision(keys={"openai": None})
    set_limits(lgw, p.pid, {"requests_per_minute": 1})
    not_near_minute_end()
    for _ in range(3):  # the project's own key: never counted under scope operator
        r = lgw.chat(p, model="gpt-4o")
        assert r.status_code == 200, r.text
        assert r.headers["x-byok-route"] == "byok"
        assert r.headers["x-byok-limit-requests-remaining"] == "1"
    # The operator's key (an unmatched model goes to OpenRouter): counted.
    r = lgw.chat(p, model="llama-3-70b-instruct")
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "system"
    assert r.headers["x-byok-limit-requests-remaining"] == "0"
    r = lgw.chat(p, model="llama-3-70b-instruct")
    assert_limit_refusal(r, "requests_per_minute")
    r = lgw.chat(p, model="gpt-4o")
    assert r.status_code == 200, r.text  # own key still free

    set_limits(lgw, p.pid, {"requests_per_minute": 1, "scope": "all"})
    r = until(lambda: lgw.chat(p, model="gpt-4o"), lambda r: r.status_code != 200,
              timeout=10, what="the new scope to apply")  # invalidation is asynchronous
    assert_limit_refusal(r, "requests_per_minute")
    lgw.track(p.keys["openai"])
    lgw.assert_no_leaks(r)


def test_i13_02_fallback_after_a_failed_own_key_is_limited(lgw, fake_provider):
    p = lgw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 503)
    set_limits(lgw, p.pid, {"requests_per_minute": 1})
    not_near_minute_end()
    r = lgw.chat(p, model="gpt-4o")
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "fallback", dict(r.headers)
    assert r.headers["x-byok-limit-requests-remaining"] == "0"
    fallbacks = len(fake_provider.requests("/openrouter"))
    # The own key is tried again (not counted), the fallback is refused.
    r = lgw.chat(p, model="gpt-4o")
    assert_limit_refusal(r, "requests_per_minute")
    assert len(fake_provider.requests("/openrouter")) == fallbacks
    lgw.track(p.keys["openai"])
    lgw.assert_no_leaks(r)


def test_i13_02_second_node_refuses_within_a_sync_of_the_budget_spent(gateway, fake_provider,
                                                                       redis_server):
    fake_provider.set_rule("/openrouter", body=answer())
    node1 = gateway(providers=priced_catalog(fake_provider.base))
    node2 = gateway(providers=priced_catalog(fake_provider.base))
    p = node1.provision(keys={})
    set_limits(node1, p.pid, {"tokens_per_day": 50})
    # Node 2 has served the project before (it knows the project's limits).
    r = node2.chat(p)
    assert r.status_code == 200, r.text
    admitted, refused = spend_until_refused(node1, p)
    assert_limit_refusal(refused, "tokens_per_day")
    # Node 2 learns node 1's spending from Redis at its next sync (<= 1 s).
    # It may admit what arrives before that sync: poll, bounded.
    on_node2 = []

    def fetch():
        r = node2.chat(p)
        if r.status_code == 200:
            on_node2.append(r)
        return r

    r = until(fetch, lambda r: r.status_code == 429, timeout=15, interval=0.2,
              what="node 2 to refuse")
    assert_limit_refusal(r, "tokens_per_day")
    assert len(on_node2) <= 10, len(on_node2)  # at most about one sync interval of traffic
    day = time.strftime("%Y%m%d", time.gmtime())
    key = f"byok:{{{p.pid}}}:limit:tokens:{day}"
    total = until(lambda: int(redis_server.client.get(key) or 0),
                  lambda v: v >= TOKENS * (1 + len(admitted) + len(on_node2)), timeout=10,
                  what="every node's tokens in Redis")
    assert total == TOKENS * (1 + len(admitted) + len(on_node2))
    assert 0 < redis_server.client.ttl(key) <= 2 * 86400
    node1.assert_no_leaks(refused)
    node2.assert_no_leaks(r)


# -- 3. alerts ---------------------------------------------------------------------

def test_i13_03_budget_alerts_once_per_threshold(gateway, fake_provider, redis_server):
    fake_provider.set_rule("/openrouter", body=answer())
    node1 = gateway(providers=priced_catalog(fake_provider.base))
    node2 = gateway(providers=priced_catalog(fake_provider.base))
    p = node1.provision(keys={})
    set_limits(node1, p.pid, {"tokens_per_day": 100})  # 19 per answer: 80 % at 5, 100 % at 6
    spend_until_refused(node1, p)
    spend_until_refused(node2, p)

    def alerts():
        entries = node1.admin("GET", f"/audit?project={p.pid}&limit=50").json()
        return [e for e in entries if e["action"] == "limit.alert"]

    got = until(alerts, lambda a: len(a) >= 2, timeout=15, what="two alert entries")
    assert sorted(e["target"] for e in got) == ["tokens_per_day:100", "tokens_per_day:80"]
    assert all(e["actor"] == "gateway" and e["project"] == p.pid for e in got), got
    # More traffic and more syncs: refused requests spend nothing, so no
    # further alert. Wait for a few more syncs to have happened on both nodes.
    for gw in (node1, node2):
        for _ in range(3):
            assert gw.chat(p).status_code == 429
    time.sleep(2.5)
    assert len(alerts()) == 2, alerts()
    total = 0.0
    for level in ("80", "100"):
        sample = f'byok_limit_alerts_total{{limit="tokens_per_day",level="{level}"}}'
        n = metric_value(node1.metrics(), sample) + metric_value(node2.metrics(), sample)
        assert n == 1, (level, n)
        total += n
    assert total == 2
    node1.assert_no_leaks()
    node2.assert_no_leaks()
    redis_server.assert_absent(node1.secrets | node2.secrets)


# -- 4. stretch: include_usage for bodies of any size held in memory -------------

def sse_stream(with_usage: bool, model="gpt-4o") -> bytes:
    events = [{"id": "c", "object": "chat.completion.chunk", "model": model,
               "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}]} for i in range(3)]
    if with_usage:
        events.append({"id": "c", "object": "chat.completion.chunk", "model": model,
                       "choices": [], "usage": USAGE})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + \
        b"data: [DONE]\n\n"


@pytest.mark.parametrize("size_kib,own_key", [(300, True), (300, False), (70, True)])
def test_i13_04_include_usage_injected_into_bodies_over_64_kib(lgw, fake_provider, size_kib,
                                                               own_key):
    p = lgw.provision(keys={"openai": None} if own_key else {})
    prefix = "/openai/chat/completions" if own_key else "/openrouter/chat/completions"
    fake_provider.pieces(prefix, [sse_stream(True)])
    body = {"model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": "x" * (size_kib * 1024)}]}
    r = lgw.chat(p, body=body)
    assert r.status_code == 200, r.text[:300]
    sent = fake_provider.last(prefix.split("/chat")[0]).json()
    assert sent["stream_options"] == {"include_usage": True}
    want = dict(body)
    if not own_key:  # the fallback also rewrote the model (a spliced body)
        assert sent["model"] == "openai/gpt-4o"
        want["model"] = "openai/gpt-4o"
    assert {k: v for k, v in sent.items() if k != "stream_options"} == want
    assert r.content == sse_stream(False), r.content[-300:]
    if own_key:
        lgw.track(p.keys["openai"])
    lgw.assert_no_leaks(r)


def test_i13_04_body_over_the_memory_buffer_stays_intact(lgw, fake_provider):
    p = lgw.provision(keys={"openai": None})
    fake_provider.pieces("/openai/chat/completions", [sse_stream(False)])
    # Over client_body_buffer_size (1m in conf/byok_gateway.conf): nginx keeps
    # it in its temp file. The insert goes in when the buffer at the insert
    # point is in memory, else the body is left alone; either way intact.
    body = {"model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": "x" * (1200 * 1024)}]}
    r = lgw.chat(p, body=body)
    assert r.status_code == 200, r.text[:300]
    sent = fake_provider.last("/openai").json()
    assert sent.get("stream_options", {"include_usage": True}) == {"include_usage": True}
    assert {k: v for k, v in sent.items() if k != "stream_options"} == body
    assert r.content == sse_stream(False)


def test_i13_04_include_usage_inserted_once_after_a_fallback_retry(lgw, fake_provider):
    p = lgw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 503)
    fake_provider.pieces("/openrouter/chat/completions", [sse_stream(True)])
    body = {"model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": "y" * (200 * 1024)}]}
    r = lgw.chat(p, body=body)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["x-byok-route"] == "fallback"
    first = fake_provider.last("/openai").body.decode()
    assert first.count('"stream_options"') == 1, first[:200]
    sent = fake_provider.last("/openrouter").body.decode()
    assert sent.count('"stream_options"') == 1, sent[:200]
    assert json.loads(sent)["model"] == "openai/gpt-4o"
    assert r.content == sse_stream(False)
    lgw.track(p.keys["openai"])
    lgw.assert_no_leaks(r)
