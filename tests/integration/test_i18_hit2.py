"""Issue 18, second pass on the cache-hit path: the upstream headers are
installed from views of the key and the snapshot (no strings, no header
vector, no wipe-list vector), the gateway key is hashed without an EVP
context, and the secret-wipe list is a fixed array that each attempt
resets. What the provider receives must not change."""
import harness

# The allocation bound of both passes is test_i18_hotpath's
# test_i18_04_a_cache_hit_allocates_a_bounded_number_of_times.


def test_i18_hit2_02_views_install_the_same_headers(gw, fake_provider):
    """Auth header from the key's view (prefix + key), the catalog's fixed
    default kept as the client's when it sends one, no gateway key."""
    p = gw.provision(keys={"anthropic": None, "openai": None})
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200, r.text
    rec = fake_provider.last()
    assert rec.headers["authorization"] == "Bearer " + p.keys["openai"]
    body = {"model": "claude-3-5-sonnet-latest", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}
    for version in (None, "2099-01-01"):
        h = {"x-api-key": p.gateway_key}
        if version:
            h["anthropic-version"] = version
        r = gw.request("POST", "/anthropic/v1/messages", json=body, headers=h)
        assert r.status_code == 200, r.text
        rec = fake_provider.last()
        assert rec.headers["x-api-key"] == p.keys["anthropic"]
        assert rec.headers["anthropic-version"] == (version or "2023-06-01")
        assert "authorization" not in rec.headers
    assert p.gateway_key not in fake_provider.all_text()
    gw.assert_no_leaks(r)


def test_i18_hit2_03_each_attempt_sends_its_own_key(gw, fake_provider):
    """Three attempts (two keys of the pool, then the fallback) each install
    a new auth header; the previous attempt's value is wiped first and must
    not be the one sent."""
    p = gw.provision(keys={})
    keys = []
    for _ in range(2):
        k = harness.canary("sk-test-")
        r = gw.admin("POST", f"/projects/{p.pid}/keys/openai", {"key": k})
        assert r.status_code == 201, r.text
        keys.append(k)
    gw.track(*keys)
    fake_provider.fail("/openai", 503)
    r = gw.chat(p)
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "fallback"
    assert sorted(fake_provider.used_keys("/openai")) == sorted(keys)
    (fb,) = fake_provider.requests("/openrouter")
    auth = fb.headers["authorization"]
    assert auth.startswith("Bearer ") and len(auth) > len("Bearer ") + 8, auth[:10]
    assert not any(k in auth for k in keys)
    gw.assert_no_leaks(r)
