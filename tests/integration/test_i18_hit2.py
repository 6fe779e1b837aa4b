"""Issue 18, second pass on the cache-hit path: the upstream headers are
installed from views of the key and the snapshot (no strings, no header
vector, no wipe-list vector), the gateway key is hashed without an EVP
context, and the secret-wipe list is a fixed array that each attempt
resets. What the provider receives must not change."""
import shutil
import subprocess

import pytest
import harness
from harness import REPO
from test_i18_hotpath import _calls, _worker_pids

# test_i18_hotpath bounds the first pass (21.8 allocations per hit in this
# harness after it); this pass removes the header vector, the auth value's
# string, the wipe list's vector and the digest's provider context.
MAX_ALLOCS_PER_HIT_SECOND_PASS = 19


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the malloc counter")
@pytest.mark.skipif("LD_PRELOAD" in harness.NGINX_ENV, reason="sanitizer runtimes own malloc")
def test_i18_hit2_01_a_cache_hit_allocates_fewer_times(gateway, tmp_path, monkeypatch):
    so, counts = tmp_path / "malloc_count.so", tmp_path / "mc"
    counts.mkdir()
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(so),
                    str(REPO / "bench" / "malloc_count.c"), "-ldl", "-lpthread"], check=True)
    monkeypatch.setitem(harness.NGINX_ENV, "LD_PRELOAD", str(so))
    monkeypatch.setitem(harness.NGINX_ENV, "MALLOC_COUNT_DIR", str(counts))
    gw = gateway(worker_processes=1)
    p = gw.provision()
    for _ in range(30):
        r = gw.chat(p)
        assert r.status_code == 200, (r.status_code, r.text[:300])
    (worker,) = _worker_pids(gw)
    n = 200
    before = _calls(counts / str(worker))
    for _ in range(n):
        r = gw.chat(p)
        assert r.status_code == 200 and r.headers["x-byok-route"] == "byok"
    per_request = (_calls(counts / str(worker)) - before) / n
    print("allocations per hit request:", per_request)
    assert 0 < per_request <= MAX_ALLOCS_PER_HIT_SECOND_PASS, per_request
    gw.assert_no_leaks()


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
