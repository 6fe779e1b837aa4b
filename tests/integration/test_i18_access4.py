"""Issue 18, session 7 (the access side of the cache-hit path): the retry
location chosen without building retry decisions, the key hint as a view of
the cached snapshot, the one lookup of the request headers the gateway reads
or strips, and the key cache's reused key block."""

from harness import canary, wait_until

HANG_GUARD = 10.0  # only guards against hangs; never decides pass/fail


def add_key(gw, pid, provider="openai"):
    key = canary("sk-test-")
    r = gw.admin("POST", f"/projects/{pid}/keys/{provider}", {"key": key})
    assert r.status_code == 201, r.text
    gw.track(key)
    return key


def test_i18_access4_01_what_is_retried_follows_the_project_and_the_client(gw, fake_provider):
    """retry_on: a 429 and a 5xx fall back by default; with
    fallback_on_rate_limit off only the 5xx does; a client that retries by
    itself gets the provider's answer. A fresh project each time: a failed
    key's health would change the next route."""
    cases = [  # (status, fallback_on_rate_limit, client retrying, answer)
        (429, True, False, "fallback"),
        (503, True, False, "fallback"),
        (429, False, False, 429),
        (503, False, False, "fallback"),
        (503, True, True, 503),
        (429, True, True, 429),
    ]
    for status, on_rate_limit, retrying, want in cases:
        p = gw.provision()
        if not on_rate_limit:
            r = gw.admin("PATCH", f"/projects/{p.pid}", {"fallback_on_rate_limit": False})
            assert r.status_code == 200, r.text
        fake_provider.reset()
        fake_provider.fail("/openai", status)
        r = gw.chat(p, headers={"X-Stainless-Retry-Count": "1"} if retrying else None)
        case = (status, on_rate_limit, retrying)
        if want == "fallback":
            assert r.status_code == 200, (case, r.text)
            assert r.headers["x-byok-route"] == "fallback", case
            assert r.headers["x-byok-fallback-reason"] == f"upstream_{status}", case
            assert len(fake_provider.requests("/openrouter")) == 1, case
        else:
            assert r.status_code == want, (case, r.text)
            assert fake_provider.requests("/openrouter") == [], case
        assert len(fake_provider.requests("/openai")) == 1, case
        gw.assert_no_leaks(r)


def test_i18_access4_02_key_hint_is_the_serving_keys_on_every_hit(gw, fake_provider):
    """$byok_key_hint (a view of the cached snapshot): the key that served,
    on repeated cache hits and after a retry on the sibling key."""
    p = gw.provision(keys={})
    bad, good = add_key(gw, p.pid), add_key(gw, p.pid)
    fake_provider.key_rule(bad, 401, {"error": {"message": "bad key"}})
    for _ in range(6):
        r = gw.chat(p)
        assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", r.text
    wait_until(lambda: gw.access_log().count(f"key=sk-...{good[-4:]}") >= 6, HANG_GUARD,
               what="six access-log lines")
    assert f"key=sk-...{bad[-4:]}" not in gw.access_log(), "the refused key's hint was logged"
    assert fake_provider.used_keys("/openai").count(bad) <= 1
    assert fake_provider.used_keys("/openai").count(good) == 6
    gw.assert_no_leaks(r)


def test_i18_access4_03_read_and_stripped_headers_in_any_case(gw, fake_provider):
    """request_header: the provider choice, the body's type and the retry
    count are read in any case; credentials and x-byok-provider never reach
    the provider, other headers of the same lengths do."""
    p = gw.provision(keys={"openai": None, "anthropic": None})
    stray = canary("sk-stray-")
    gw.track(stray)
    r = gw.chat(p, model="gpt-4o", headers={
        "X-BYOK-PROVIDER": "anthropic",      # read: the header beats the model glob
        "X-API-KEY": stray,                  # stripped; the provider's own is added
        "Accept-Language": "en",             # 15 bytes like x-byok-provider: forwarded
        "X-Stainless-Retry-Count": "0",      # read, and forwarded
        "Content-Lengthy": "x",              # 15 bytes: forwarded
    })
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "byok"
    got = fake_provider.last("/anthropic")
    names = [n for n, _ in got.header_list]
    assert "x-byok-provider" not in names and "authorization" not in names, names
    assert names.count("x-api-key") == 1, names
    assert got.headers["x-api-key"] == p.keys["anthropic"]
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["accept-language"] == "en"
    assert got.headers["content-lengthy"] == "x"
    assert got.headers["x-stainless-retry-count"] == "0"
    assert stray not in got.raw_text()
    gw.assert_no_leaks(r)


def test_i18_access4_04_cached_keys_are_right_for_interleaved_projects(gw, fake_provider):
    """The worker's one key block moves between requests: each request of
    two projects alternating on the same worker sends its own key."""
    a, b = gw.provision(), gw.provision()
    for _ in range(5):
        for p in (a, b):
            r = gw.chat(p)
            assert r.status_code == 200, r.text
            assert fake_provider.last("/openai").headers["authorization"] == \
                f"Bearer {p.keys['openai']}"
    gw.assert_no_leaks()
