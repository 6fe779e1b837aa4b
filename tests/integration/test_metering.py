"""Issue 13: usage metering at the edge — tokens read from provider
responses as they pass (JSON and SSE, usage split across reads), cost from
the catalog's prices, counters in the usage API and stats, the usage event
stream, metrics and log variables, and the include_usage injection that the
client never sees."""

import json

import pytest

from harness import providers_yaml, until

# Test prices: round numbers so costs are exact by hand.
# gpt-4o*: 1000 $ / 1M input = 1000 micro-dollars per token, output 2000,
# cached 500. claude-*: 3 / 15 / 0.3.
PRICING = {
    "openai": '    pricing:\n'
              '      "gpt-4o*": { input: 1000, output: 2000, cached_input: 500 }\n',
    "anthropic": '    pricing:\n'
                 '      "claude-*": { input: 3, output: 15, cached_input: 0.3 }\n',
}

LOG_FORMAT = ("log_format meter 'status=$status project=$byok_project in=$byok_input_tokens "
              "out=$byok_output_tokens cost=$byok_cost_usd';")


def priced_catalog(base: str) -> str:
    text = providers_yaml(base)
    out = []
    provider = None
    for line in text.splitlines(keepends=True):
        out.append(line)
        if line.startswith("  ") and not line.startswith("    ") and line.strip().endswith(":"):
            provider = line.strip()[:-1]
        if line.strip().startswith("models:") and provider in PRICING:
            out.append(PRICING[provider])
    return "".join(out)


@pytest.fixture
def mgw(gateway, fake_provider, tmp_path):
    g = gateway(start=False, providers=priced_catalog(fake_provider.base),
                extra_http=LOG_FORMAT)
    g.extra_server = f"access_log {g.dir / 'logs' / 'meter.log'} meter;"
    g.conf_path.write_text(g.render())
    g.start()
    return g


def usage(gw, pid, **query):
    r = gw.admin("GET", f"/projects/{pid}/usage", params=query)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def wait_usage(gw, pid, requests, **query):
    """The counters are flushed once a second: wait for `requests`."""
    return until(lambda: usage(gw, pid, **query),
                 lambda b: b["totals"]["requests"] >= requests, timeout=10,
                 what=f"{requests} metered requests")


def sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n"
                    for e in events)


def split(data: bytes, n: int):
    return [data[i:i + n] for i in range(0, len(data), n)]


OPENAI_USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                "prompt_tokens_details": {"cached_tokens": 4}}


def openai_json(model="gpt-4o"):
    return {"id": "c1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": 'say "usage": {"prompt_tokens": 999}'},
                         "finish_reason": "stop"}],
            "usage": OPENAI_USAGE}


def openai_stream(with_usage=True):
    events = [{"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o",
               "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}]} for i in range(3)]
    if with_usage:
        events.append({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o",
                       "choices": [], "usage": OPENAI_USAGE})
    return sse(*events, b"[DONE]")


# 8*1000 + 4*500 + 7*2000 micro-dollars
OPENAI_COST = 24000


def test_i13_01_openai_json_usage_counted_exactly_in_usage_api_and_stats(mgw, fake_provider):
    p = mgw.provision(keys={"openai": None})
    fake_provider.set_rule("/openai/chat/completions", body=openai_json())
    for _ in range(2):
        r = mgw.chat(p, model="gpt-4o")
        assert r.status_code == 200, r.text
    b = wait_usage(mgw, p.pid, 2, group_by="model")
    assert b["group_by"] == "model"
    row = b["rows"][0]
    assert (row["model"], row["requests"], row["input_tokens"], row["output_tokens"],
            row["cached_tokens"], row["tokens_unknown"]) == ("gpt-4o", 2, 24, 14, 8, 0)
    assert row["cost_micro_usd"] == 2 * OPENAI_COST
    assert row["cost_usd"] == pytest.approx(0.048)
    assert b["totals"]["requests"] == 2

    s = mgw.admin("GET", f"/projects/{p.pid}/stats").json()
    assert s["usage_30d"]["requests"] == 2
    assert s["usage_30d"]["input_tokens"] == 24
    assert s["savings_30d"]["byok_cost_micro_usd"] == 2 * OPENAI_COST
    assert s["savings_30d"]["operator_cost_micro_usd"] == 0

    by_key = usage(mgw, p.pid, group_by="key")
    assert [(r["key"], r["requests"]) for r in by_key["rows"]] == [(p.gateway_key_id, 2)]
    by_route = usage(mgw, p.pid, group_by="route")
    assert [(r["route"], r["requests"]) for r in by_route["rows"]] == [("byok", 2)]

    # The gateway key reads its own project's usage; /usage is admin-only.
    own = mgw.request("GET", f"/admin/v1/projects/{p.pid}/usage", headers=p.auth)
    assert own.status_code == 200 and own.json()["totals"]["requests"] == 2
    assert mgw.request("GET", "/admin/v1/usage", headers=p.auth).status_code == 403
    ranking = mgw.admin("GET", "/usage").json()
    assert ranking["projects"][0]["project"] == p.pid
    assert ranking["projects"][0]["cost_micro_usd"] == 2 * OPENAI_COST


def test_i13_02_openai_sse_usage_split_across_tiny_reads(mgw, fake_provider):
    """The client asked for usage itself: nothing injected, nothing dropped,
    the usage chunk cut into 3-byte pieces is still read exactly."""
    p = mgw.provision(keys={"openai": None})
    stream = openai_stream()
    fake_provider.pieces("/openai/chat/completions", split(stream, 3))
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}
    r = mgw.chat(p, body=body)
    assert r.status_code == 200
    assert r.content == stream
    assert fake_provider.last("/openai").json() == body
    row = wait_usage(mgw, p.pid, 1)["totals"]
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (12, 7, 4)
    assert row["cost_micro_usd"] == OPENAI_COST


def test_i13_03_anthropic_sse_message_start_and_delta(mgw, fake_provider):
    p = mgw.provision(keys={"anthropic": None})
    events = (
        b"event: message_start\ndata: " + json.dumps(
            {"type": "message_start", "message": {"id": "m", "model": "claude-sonnet-4", "usage": {
                "input_tokens": 25, "cache_read_input_tokens": 5,
                "cache_creation_input_tokens": 0, "output_tokens": 1}}}).encode() + b"\n\n"
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":"
        b"{\"type\":\"text_delta\",\"text\":\"a \\\"usage\\\": {\"}}\n\n"
        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
        b"\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n"
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    fake_provider.pieces("/anthropic/v1/messages", split(events, 7))
    body = {"model": "claude-sonnet-4", "max_tokens": 10, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    r = mgw.request("POST", "/anthropic/v1/messages", json=body, headers=p.auth)
    assert r.status_code == 200
    assert r.content == events
    # Native requests are never changed: no stream_options for Anthropic.
    assert fake_provider.last("/anthropic").json() == body
    row = wait_usage(mgw, p.pid, 1, group_by="provider")["rows"][0]
    # input = 25 + 5 cache reads; (25*3 + 5*0.3 + 15*15) micro-dollars = 301.5 → 302
    assert (row["provider"], row["input_tokens"], row["output_tokens"],
            row["cached_tokens"]) == ("anthropic", 30, 15, 5)
    assert row["cost_micro_usd"] == 302


def test_i13_04_gemini_usage_metadata_json_and_stream(mgw, fake_provider):
    p = mgw.provision(keys={"google": None})
    fake_provider.set_rule("/google/v1beta/models/gemini-2.5-flash:generateContent", body={
        "candidates": [{"content": {"parts": [{"text": "x"}]}}],
        "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 4,
                          "thoughtsTokenCount": 2, "cachedContentTokenCount": 6,
                          "totalTokenCount": 17}})
    streamed = sse({"candidates": [], "usageMetadata": {"promptTokenCount": 9,
                                                        "candidatesTokenCount": 1}},
                   {"candidates": [], "usageMetadata": {"promptTokenCount": 9,
                                                        "candidatesTokenCount": 8}})
    fake_provider.pieces("/google/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                         split(streamed, 5))
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    r = mgw.request("POST", "/google/v1beta/models/gemini-2.5-flash:generateContent",
                    json=body, headers=p.auth)
    assert r.status_code == 200, r.text
    r = mgw.request("POST", "/google/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                    json=body, headers=p.auth)
    assert r.status_code == 200 and r.content == streamed
    t = wait_usage(mgw, p.pid, 2)["totals"]
    # JSON: 11 in, 4 + 2 thoughts out, 6 cached; stream: cumulative, last wins.
    assert (t["input_tokens"], t["output_tokens"], t["cached_tokens"]) == (20, 14, 6)


def test_i13_05_missing_usage_counts_tokens_unknown(mgw, fake_provider):
    p = mgw.provision(keys={"openai": None})
    no_usage = openai_json()
    del no_usage["usage"]
    fake_provider.set_rule("/openai/chat/completions", body=no_usage)
    assert mgw.chat(p, model="gpt-4o").status_code == 200
    t = wait_usage(mgw, p.pid, 1)["totals"]
    assert (t["requests"], t["tokens_unknown"], t["input_tokens"], t["cost_micro_usd"]) == (
        1, 1, 0, 0)
    log = until(lambda: (mgw.dir / "logs" / "meter.log").read_text(),
                lambda s: p.pid in s, what="access log line")
    assert f"project={p.pid} in=- out=- cost=-" in log


def test_i13_06_injected_include_usage_never_reaches_the_client(mgw, fake_provider):
    p = mgw.provision(keys={"openai": None})
    upstream = openai_stream(with_usage=True)
    fake_provider.pieces("/openai/chat/completions", split(upstream, 4))
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = mgw.chat(p, body=body)
    assert r.status_code == 200
    # The provider was asked for usage ...
    sent = fake_provider.last("/openai").json()
    assert sent["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in sent.items() if k != "stream_options"} == body
    # ... and the client got exactly the stream it asked for: no usage chunk.
    assert r.content == openai_stream(with_usage=False)
    assert b"usage" not in r.content
    t = wait_usage(mgw, p.pid, 1)["totals"]
    assert (t["input_tokens"], t["output_tokens"], t["cost_micro_usd"]) == (12, 7, OPENAI_COST)


def test_i13_06b_stream_usage_off_leaves_the_body_alone(gateway, fake_provider):
    g = gateway(providers=priced_catalog(fake_provider.base),
                extra_http="byok_stream_usage off;")
    p = g.provision(keys={"openai": None})
    fake_provider.pieces("/openai/chat/completions", [openai_stream(with_usage=False)])
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = g.chat(p, body=body)
    assert r.status_code == 200 and r.content == openai_stream(with_usage=False)
    assert fake_provider.last("/openai").json() == body
    assert wait_usage(g, p.pid, 1)["totals"]["tokens_unknown"] == 1


def test_i13_07_usage_event_stream_carries_exact_counts_and_no_secret(mgw, fake_provider,
                                                                      redis_server):
    p = mgw.provision(keys={"openai": None})
    fake_provider.set_rule("/openai/chat/completions", body=openai_json())
    r = mgw.chat(p, model="gpt-4o", headers={"x-request-id": "ignored"})
    assert r.status_code == 200
    events = until(lambda: redis_server.client.xrange("byok:usage:events"),
                   lambda e: len(e) >= 1, timeout=10, what="a usage event")
    assert len(events) == 1
    _, fields = events[0]
    ev = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
          for k, v in fields.items()}
    assert ev["project"] == p.pid
    assert (ev["provider"], ev["model"], ev["route"], ev["key_id"]) == (
        "openai", "gpt-4o", "byok", p.gateway_key_id)
    assert (ev["input_tokens"], ev["output_tokens"], ev["cached_tokens"]) == ("12", "7", "4")
    assert ev["cost_micro_usd"] == str(OPENAI_COST)
    assert ev["status"] == "200" and ev["tokens_known"] == "1"
    assert len(ev["request_id"]) == 32
    assert int(ev["latency_ms"]) >= 0 and int(ev["ts_ms"]) > 0
    mgw.assert_no_leaks(json.dumps(ev), extra=[p.gateway_key, *p.keys.values()])


def test_i13_07b_usage_events_off_counts_without_stream_entries(gateway, fake_provider,
                                                                redis_server):
    """byok_usage_events off: tokens and cost are still counted per project,
    but no entry goes to byok:usage:events (operators without a billing
    consumer save the Redis CPU and memory)."""
    g = gateway(providers=priced_catalog(fake_provider.base), extra_http="byok_usage_events off;")
    p = g.provision(keys={"openai": None})
    fake_provider.set_rule("/openai/chat/completions", body=openai_json())
    for _ in range(3):
        assert g.chat(p, model="gpt-4o").status_code == 200
    t = wait_usage(g, p.pid, 3)["totals"]
    assert (t["input_tokens"], t["output_tokens"], t["cost_micro_usd"]) == (36, 21, 3 * OPENAI_COST)
    # The flush that wrote the counters sends a round's events before its rows.
    mine = [e for _, e in redis_server.client.xrange("byok:usage:events")
            if e.get(b"project") == p.pid.encode()]
    assert mine == []


def test_i13_08_metrics_and_log_variables(mgw, fake_provider):
    p = mgw.provision(keys={"openai": None})
    fake_provider.set_rule("/openai/chat/completions", body=openai_json())
    assert mgw.chat(p, model="gpt-4o").status_code == 200
    m = until(mgw.metrics, lambda t: "byok_tokens_total{" in t, what="token metrics")
    assert 'byok_tokens_total{provider="openai",route="byok",kind="input"} 12' in m
    assert 'byok_tokens_total{provider="openai",route="byok",kind="output"} 7' in m
    assert 'byok_tokens_total{provider="openai",route="byok",kind="cached"} 4' in m
    assert 'byok_cost_usd_total{provider="openai",route="byok"} 0.024000' in m
    log = until(lambda: (mgw.dir / "logs" / "meter.log").read_text(),
                lambda s: p.pid in s, what="access log line")
    assert f"status=200 project={p.pid} in=12 out=7 cost=0.024000" in log
    mgw.assert_no_leaks(log, extra=[p.gateway_key, *p.keys.values()])


def test_i13_09_project_delete_removes_its_meter_counters(mgw, fake_provider, redis_server):
    p = mgw.provision(keys={"openai": None})
    assert mgw.chat(p, model="gpt-4o").status_code == 200
    wait_usage(mgw, p.pid, 1)
    pattern = f"byok:{{{p.pid}}}:meter:*"
    assert redis_server.client.keys(pattern)
    assert mgw.admin("DELETE", f"/projects/{p.pid}").status_code == 200
    assert redis_server.client.keys(pattern) == []
