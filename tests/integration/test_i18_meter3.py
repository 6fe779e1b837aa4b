"""Issue 18, session 6 (s6-meter): the usage event batch costs Redis less per
event — one XTRIM MAXLEN ~ per batch instead of MAXLEN ~ on every XADD —
and the stream is still capped; the worker's per-request metering record is
cheaper and counts the same. Outcomes only (Redis contents, what Redis was
asked), never time."""
import socket
import time

from harness import read_monitor, until

STREAM = "byok:usage:events"
CAP = 100000


def hit(gw, project, n=1, **kw):
    for _ in range(n):
        r = gw.chat(project, **kw)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        assert r.headers.get("x-byok-route") == "byok"
    return r


def open_monitor(redis_server):
    mon = socket.create_connection((redis_server.host, redis_server.port), timeout=0.5)
    mon.sendall(b"MONITOR\r\n")
    until(lambda: mon.recv(5), lambda ok: ok == b"+OK\r\n", timeout=5, what="MONITOR on")
    return mon


def test_i18_meter3_01_event_batches_trim_once_and_keep_the_stream_capped(gw, fake_provider,
                                                                          redis_server):
    """Old code: MAXLEN ~ on each of the script's XADDs and no XTRIM. Now the
    XADDs carry only the event and one XTRIM per batch applies the cap: a
    stream over the cap is cut back to it (whole nodes, `~`), and the new
    events are the stream's last entries, field for field."""
    p = gw.provision()
    hit(gw, p, 2)
    r = redis_server.client
    until(lambda: r.xlen(STREAM), lambda n: n >= 2, timeout=10, what="the warm-up events")
    # Over the cap by 500 entries (5 stream nodes of 100).
    r.eval("for i = 1, tonumber(ARGV[1]) do redis.call('XADD', KEYS[1], '*', 'f', 'v') end",
           1, STREAM, CAP + 500)
    first = r.xrange(STREAM, count=1)[0][0]
    assert r.xlen(STREAM) == CAP + 502

    def finished(lines):
        xadds = [ln for ln in lines if b'"XADD"' in ln and STREAM.encode() in ln]
        xtrims = [ln for ln in lines if b'"XTRIM"' in ln and STREAM.encode() in ln]
        return len(xadds) >= 30 and len(xtrims) >= 1 and lines.index(xtrims[-1]) > lines.index(
            xadds[-1])

    mon = open_monitor(redis_server)
    hit(gw, p, 30)
    lines = read_monitor(mon, finished)
    mon.close()
    xadds = [ln for ln in lines if b'"XADD"' in ln and STREAM.encode() in ln]
    xtrims = [ln for ln in lines if b'"XTRIM"' in ln and STREAM.encode() in ln]
    batches = [ln for ln in lines if b'"EVAL"' in ln and STREAM.encode() in ln]
    assert len(xadds) == 30, f"{len(xadds)} events seen"
    assert all(b" lua] " in ln for ln in xadds + xtrims), "added and trimmed by the batch script"
    assert not [ln for ln in xadds if b"MAXLEN" in ln], xadds[0][:300]
    assert xtrims and all(b'"MAXLEN" "~" "100000"' in ln for ln in xtrims), xtrims
    assert len(xtrims) == len(batches), (len(xtrims), len(batches))  # once per batch

    # Capped: the 5 surplus nodes are gone (~: whole nodes only), the oldest
    # entries with them, and the 30 events are the newest entries.
    n = r.xlen(STREAM)
    assert CAP <= n < CAP + 100, n
    assert r.xrange(STREAM, count=1)[0][0] != first
    newest = r.xrevrange(STREAM, count=30)
    events = [dict(fields) for _, fields in newest]  # the client decodes
    assert all(e["project"] == p.pid for e in events)
    assert list(events[0]) == ["request_id", "ts_ms", "project", "provider", "model", "route",
                               "key_id", "status", "latency_ms", "tokens_known", "input_tokens",
                               "output_tokens", "cached_tokens", "cost_micro_usd",
                               "fallback_reason"]
    assert len({e["request_id"] for e in events}) == 30
    gw.assert_no_leaks(repr(events))


def test_i18_meter3_02_one_row_per_request_feeds_every_counter(gw, fake_provider, redis_server):
    """A request now adds to one row (project, provider, route, model,
    gateway key, day) instead of that row plus a second row for the request
    counter; the flush derives the request counter from the rows. Requests
    spread over three models and two gateway keys: the per-route request
    counter (stats `usage`), the token rows per model and per gateway key,
    the global ranking and the events all count every request once."""
    p = gw.provision()
    key2, key2_id = gw.mint_key(p.pid, "second")
    models = {"gpt-4o": 4, "gpt-4o-mini": 3, "o3-mini": 2}
    for model, n in models.items():
        for key in (p.gateway_key, key2):
            for _ in range(n):
                r = gw.chat(key, model=model)
                assert (r.status_code, r.headers.get("x-byok-route")) == (200, "byok"), r.text
    total = 2 * sum(models.values())

    def stats_usage():
        r = gw.admin("GET", f"/projects/{p.pid}/stats")
        assert r.status_code == 200, r.text
        return r.json()["usage"]

    usage = until(stats_usage, lambda u: u.get("openai", {}).get("byok") == total, timeout=15,
                  what=f"{total} requests in stats")
    assert usage == {"openai": {"byok": total, "fallback": 0, "system": 0}}, usage

    rc = redis_server.client
    (usage_key,) = list(rc.scan_iter(match=f"byok:{{{p.pid}}}:usage:*"))
    assert rc.hgetall(usage_key) == {"openai:byok": str(total)}
    (meter_key,) = list(rc.scan_iter(match=f"byok:{{{p.pid}}}:meter:*"))
    meter = until(lambda: rc.hgetall(meter_key),
                  lambda h: h.get(f"k|requests|{key2_id}") == str(total // 2), timeout=15,
                  what="the token rows")
    for model, n in models.items():
        assert meter[f"m|requests|openai|byok|{model}"] == str(2 * n), (model, meter)
    assert meter[f"k|requests|{p.gateway_key_id}"] == str(total // 2)
    day = usage_key.rsplit(":", 1)[1]
    assert rc.hget(f"byok:meter:{day}", f"{p.pid}|requests") == str(total)
    events = until(lambda: [f for _, f in rc.xrange(STREAM) if f.get("project") == p.pid],
                   lambda e: len(e) >= total, timeout=15, what=f"{total} events")
    assert len(events) == total
    assert sorted({e["key_id"] for e in events}) == sorted([p.gateway_key_id, key2_id])
    gw.assert_no_leaks(repr(events), repr(meter))
