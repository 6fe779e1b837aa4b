"""Issue 18, session 6 (s6-meter): the usage event batch costs Redis less per
event — one XTRIM MAXLEN ~ per batch instead of MAXLEN ~ on every XADD —
and the stream is still capped; the worker's per-request metering record is
cheaper and counts the same. Outcomes only (Redis contents, what Redis was
asked), never time."""
import socket
import time

from harness import until

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


def read_monitor(mon, done, timeout=15):
    """MONITOR lines (bytes) read until done(lines) holds (or the guard ends)."""
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(seen.split(b"\r\n")):
            try:
                chunk = mon.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            seen += chunk
    finally:
        mon.close()
    return seen.split(b"\r\n")


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
