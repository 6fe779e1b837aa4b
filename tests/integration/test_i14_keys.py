"""Issue 14: several keys per provider, key health shared by every node,
validation on save, expiry and last use. The fake provider answers per key
(fake_provider.key_rule), so each test can make one key of a set misbehave."""

import json

from harness import assert_json_error, canary, wait_until

HANG_GUARD = 10.0  # only guards against hangs; never decides pass/fail


def add_key(gw, pid, provider="openai", key=None, expect=201, **extra):
    key = key or canary("sk-test-")
    r = gw.admin("POST", f"/projects/{pid}/keys/{provider}", {"key": key, **extra})
    assert r.status_code == expect, r.text
    return key, (r.json().get("key_id") if r.status_code == 201 else None)


def keys_of(gw, pid, provider="openai"):
    r = gw.admin("GET", f"/projects/{pid}/keys/{provider}")
    assert r.status_code == 200, r.text
    return {k["key_id"]: k for k in r.json()["keys"]}


# -- step 1: storage and admin routes ------------------------------------------

def test_i14_01_keys_are_added_listed_changed_and_deleted_per_id(gw, redis_server):
    p = gw.provision(keys={})
    k1, id1 = add_key(gw, p.pid, label="primary", weight=3)
    k2, id2 = add_key(gw, p.pid, label="backup", expires_at="2030-01-01T00:00:00Z")
    gw.track(k1, k2)
    assert id1.startswith("k_") and id2.startswith("k_") and id1 != id2

    rows = gw.admin("GET", f"/projects/{p.pid}/keys").json()
    assert sorted(r["key_id"] for r in rows) == sorted([id1, id2])
    assert all(r["provider"] == "openai" for r in rows)
    keys = keys_of(gw, p.pid)
    assert keys[id1]["weight"] == 3 and keys[id1]["label"] == "primary"
    assert keys[id2]["expires_at"] == "2030-01-01T00:00:00Z"
    assert keys[id2]["test_status"] == "untested" and keys[id2]["health"] == "healthy"

    r = gw.admin("PATCH", f"/projects/{p.pid}/keys/openai/{id2}", {"weight": 7, "is_active": False})
    assert r.status_code == 200, r.text
    assert keys_of(gw, p.pid)[id2]["weight"] == 7
    assert not keys_of(gw, p.pid)[id2]["is_active"]
    assert keys_of(gw, p.pid)[id1]["is_active"], "PATCH by id touched another key"
    assert_json_error(gw.admin("PATCH", f"/projects/{p.pid}/keys/openai/{id2}", {"weight": 0}), 422)
    assert_json_error(gw.admin("PATCH", f"/projects/{p.pid}/keys/openai/k_000000000000",
                               {"label": "x"}), 404)

    r = gw.admin("DELETE", f"/projects/{p.pid}/keys/openai/{id2}")
    assert r.status_code == 200, r.text
    assert list(keys_of(gw, p.pid)) == [id1]

    # The single-key routes act on the set: PUT replaces all with one.
    add_key(gw, p.pid)
    k4 = canary("sk-test-")
    gw.track(k4)
    r = gw.admin("PUT", f"/projects/{p.pid}/keys/openai", {"key": k4})
    assert r.status_code == 200, r.text
    assert len(keys_of(gw, p.pid)) == 1
    audit = gw.admin("GET", f"/audit?project={p.pid}&limit=50").text
    assert "key.add" in audit and "key.delete" in audit
    gw.assert_no_leaks(json.dumps(rows), audit)
    redis_server.assert_absent([k1, k2, k4])


def test_i14_01_at_most_16_keys_per_provider(gw):
    p = gw.provision(keys={})
    for _ in range(16):
        add_key(gw, p.pid)
    _, _ = add_key(gw, p.pid, expect=409)


def test_i14_05_test_true_refuses_an_invalid_key(gw, fake_provider):
    p = gw.provision(keys={})
    bad, good = canary("sk-test-"), canary("sk-test-")
    gw.track(bad, good)
    fake_provider.key_rule(bad, 401, {"error": {"message": f"invalid key {bad}"}})
    r = gw.admin("POST", f"/projects/{p.pid}/keys/openai", {"key": bad, "test": True})
    err = assert_json_error(r, 422)
    assert err["code"] == "key_invalid" and err["http_status"] == 401
    r2 = gw.admin("POST", f"/projects/{p.pid}/keys/openai?test=true", {"key": bad})
    assert assert_json_error(r2, 422)["code"] == "key_invalid"
    assert gw.admin("GET", f"/projects/{p.pid}/keys/openai").status_code == 404, "stored anyway"

    _, kid = add_key(gw, p.pid, key=good, test=True)
    assert keys_of(gw, p.pid)[kid]["test_status"] == "valid"
    gw.assert_no_leaks(r, r2)


def two_keys(gw, pid, w1=1, w2=1, **extra2):
    k1, id1 = add_key(gw, pid, weight=w1)
    k2, id2 = add_key(gw, pid, weight=w2, **extra2)
    gw.track(k1, k2)
    return (k1, id1), (k2, id2)


def metric(gw, sample):
    for line in gw.metrics().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


# -- step 2: selection ---------------------------------------------------------

def test_i14_02_weights_are_respected_over_1000_requests(gw, fake_provider):
    p = gw.provision(keys={})
    (k1, _), (k2, _) = two_keys(gw, p.pid, w1=1, w2=3)
    for _ in range(1000):
        assert gw.chat(p).status_code == 200
    used = fake_provider.used_keys("/openai")
    assert len(used) == 1000
    share = used.count(k2) / 1000
    assert abs(share - 0.75) <= 0.05, f"weight 3 of 4 got {share:.3f}"
    assert used.count(k1) + used.count(k2) == 1000


def test_i14_02_an_expired_key_is_never_used(gw, fake_provider):
    p = gw.provision(keys={})
    (live, _), (expired, _) = two_keys(gw, p.pid, w2=100, expires_at="2020-01-01T00:00:00Z")
    for _ in range(20):
        assert gw.chat(p).status_code == 200
    assert set(fake_provider.used_keys("/openai")) == {live}
    # With only the expired key left, the project has no usable key: fallback says why.
    keys = keys_of(gw, p.pid)
    live_id = next(k for k, v in keys.items() if v["expires_at"] is None)
    assert gw.admin("DELETE", f"/projects/{p.pid}/keys/openai/{live_id}").status_code == 200
    r = gw.chat(p)
    assert r.status_code == 200
    assert r.headers["x-byok-route"] == "fallback"
    assert r.headers["x-byok-fallback-reason"] == "expired"
    assert expired not in fake_provider.used_keys()


# -- step 3: health ------------------------------------------------------------

def test_i14_03_a_401_key_is_out_after_one_request_and_invalid_on_a_second_node(
        gateway, fake_provider, redis_server):
    gw = gateway()
    gw2 = gateway(master_keys=gw.master_key_lines)
    p = gw.provision(keys={})
    (bad, bad_id), (good, _) = two_keys(gw, p.pid)
    fake_provider.key_rule(bad, 401, {"error": {"message": f"bad key {bad}"}})
    for _ in range(10):
        r = gw.chat(p)
        assert r.status_code == 200, r.text  # the sibling key answered
        assert r.headers["x-byok-route"] == "byok"
    assert fake_provider.used_keys("/openai").count(bad) == 1, "the refused key was used again"
    assert keys_of(gw, p.pid)[bad_id]["health"] == "invalid"

    # The second node learns it through Redis: its own zone says invalid ...
    wait_until(lambda: metric(gw2, 'byok_key_health{state="invalid"}') >= 1, HANG_GUARD,
               what="the second node's zone to learn the verdict")
    assert keys_of(gw2, p.pid)[bad_id]["health"] == "invalid"
    fake_provider.clear()
    for _ in range(10):
        assert gw2.chat(p).status_code == 200
    assert bad not in fake_provider.used_keys("/openai"), "the second node used the invalid key"

    audit = gw.admin("GET", f"/audit?project={p.pid}&limit=50").text
    assert "key.invalid" in audit
    assert f"key {bad_id}" in gw.error_log()
    # A live test that says valid brings the key back.
    fake_provider.key_rule(bad, 200, {"data": []})
    r = gw.admin("POST", f"/projects/{p.pid}/keys/openai/{bad_id}/test")
    assert r.json()["status"] == "valid", r.text
    assert keys_of(gw, p.pid)[bad_id]["health"] == "healthy"
    gw.assert_no_leaks(audit, r)
    gw2.track(bad, good)
    gw2.assert_no_leaks()
    redis_server.assert_absent([bad, good])


def test_i14_03_429_with_retry_after_cools_that_key_while_the_other_serves(gw, fake_provider):
    p = gw.provision(keys={})
    (limited, lim_id), (other, _) = two_keys(gw, p.pid)
    fake_provider.key_rule(limited, 429, {"error": {"message": "slow down"}},
                           headers={"Retry-After": "2"}, times=1)
    r = gw.chat(p)
    assert r.status_code == 200 and r.headers["x-byok-route"] == "byok"
    assert fake_provider.used_keys("/openai") == [limited, other]
    k = keys_of(gw, p.pid)[lim_id]
    assert k["health"] == "cooling" and k["health_until"]
    # While it cools, only the other key serves; afterwards it serves again.
    for _ in range(5):
        assert gw.chat(p).status_code == 200
    assert fake_provider.used_keys("/openai").count(limited) == 1

    def limited_used_again():
        assert gw.chat(p).status_code == 200
        return fake_provider.used_keys("/openai").count(limited) > 1
    wait_until(limited_used_again, HANG_GUARD, interval=0.2, what="the cooled key to serve again")


def test_i14_03_a_failure_is_retried_on_the_sibling_key_before_the_fallback(gw, fake_provider):
    p = gw.provision(keys={})
    (k1, _), (k2, _) = two_keys(gw, p.pid)
    fake_provider.fail("/openai", 503)
    r = gw.chat(p)
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "fallback"
    assert r.headers["x-byok-fallback-reason"] == "upstream_503"
    assert sorted(fake_provider.used_keys("/openai")) == sorted([k1, k2])
    assert len(fake_provider.requests("/openrouter")) == 1
    gw.assert_no_leaks(r)


def test_i14_03_all_keys_cooling_under_policy_off_is_a_json_429(gw, fake_provider):
    p = gw.provision(keys={}, fallback="off")
    (k1, _), (k2, _) = two_keys(gw, p.pid)
    for k in (k1, k2):
        fake_provider.key_rule(k, 429, {"error": {"message": "slow"}},
                               headers={"Retry-After": "60"}, times=1)
    gw.chat(p)  # both keys answer 429: both cool for 60 s
    r = gw.chat(p)
    err = assert_json_error(r, 429)
    assert err["code"] == "keys_unavailable"
    assert "retry in" in err["message"]
    assert 0 < int(r.headers["Retry-After"]) <= 60


# -- step 4: last use, expiry in stats and metrics -----------------------------

def test_i14_04_last_used_at_moves_and_expiring_keys_are_listed(gw, fake_provider):
    p = gw.provision(keys={})
    soon = "2020-01-01T00:00:00Z"
    (k1, id1), (k2, id2) = two_keys(gw, p.pid, w1=1, w2=1, expires_at=soon)
    assert keys_of(gw, p.pid)[id1]["last_used_at"] is None
    assert gw.chat(p).status_code == 200
    wait_until(lambda: keys_of(gw, p.pid)[id1]["last_used_at"] is not None, HANG_GUARD,
               what="last_used_at to be written")
    stats = gw.admin("GET", f"/projects/{p.pid}/stats").json()
    assert [e["key_id"] for e in stats["expiring_keys"]] == [id2]
    assert stats["expiring_keys"][0]["expired"] is True
    assert metric(gw, "byok_keys_expiring") >= 1
    gw.assert_no_leaks(json.dumps(stats))


def test_i14_01_legacy_records_still_decrypt_and_rotate_keeps_their_id(gw, fake_provider,
                                                                       redis_server):
    p = gw.provision()  # PUT: one key, stored in the single-record shape
    rc = redis_server.client
    rec = json.loads(rc.hget(f"byok:{{{p.pid}}}:keys", "openai"))
    for f in ("id", "weight", "expires_at"):
        rec.pop(f)  # as written before several keys existed
    rc.hset(f"byok:{{{p.pid}}}:keys", "openai", json.dumps(rec))
    gw.admin("PATCH", f"/projects/{p.pid}", {"name": "touch"})  # invalidate the cache
    assert gw.chat(p).status_code == 200
    (legacy_id,) = keys_of(gw, p.pid)
    assert gw.admin("POST", "/rotate", {}).status_code == 200
    assert list(keys_of(gw, p.pid)) == [legacy_id]


def test_i14_04_gateway_keys_get_expires_at_too(gw):
    p = gw.provision(keys={})
    r = gw.admin("POST", f"/projects/{p.pid}/api-keys",
                 {"label": "old", "expires_at": "2020-01-01T00:00:00Z"})
    assert r.status_code == 201, r.text
    old_key, old_id = r.json()["key"], r.json()["id"]
    gw.track(old_key)
    err = assert_json_error(gw.chat(old_key), 401)
    assert "expired" in err["message"]
    assert gw.admin("GET", "/me", token=old_key).status_code == 401
    listed = {k["id"]: k for k in gw.admin("GET", f"/projects/{p.pid}/api-keys").json()}
    assert listed[old_id]["expires_at"] == "2020-01-01T00:00:00Z"
    stats = gw.admin("GET", f"/projects/{p.pid}/stats").json()
    assert {"kind": "gateway_key", "id": old_id, "label": "old",
            "expires_at": "2020-01-01T00:00:00Z", "expired": True} in stats["expiring_keys"]
    assert_json_error(gw.admin("POST", f"/projects/{p.pid}/api-keys", {"expires_at": "soon"}), 422)
    gw.assert_no_leaks(json.dumps(stats))


def test_i14_03_exhausted_cooldown_is_configurable(gateway, fake_provider):
    """byok_key_health exhausted=…: a 402 key rests that long, then serves
    again (default 1 h — with it this key would not come back)."""
    gw = gateway(extra_http="byok_key_health exhausted=2s cooling=30s max_fails=3 "
                            "fail_timeout=10s breaker=30s;")
    p = gw.provision(keys={})
    (spent, spent_id), (other, _) = two_keys(gw, p.pid)
    fake_provider.key_rule(spent, 402, {"error": {"message": "insufficient quota"}}, times=1)
    r = gw.chat(p)
    assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", r.text
    assert fake_provider.used_keys("/openai") == [spent, other]
    assert keys_of(gw, p.pid)[spent_id]["health"] == "exhausted"

    def spent_used_again():
        assert gw.chat(p).status_code == 200
        return fake_provider.used_keys("/openai").count(spent) > 1
    wait_until(spent_used_again, HANG_GUARD, interval=0.2, what="the exhausted key to serve again")
    gw.assert_no_leaks(r)


def test_i14_03_key_health_directive_refuses_bad_values(gateway):
    cfg = gateway(start=False)
    for bad in ("exhausted=soon", "max_fails=0", "breaker=-1s", "colling=30s"):
        rc, out, _ = cfg.nginx_t(cfg.render(byok_key_health=f"byok_key_health {bad};"))
        assert rc != 0 and "[emerg]" in out and "byok_key_health" in out and bad in out, out
