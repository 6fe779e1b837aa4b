"""Issue 18 (s5-meter), item 3: a graceful stop (`nginx -s quit`) or a reload
(HUP) loses none of the worker's last second of usage. The counters and
events are summed in the worker and flushed once a second; on the old code a
stopping worker exited without that last flush (its flush timer is
cancelable and was not re-armed once ngx_exiting was set), so requests
answered just before the signal were never counted. Now the stop is heard
at once (ngx_close_idle_connections calls the worker's idle watch
connection) and the worker flushes and waits, bounded, for Redis to answer.
Outcomes only — Redis contents after the stop — never time."""
import redis

from harness import wait_until

N = 25
MODEL = "gpt-4o-i18meter2"


def client(redis_server):
    return redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5)


def counted(redis_server, pid):
    """(request counters, token-meter request counters, usage events) of pid."""
    r = client(redis_server)
    usage = meter = 0
    for key in r.scan_iter(match=f"*{pid}*usage:*", count=1000):
        usage += sum(int(v) for v in r.hgetall(key).values())
    for key in r.scan_iter(match=f"*{pid}*meter:*", count=1000):
        for field, value in r.hgetall(key).items():
            if field.startswith(b"m|requests|"):
                meter += int(value)
    events = []
    for key in r.scan_iter(match="*usage:events", count=1000):
        for _, fields in r.xrange(key):
            ev = {k.decode(): v.decode() for k, v in fields.items()}
            if ev.get("project") == pid:
                events.append(ev)
    return usage, meter, events


def serve(gw, p):
    for i in range(N):
        r = gw.chat(p, model=f"{MODEL}-{i}")
        assert (r.status_code, r.headers.get("x-byok-route")) == (200, "byok"), r.text


def assert_all_counted(gw, redis_server, p):
    usage, meter, events = counted(redis_server, p.pid)
    assert (usage, meter, len(events)) == (N, N, N), (usage, meter, len(events))
    assert sorted(int(e["model"].rsplit("-", 1)[1]) for e in events) == list(range(N))
    assert len({e["request_id"] for e in events}) == N
    # The event's fields, in the order README "Usage metering" lists them.
    assert list(events[0]) == ["request_id", "ts_ms", "project", "provider", "model", "route",
                               "key_id", "status", "latency_ms", "tokens_known", "input_tokens",
                               "output_tokens", "cached_tokens", "cost_micro_usd",
                               "fallback_reason"]
    assert events[0]["fallback_reason"] == ""  # empty values kept
    log = gw.error_log()
    assert "open socket" not in log, log[-2000:]
    gw.assert_no_leaks(repr(events), metrics=False)


def test_i18_meter2_01_quit_right_after_requests_loses_no_usage(gateway, fake_provider,
                                                                redis_server):
    gw = gateway(worker_processes=1)
    p = gw.provision()
    serve(gw, p)
    gw.stop()  # SIGQUIT at once, waits for the master to exit
    assert_all_counted(gw, redis_server, p)


def test_i18_meter2_02_reload_right_after_requests_loses_no_usage(gateway, fake_provider,
                                                                  redis_server):
    gw = gateway(worker_processes=1)
    p = gw.provision()
    serve(gw, p)
    old = set(gw.workers())
    gw.reload()  # HUP; returns once new workers replaced the old ones
    wait_until(lambda: not (set(gw.workers()) & old), timeout=30,
               what="the old worker to exit")
    # The new worker's own flush cannot hold these (it served none of them):
    # whatever is in Redis came from the old worker before it exited.
    wait_until(lambda: len(counted(redis_server, p.pid)[2]) >= N, timeout=30,
               what="the old worker's usage events")
    assert_all_counted(gw, redis_server, p)


def test_i18_meter2_03_quit_with_redis_down_does_not_hang(gateway, fake_provider, redis_server):
    """Bounded: with Redis unavailable the stopping worker does not wait for
    it (the counts wait in memory as during any outage and die with the
    worker); the stop completes (the harness's bounded wait would SIGKILL
    and the fixture report it otherwise)."""
    gw = gateway(worker_processes=1)
    p = gw.provision()
    assert gw.chat(p).status_code == 200  # the gateway key is cached from here on
    redis_server.stop()
    try:
        serve(gw, p)
        proc = gw.proc
        gw.stop()
        assert proc.returncode == 0, proc.returncode  # not killed
    finally:
        redis_server.start()
