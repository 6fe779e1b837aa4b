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
