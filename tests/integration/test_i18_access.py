"""Issue 18, the access handler's decision without copies: the request's
rest is a view of its URI (a built string only when `key=` was dropped),
the route input's rows are views, the last-use rows are remembered between
requests and the health slots are found by a word-at-a-time hash. What a
client, the provider and Redis see does not change."""
import json

from harness import canary, wait_until

HANG_GUARD = 15  # seconds; only guards against a hang


def test_i18_access_03_the_rest_and_its_query_reach_the_provider(gw, fake_provider):
    p = gw.provision()
    r = gw.chat(p, path="/v1/chat/completions?trace=1&x=%20y")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert fake_provider.last("/openai").path.endswith("/chat/completions?trace=1&x=%20y")
    r = gw.request("GET", "/openai/v1/models?limit=2",
                   headers={"Authorization": f"Bearer {p.gateway_key}"})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert fake_provider.last("/openai").path.endswith("/v1/models?limit=2")
    gw.assert_no_leaks(r)


def test_i18_access_03_a_dropped_key_parameter_leaves_a_built_rest(gw, fake_provider):
    p = gw.provision()
    junk = "byok_" + "q" * 43  # a key= value that must never travel
    gw.track(junk)
    r = gw.chat(p, path=f"/v1/chat/completions?a=1&key={junk}&b=2")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    got = fake_provider.last("/openai")
    assert got.path.endswith("/chat/completions?a=1&b=2"), got.path
    assert junk not in fake_provider.all_text()
    # Only the parameter, with an empty rest: "/" and the query.
    r = gw.chat(p, path=f"/v1?key={junk}&z=9")
    assert junk not in fake_provider.all_text()
    gw.assert_no_leaks(r)


def test_i18_access_01_last_use_rows_come_back_after_each_flush(gw, fake_provider):
    """A worker remembers the last-use row each request touched; the flush
    empties the rows once a second, so the memory must be forgotten with
    them: a use after a flush is written again."""
    p = gw.provision()
    rds = gw.redis.client

    def rows():
        for k in rds.scan_iter(f"*{p.pid}*last_used"):
            return k, rds.hgetall(k)
        return None, {}

    for round_ in range(3):
        r = gw.chat(p)
        assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", (round_, r.text)
        key, seen = wait_until(lambda: rows()[1] and rows(), timeout=HANG_GUARD,
                               what=f"last_used written (round {round_})")
        assert f"gw:{p.gateway_key_id}" in seen, seen
        assert len(seen) == 2, seen  # the gateway key and the one provider key
        rds.delete(key)
    assert gw.crashes() == []
    gw.assert_no_leaks()


def test_i18_access_01_sixteen_keys_keep_their_own_health_slots(gw, fake_provider):
    """The health slots are found by a word-at-a-time hash: of sixteen keys
    whose ids differ in a character or two, the one the provider refused
    (401: invalid) is skipped and every other one keeps serving."""
    p = gw.provision(keys={})
    keys = []
    for _ in range(16):
        key = canary("sk-test-")
        r = gw.admin("POST", f"/projects/{p.pid}/keys/openai", {"key": key})
        assert r.status_code == 201, (r.status_code, r.text)
        keys.append(key)
    bad = keys[6]
    fake_provider.key_rule(bad, 401, {"error": {"message": "bad key"}})
    for _ in range(45):  # 15 usable keys: each worker's round robin covers them
        r = gw.chat(p)
        assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", r.text[:300]
    used = fake_provider.used_keys("/openai")
    assert used.count(bad) == 1, "the refused key was used again"
    assert set(keys) - {bad} <= set(used), "a healthy key was taken for the refused one"
    gw.assert_no_leaks(r)


def test_i18_access_02_a_body_read_to_its_end_with_escapes_routes(gw, fake_provider):
    p = gw.provision()
    body = {"messages": [{"role": "user", "content": "x\"y\\z \u00e9 " * 200}],
            "temperature": 0.5, "model": "gpt-4o"}
    r = gw.chat(p, body=body)
    assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", (r.status_code, r.text)
    assert json.loads(fake_provider.last("/openai").body) == body
    dup = b'{"model":"gpt-4o","messages":[],"model":"gpt-4o"}'
    r = gw.request("POST", "/v1/chat/completions", data=dup,
                   headers={"Authorization": f"Bearer {p.gateway_key}",
                            "Content-Type": "application/json"})
    assert r.status_code == 400, (r.status_code, r.text)
    gw.assert_no_leaks(r)
