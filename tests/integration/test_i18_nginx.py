"""Issue 18, session 4: what the module costs nginx around the route
decision. The move to a named location (@byok_direct, @byok_keys, ...)
switches the request's configuration in place instead of restarting it at
the rewrite phase; the gateway ctx is reused storage, not 2 KB of the
request pool, whose first block (request_pool_size 16k in
byok_gateway.conf) then holds the whole request; the upstream target is
written once into the pool and handed to proxy_pass without copies.
Behaviour stays the same."""
import harness


def test_i18_nginx_01_the_named_location_applies_its_own_proxy_settings(gw, fake_provider):
    """fallback "off": the attempt moves to @byok_direct in place (no second
    pass through the rewrite and access phases), and that location's proxy
    settings apply: it does not intercept errors, so the provider's own 429,
    body and Retry-After reach the client, with the x-byok-* headers."""
    p = gw.provision(fallback="off", keys={"openai": None})
    ok = gw.chat(p)
    assert ok.status_code == 200 and ok.headers["x-byok-route"] == "byok", ok.text[:300]
    fake_provider.set_rule("/openai", 429, {"error": {"message": "the provider's own"}},
                           headers={"Retry-After": "7"})
    r = gw.chat(p)
    assert r.status_code == 429 and "the provider's own" in r.text, r.text[:300]
    assert r.headers["retry-after"] == "7"
    assert r.headers["x-byok-route"] == "byok" and r.headers["x-byok-provider"] == "openai"
    assert fake_provider.requests("/openrouter") == []
    gw.assert_no_leaks(ok, r)


def test_i18_nginx_02_upstream_variables_name_the_last_attempt(gateway, fake_provider, tmp_path):
    """$byok_upstream* are pool bytes handed over without a copy: a value
    read at log time, after a fallback replaced the target, is the
    fallback's, whole."""
    log = tmp_path / "upstream.log"
    gw = gateway(extra_http=("log_format byok_up '$byok_upstream $byok_upstream_host';\n"
                             f"    access_log {log} byok_up;"))
    p = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 503)
    r = gw.chat(p)
    assert r.status_code == 200 and r.headers["x-byok-route"] == "fallback", r.text[:300]
    def gateway_lines():  # the admin requests of provision() log "- -"
        return [l for l in log.read_text().splitlines() if l.startswith("http")]

    harness.wait_until(gateway_lines, timeout=5, what="the gateway request's log line")
    (line,) = gateway_lines()
    url, host = line.split(" ")
    assert "/openrouter/" in url and url.endswith("/chat/completions"), url
    assert url.startswith("http://") and host in url, (url, host)
    gw.assert_no_leaks(r, log.read_text())
