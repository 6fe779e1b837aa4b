"""Issue 18 (s4-meter), the metering path: the once-a-second usage flush goes
out in slices (no single event-loop turn expands thousands of counter rows:
the c1 p99 tail) and loses no row; the usage event keeps its fields and a
request id per request. Outcomes only — counters, Redis contents, metrics —
never time."""
import re

import redis

from harness import metric_value, wait_until

ROWS = 300  # distinct models: one counter row each, several slices' worth
MODEL = "gpt-4o-i18meter-"
ROWS_PER_TURN = 64  # ngx_byok_usage.cpp kRowsPerTurn


def client(redis_server):
    return redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5)


def metered_requests(redis_server, pid):
    """Sum of the per-model request counters of `pid` for MODEL* models."""
    r = client(redis_server)
    total = 0
    for key in r.scan_iter(match=f"*{pid}*meter:*", count=1000):
        for field, value in r.hgetall(key).items():
            if field.startswith(b"m|requests|") and MODEL.encode() in field:
                total += int(value)
    return total


def meter_events(redis_server):
    """The usage events of MODEL* requests, as dicts."""
    r = client(redis_server)
    out = []
    for key in r.scan_iter(match="*usage:events", count=1000):
        for _, fields in r.xrange(key):
            ev = {k.decode(): v.decode() for k, v in fields.items()}
            if ev.get("model", "").startswith(MODEL):
                out.append(ev)
    return out


def test_i18_meter_04_flush_goes_out_in_slices_and_loses_no_row(gateway, fake_provider,
                                                                redis_server):
    """Rows pile up while Redis is away (cached requests are still served),
    so the first flush after it returns has ROWS counter rows: on the old
    code one event-loop turn expanded and sent them all. Now a turn sends at
    most ROWS_PER_TURN rows (this worker's gauge on /metrics), the rest on
    the following turns, and every request is counted exactly once."""
    gw = gateway(worker_processes=1)
    p = gw.provision()
    assert gw.chat(p).status_code == 200  # the gateway key is cached from here on
    redis_server.stop()
    try:
        for i in range(ROWS):
            r = gw.chat(p, model=f"{MODEL}{i}")
            assert (r.status_code, r.headers.get("x-byok-route")) == (200, "byok"), r.text
    finally:
        redis_server.start()
    wait_until(lambda: metered_requests(redis_server, p.pid) >= ROWS, timeout=60, interval=0.25,
               what="the piled-up rows to be flushed")
    wait_until(lambda: len(meter_events(redis_server)) >= ROWS, timeout=60, interval=0.25,
               what="the piled-up usage events")
    assert metered_requests(redis_server, p.pid) == ROWS  # no row lost, none twice
    events = meter_events(redis_server)
    assert len(events) == ROWS
    assert sorted(int(e["model"][len(MODEL):]) for e in events) == list(range(ROWS))

    m = gw.metrics()
    assert 0 < metric_value(m, "byok_usage_flush_rows_max_per_turn") <= ROWS_PER_TURN
    assert metric_value(m, "byok_usage_flush_turns_total") >= ROWS / ROWS_PER_TURN

    # The event's fields (README "Usage metering"), a minted request id each.
    for e in events:
        assert set(e) == {"request_id", "ts_ms", "project", "provider", "model", "route",
                          "key_id", "status", "latency_ms", "tokens_known", "input_tokens",
                          "output_tokens", "cached_tokens", "cost_micro_usd", "fallback_reason"}
        assert re.fullmatch(r"[0-9a-f]{32}", e["request_id"]), e["request_id"]
        assert (e["project"], e["provider"], e["route"], e["status"]) == (p.pid, "openai",
                                                                           "byok", "200")
    assert len({e["request_id"] for e in events}) == ROWS
    gw.assert_no_leaks(repr(events), m)
