"""Issue 18, session 7 (s7-meter): the metering side of the cache-hit path is
cheaper and counts the same. A request adds to the row the previous request
added to without a lookup when the row's fields are the same; /metrics makes
only the shared-memory adds that change a counter and derives the latency
histogram's count from its buckets. Outcomes only (Redis, /metrics), never
time."""
import time
from collections import Counter

from harness import metric_value, until

STREAM = "byok:usage:events"


def chat_ok(gw, key, model):
    r = gw.chat(key, model=model)
    assert (r.status_code, r.headers.get("x-byok-route")) == (200, "byok"), r.text[:300]


def test_i18_meter4_01_rows_interleaved_and_across_flushes_count_exactly(gw, fake_provider,
                                                                        redis_server):
    """The remembered row must be the request's own row: requests alternate
    between rows (model, gateway key) one by one, repeat a row, and go on
    after the flush round took the table (the remembered row went with it).
    Every row, the request counter and the events count each request once."""
    p = gw.provision()
    key2, key2_id = gw.mint_key(p.pid, "second")
    seq = [(p.gateway_key, "gpt-4o"), (p.gateway_key, "gpt-4o"), (key2, "gpt-4o"),
           (p.gateway_key, "gpt-4o-mini"), (p.gateway_key, "gpt-4o"), (key2, "gpt-4o-mini"),
           (key2, "gpt-4o-mini"), (p.gateway_key, "gpt-4o-mini")]
    rc = redis_server.client

    def meter():
        keys = list(rc.scan_iter(match=f"byok:{{{p.pid}}}:meter:*"))
        return rc.hgetall(keys[0]) if keys else {}

    for rnd in (1, 2, 3):
        for key, model in seq:
            chat_ok(gw, key, model)
        n = rnd * len(seq)
        # the flush has sent this round's rows (once a second)
        until(meter, lambda h: h.get(f"k|requests|{key2_id}") == str(rnd * 3), timeout=15,
              what=f"round {rnd} flushed")
        h = until(meter, lambda h: h.get(f"k|requests|{p.gateway_key_id}") == str(rnd * 5),
                  timeout=15, what=f"round {rnd} flushed")
        assert h["m|requests|openai|byok|gpt-4o"] == str(rnd * 4), h
        assert h["m|requests|openai|byok|gpt-4o-mini"] == str(rnd * 4), h
        # the fake provider's usage: 1 prompt and 3 completion tokens
        assert h["m|input_tokens|openai|byok|gpt-4o"] == str(rnd * 4), h
        assert h["m|output_tokens|openai|byok|gpt-4o-mini"] == str(rnd * 12), h
        day = until(lambda: list(rc.scan_iter(match=f"byok:{{{p.pid}}}:usage:*")),
                    lambda k: len(k) == 1, timeout=15, what="the usage key")[0].rsplit(":", 1)[1]
        until(lambda: rc.hget(f"byok:{{{p.pid}}}:usage:{day}", "openai:byok"),
              lambda v: v == str(n), timeout=15, what=f"{n} requests in the usage counter")
        assert rc.hget(f"byok:meter:{day}", f"{p.pid}|requests") == str(n)
        if rnd < 3:
            time.sleep(1.2)  # past a flush with nothing new: the next round starts on a new table
    events = until(lambda: [f for _, f in rc.xrange(STREAM) if f.get("project") == p.pid],
                   lambda e: len(e) >= 3 * len(seq), timeout=15, what="the events")
    assert len(events) == 3 * len(seq)
    ids = {p.gateway_key: p.gateway_key_id, key2: key2_id}
    # two workers: each sends its own events, so compare them as a multiset
    assert Counter((e["key_id"], e["model"]) for e in events) == \
        Counter((ids[k], m) for k, m in seq * 3)
    gw.assert_no_leaks(repr(events))


def test_i18_meter4_02_metrics_count_the_same_with_fewer_adds(gw, fake_provider):
    """The latency histogram's count is its +Inf bucket (every proxied
    request); token kinds that are 0 add nothing (no `cached` sample until a
    response reports cached tokens), the others count as before."""
    p = gw.provision()
    labels = 'provider="openai",route="byok"'
    samples = ["byok_upstream_latency_seconds_count",
               'byok_upstream_latency_seconds_bucket{le="+Inf"}',
               f'byok_tokens_total{{{labels},kind="input"}}',
               f'byok_tokens_total{{{labels},kind="output"}}',
               f'byok_tokens_total{{{labels},kind="cached"}}',
               f'byok_requests_total{{{labels},status="2xx"}}']
    before = gw.metrics()
    for _ in range(5):
        chat_ok(gw, p, "gpt-4o")
    mid = gw.metrics()
    assert {s: metric_value(mid, s) - metric_value(before, s) for s in samples} == dict(
        zip(samples, [5, 5, 5, 15, 0, 5]))
    assert f'byok_tokens_total{{{labels},kind="cached"}}' not in mid
    assert f"byok_cost_usd_total{{{labels}}}" not in mid  # the test catalog prices nothing

    fake_provider.set_rule("/openai", body={
        "id": "c", "object": "chat.completion", "model": "gpt-4o", "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2,
                  "prompt_tokens_details": {"cached_tokens": 4}}})
    for _ in range(3):
        chat_ok(gw, p, "gpt-4o")
    after = gw.metrics()
    assert {s: metric_value(after, s) - metric_value(mid, s) for s in samples} == dict(
        zip(samples, [3, 3, 30, 6, 12, 3]))
    gw.assert_no_leaks(after)
