"""Issue 18, session 6: the access handler's hit path, cheaper. A request
keeps the worker's key-cache entry its snapshot came from, so opening its
key needs no second lookup — and an entry dropped while the request waited
for its body is looked up again, never used. Every credential header is
still stripped whatever its case (one length switch), and the upstream Host
is the provider's authority, port included, without a string per hit."""
import json
import socket
import time

from harness import canary, metric_value, wait_until

HANG_GUARD = 10.0  # only guards against hangs; never decides pass/fail


def _read_answer(s: socket.socket) -> bytes:
    out = b""
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
        head, sep, rest = out.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    if len(rest) >= int(line.split(b":", 1)[1]):
                        return out
    return out


def test_i18_access3_02_a_key_cache_entry_dropped_while_the_body_is_read_is_not_used(
        gateway, fake_provider):
    gw = gateway(worker_processes=1)
    provider_key = canary("sk-test-")
    p = gw.provision(keys={"openai": provider_key})
    for _ in range(3):  # cached: snapshot decoded, key in the worker's arena
        r = gw.chat(p)
        assert r.status_code == 200, r.text
    assert metric_value(gw.metrics(), "byok_cache_entries") >= 1

    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {p.gateway_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=HANG_GUARD) as s:
        # The hit found its snapshot (and the entry) and now waits for the body.
        s.sendall(head + body[:10].encode())
        # The project changes: the zone's entry and the worker's copy go
        # (the worker's arena wipes the key), while the request waits.
        r = gw.admin("PATCH", f"/projects/{p.pid}", {"name": "Renamed while waiting"})
        assert r.status_code == 200, r.text
        wait_until(lambda: metric_value(gw.metrics(), "byok_cache_entries") == 0, HANG_GUARD,
                   what="the project's cache entry to be invalidated")
        s.sendall(body[10:].encode())
        raw = _read_answer(s)
    assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
    # The key was opened again (decrypted), not read from the dropped entry.
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {provider_key}"
    assert gw.chat(p).status_code == 200  # and cached again afterwards
    assert gw.crashes() == []
    gw.assert_no_leaks(raw)


def test_i18_access3_03_every_credential_header_in_any_case_is_stripped(gw, fake_provider):
    p = gw.provision()
    stray = {name: canary("sk-stray-") for name in
             ("X-API-KEY", "Api-Key", "x-Goog-Api-Key", "PROXY-AUTHORIZATION")}
    gw.track(*stray.values())
    headers = dict(stray)
    headers["X-Byok-Provider"] = "openai"
    headers["Content-Language"] = "en"  # 16 bytes, like none of them: forwarded
    headers["X-Request-Trace"] = "t-1"  # the length of x-byok-provider: forwarded
    r = gw.chat(p, headers=headers)
    assert r.status_code == 200, r.text
    got = fake_provider.last("/openai")
    names = [n for n, _ in got.header_list]
    for name in ("x-api-key", "api-key", "x-goog-api-key", "proxy-authorization",
                 "x-byok-provider"):
        assert name not in names, (name, names)
    assert names.count("authorization") == 1
    assert got.headers["authorization"] == f"Bearer {p.keys['openai']}"
    assert got.headers["content-language"] == "en"
    assert got.headers["x-request-trace"] == "t-1"
    for v in stray.values():
        assert v not in got.raw_text()
    gw.assert_no_leaks(r)


def test_i18_access3_03_the_upstream_host_is_the_providers_authority(gw, fake_provider):
    p = gw.provision()
    for _ in range(2):  # the same on a hit as on the first request
        r = gw.chat(p)
        assert r.status_code == 200, r.text
        host = fake_provider.last("/openai").headers["host"]
        # the test catalog points at the fake provider on a loopback port
        assert host == f"127.0.0.1:{fake_provider.port}", host
