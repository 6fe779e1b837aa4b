"""Admin API (SPEC §7) against real Redis: CRUD with the stored layout
checked after each step, masking, scoping, strict input, live key tests,
audit, revocation, master-key rotation and concurrent writers."""

import base64
import hashlib
import json
import re
import secrets
import threading
import time

import pytest

from harness import assert_json_error, canary, master_key_line, wait_until

ELLIPSIS = "..."
RECORD_FIELDS = {"v", "kid", "salt", "nonce", "ct"}
HANG_GUARD = 30  # seconds; only stops a hung test, never decides a verdict
MASKED_FIELDS = {"provider", "provider_name", "key_hint", "label", "endpoint", "is_active",
                 "created_at", "updated_at", "last_tested", "test_status"}


def listing(body, *names):
    """Admin lists may be a bare array or wrapped in an object."""
    if isinstance(body, list):
        return body
    for n in names + ("data", "items"):
        if isinstance(body.get(n), list):
            return body[n]
    raise AssertionError(f"no list in {body!r}")


def keys_hash(pid):
    return f"byok:{{{pid}}}:keys"


def project_keys(redis_server, pid):
    """Every Redis key that belongs to a project (hash-tagged or not)."""
    return [k for k in redis_server.client.scan_iter(count=1000)
            if f"{{{pid}}}" in k]


def stored_record(redis_server, pid, provider):
    raw = redis_server.client.hget(keys_hash(pid), provider)
    return json.loads(raw) if raw is not None else None


def assert_sealed(rec, key, kid="k1"):
    assert RECORD_FIELDS <= set(rec), rec
    assert rec["v"] == 2  # record version 2: target fields bound into the AAD
    assert rec["kid"] == kid
    assert len(base64.b64decode(rec["salt"], validate=True)) == 16
    assert len(base64.b64decode(rec["nonce"], validate=True)) == 12
    assert len(base64.b64decode(rec["ct"], validate=True)) == len(key) + 16


def masked_entry(gw, pid, provider, token=None):
    r = gw.admin("GET", f"/projects/{pid}/keys", token=token)
    assert r.status_code == 200, r.text
    entries = [e for e in listing(r.json(), "keys") if e["provider"] == provider]
    return (entries[0] if entries else None), r


# -- projects ---------------------------------------------------------------------

def test_project_crud(gw, redis_server):
    rc = redis_server.client
    r = gw.admin("POST", "/projects", {"id": "acme", "name": "Acme", "tier": "pro",
                                        "fallback": "no_key"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["id"], body["name"], body["tier"], body["fallback"]) == \
        ("acme", "Acme", "pro", "no_key")
    h = rc.hgetall("byok:project:{acme}")
    assert (h["name"], h["tier"], h["fallback"]) == ("Acme", "pro", "no_key")
    assert h["created_at"] and h["updated_at"]
    assert rc.sismember("byok:projects", "acme")

    assert gw.admin("POST", "/projects", {"id": "acme", "name": "again"}).status_code == 409

    r = gw.admin("GET", "/projects")
    assert r.status_code == 200
    assert "acme" in [p["id"] for p in listing(r.json(), "projects")]

    r = gw.admin("GET", "/projects/acme")
    assert r.status_code == 200 and r.json()["tier"] == "pro"

    r = gw.admin("PATCH", "/projects/acme", {"tier": "starter", "fallback": "off"})
    assert r.status_code == 200, r.text
    h = rc.hgetall("byok:project:{acme}")
    assert (h["name"], h["tier"], h["fallback"]) == ("Acme", "starter", "off")
    r = gw.admin("PATCH", "/projects/acme", {"name": "Acme Corp"})
    assert r.status_code == 200
    assert rc.hget("byok:project:{acme}", "name") == "Acme Corp"
    assert rc.hget("byok:project:{acme}", "tier") == "starter"

    # defaults and a generated id
    r = gw.admin("POST", "/projects", {"name": "No Id"})
    assert r.status_code == 201, r.text
    gen = r.json()
    assert gen["tier"] == "free" and gen["fallback"] == "auto"  # README defaults
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", gen["id"]), gen

    # delete with all its data
    key, _ = gw.mint_key("acme")
    gw.put_key("acme", "openai")
    assert project_keys(redis_server, "acme")
    r = gw.admin("DELETE", "/projects/acme")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "acme", "deleted": True}, r.text
    assert project_keys(redis_server, "acme") == []
    assert not rc.sismember("byok:projects", "acme")
    assert rc.exists(f"byok:apikey:{hashlib.sha256(key.encode()).hexdigest()}") == 0
    assert gw.admin("GET", "/projects/acme").status_code == 404
    assert gw.admin("DELETE", "/projects/acme").status_code == 404
    wait_until(lambda: gw.chat(key, model="gpt-4o").status_code == 401, HANG_GUARD,
               what="deleted project's gateway key refused")
    redis_server.assert_absent(gw.secrets)


@pytest.mark.parametrize("pid", ["Bad", "-x", "a" * 65, "a/b", "a b", "", "ü"])
def test_invalid_project_id(gw, pid):
    r = gw.admin("POST", "/projects", {"id": pid, "name": "x"})
    # README: a bad id in a body is a bad value (400 invalid_id is for paths)
    assert assert_json_error(r, 422)["code"] == "invalid_value", r.text


@pytest.mark.parametrize("field,value", [("tier", "platinum"), ("fallback", "sometimes")])
def test_invalid_enum_values(gw, field, value):
    r = gw.admin("POST", "/projects", {"id": "p1", "name": "x", field: value})
    assert assert_json_error(r, 422)["code"] == "invalid_value", r.text


# -- gateway keys -----------------------------------------------------------------

def test_gateway_key_lifecycle(gw, redis_server, fake_provider):
    rc = redis_server.client
    pid = gw.create_project()
    r = gw.admin("POST", f"/projects/{pid}/api-keys", {"label": "ci"})
    assert r.status_code == 201, r.text
    body = r.json()
    key, kid = body["key"], body["id"]
    assert key.startswith("byok_") and len(key) >= 5 + 32

    sha = hashlib.sha256(key.encode()).hexdigest()
    h = rc.hgetall(f"byok:apikey:{sha}")
    assert h["project"] == pid and h["id"] == kid and h["label"] == "ci"
    assert h["revoked"] == "0"
    meta = json.loads(rc.hget(f"byok:{{{pid}}}:apikeys", kid))
    assert meta["hash"] == sha and meta["label"] == "ci"
    assert meta["prefix"] and key.startswith(meta["prefix"]) and len(meta["prefix"]) < 16
    redis_server.assert_absent([key])

    r = gw.admin("GET", f"/projects/{pid}/api-keys")
    assert r.status_code == 200
    assert key not in r.text
    items = listing(r.json(), "api_keys", "keys")
    assert [i["id"] for i in items] == [kid]
    assert "key" not in items[0]

    # the key works at the gateway, then is revoked
    assert gw.chat(key, model="gpt-4o").status_code == 200
    r = gw.admin("DELETE", f"/projects/{pid}/api-keys/{kid}")
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["revoked"]) == (kid, True), r.text
    wait_until(lambda: all(gw.chat(key, model="gpt-4o",
                                   headers={"Connection": "close"}).status_code == 401
                           for _ in range(4)), HANG_GUARD, what="revoked key refused")
    r = gw.chat(key, model="gpt-4o")
    assert_json_error(r, 401)
    assert gw.admin("DELETE", f"/projects/{pid}/api-keys/nope").status_code == 404
    gw.assert_no_leaks(r)


# -- provider keys ----------------------------------------------------------------

def test_provider_key_crud(gw, redis_server, fake_provider):
    pid = gw.create_project()
    key = canary("sk-test-")
    r = gw.admin("PUT", f"/projects/{pid}/keys/openai", {"key": key, "label": "main"})
    assert r.status_code == 201, r.text
    assert key not in r.text
    rec = stored_record(redis_server, pid, "openai")
    assert_sealed(rec, key)
    assert rec["is_active"] is True and rec["label"] == "main"
    assert rec["key_hint"] == f"sk-{ELLIPSIS}{key[-4:]}"
    redis_server.assert_absent([key, key[3:], key[:-4]])

    e, r = masked_entry(gw, pid, "openai")
    assert MASKED_FIELDS <= set(e), e
    assert e["key_hint"] == f"sk-{ELLIPSIS}{key[-4:]}"
    assert e["provider_name"] == "OpenAI" and e["label"] == "main" and e["is_active"] is True
    assert key not in r.text and key[3:-4] not in r.text
    assert not {"ct", "nonce", "salt", "key"} & set(e), e

    # replace: 200, new ciphertext, new hint
    key2 = canary("sk-test-")
    r = gw.admin("PUT", f"/projects/{pid}/keys/openai", {"key": key2})
    assert r.status_code == 200, r.text
    rec2 = stored_record(redis_server, pid, "openai")
    assert_sealed(rec2, key2)
    assert rec2["nonce"] != rec["nonce"] and rec2["salt"] != rec["salt"]
    assert rec2["key_hint"].endswith(key2[-4:])

    # PATCH changes metadata only
    r = gw.admin("PATCH", f"/projects/{pid}/keys/openai", {"label": "renamed", "is_active": False})
    assert r.status_code == 200, r.text
    rec3 = stored_record(redis_server, pid, "openai")
    assert (rec3["ct"], rec3["nonce"], rec3["kid"]) == (rec2["ct"], rec2["nonce"], rec2["kid"])
    assert rec3["label"] == "renamed" and rec3["is_active"] is False
    r = gw.admin("PATCH", f"/projects/{pid}/keys/openai", {"is_active": True})
    rec4 = stored_record(redis_server, pid, "openai")
    assert rec4["label"] == "renamed" and rec4["is_active"] is True
    # PATCH takes a new key too (needed to move an endpoint); the format rules hold.
    assert gw.admin("PATCH", f"/projects/{pid}/keys/openai", {"key": "bad key"}).status_code == 422

    # the stored key is the one used upstream
    p_key, _ = gw.mint_key(pid)
    r = gw.chat(p_key, model="gpt-4o")
    assert r.status_code == 200 and r.headers.get("x-byok-route") == "byok"
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {key2}"

    r = gw.admin("DELETE", f"/projects/{pid}/keys/openai")
    assert r.status_code == 200, r.text
    assert r.json() == {"provider": "openai", "deleted": True}, r.text
    assert stored_record(redis_server, pid, "openai") is None
    assert masked_entry(gw, pid, "openai")[0] is None
    assert gw.admin("DELETE", f"/projects/{pid}/keys/openai").status_code == 404
    assert gw.admin("PUT", f"/projects/{pid}/keys/nosuch", {"key": "x" * 20}).status_code == 404
    assert gw.admin("PUT", "/projects/nosuch/keys/openai",
                    {"key": canary()}).status_code == 404
    redis_server.assert_absent(gw.secrets)
    gw.assert_no_leaks()


def test_plaintext_never_in_redis(gw, redis_server):
    p = gw.provision(keys={"openai": None, "anthropic": None, "google": None})
    gw.admin("PATCH", f"/projects/{p.pid}/keys/anthropic", {"label": "x"})
    gw.admin("POST", f"/projects/{p.pid}/keys/openai/test")
    data = redis_server.all_values()
    assert data, "Redis is empty"
    redis_server.assert_absent(gw.secrets)
    for provider, key in p.keys.items():
        assert_sealed(stored_record(redis_server, p.pid, provider), key)


def test_providers_listing(gw):
    p = gw.provision(keys={"openai": None})
    r = gw.admin("GET", "/providers")
    assert r.status_code == 200, r.text
    provs = {e["id"]: e for e in listing(r.json(), "providers")}
    assert set(provs) == {"openai", "anthropic", "google", "openrouter"}
    assert provs["anthropic"]["key_prefix"] == "sk-ant-"
    assert provs["anthropic"]["auth"] == "x-api-key"
    assert provs["openai"]["models"][0] == "gpt-*"
    assert provs["openai"]["name"] == "OpenAI"
    r = gw.admin("GET", f"/providers?project={p.pid}")
    provs = {e["id"]: e for e in listing(r.json(), "providers")}
    assert provs["openai"]["configured"] is True
    assert provs["anthropic"]["configured"] is False


# -- scoping ------------------------------------------------------------------------

def test_gateway_key_is_scoped_to_its_project(gw):
    a = gw.provision(keys={"openai": None})
    b = gw.provision(keys={"openai": None})
    tok = a.gateway_key
    assert gw.admin("GET", f"/projects/{a.pid}", token=tok).status_code == 200
    e, r = masked_entry(gw, a.pid, "openai", token=tok)
    assert e is not None
    for method, path, body in [
        ("GET", f"/projects/{b.pid}", None),
        ("PATCH", f"/projects/{b.pid}", {"tier": "free"}),
        ("DELETE", f"/projects/{b.pid}", None),
        ("GET", f"/projects/{b.pid}/keys", None),
        ("PUT", f"/projects/{b.pid}/keys/openai", {"key": canary()}),
        ("DELETE", f"/projects/{b.pid}/keys/openai", None),
        ("POST", f"/projects/{b.pid}/keys/openai/test", None),
        ("GET", f"/projects/{b.pid}/api-keys", None),
        ("POST", f"/projects/{b.pid}/api-keys", {}),
        ("GET", f"/projects/{b.pid}/stats", None),
    ]:
        r = gw.admin(method, path, body, token=tok)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert_json_error(r, 404)
        assert b.keys["openai"] not in r.text
    assert_json_error(gw.admin("GET", "/projects", token=tok), 403)
    assert gw.admin("POST", "/projects", {"name": "x"}, token=tok).status_code == 403
    assert gw.admin("POST", "/rotate", token=tok).status_code == 403
    # B is untouched
    assert gw.admin("GET", f"/projects/{b.pid}").json()["tier"] == "starter"


def test_admin_auth_required(gw):
    assert_json_error(gw.admin("GET", "/projects", token=False), 401)
    bad = secrets.token_hex(24)
    gw.track(bad)
    r = gw.admin("GET", "/projects", token=bad)
    assert_json_error(r, 401)
    r = gw.admin("GET", "/projects", token=gw.admin_token[:-1])
    assert_json_error(r, 401)
    r = gw.admin("GET", "/projects", token=False,
                 headers={"Authorization": f"Basic {gw.admin_token}"})
    assert_json_error(r, 401)
    gw.assert_no_leaks(r)


def test_second_admin_token_works(gateway):
    tokens = [secrets.token_hex(24), secrets.token_hex(24)]
    gw = gateway(admin_tokens=tokens)
    assert gw.admin("GET", "/projects", token=tokens[1]).status_code == 200


# -- strict input -----------------------------------------------------------------

def test_bad_input_classes(gw):
    pid = gw.create_project()
    h = gw.admin_headers()
    r = gw.request("POST", "/admin/v1/projects",
                   headers={**h, "Content-Type": "text/plain"}, data='{"name":"x"}')
    assert_json_error(r, 415)
    r = gw.request("POST", "/admin/v1/projects", json={"name": "x" * (65 * 1024)}, headers=h)
    assert_json_error(r, 413)
    r = gw.request("POST", "/admin/v1/projects", headers={**h, "Content-Type": "application/json"},
                   data='{"name": "x",')
    assert_json_error(r, 400)
    r = gw.request("POST", "/admin/v1/projects", headers={**h, "Content-Type": "application/json"},
                   data='["name"]')
    assert assert_json_error(r, 400)["code"] == "invalid_json"  # README: not an object
    assert_json_error(gw.admin("POST", "/projects", {"name": "x", "colour": "red"}), 422)
    assert_json_error(gw.admin("POST", "/projects", {"name": 5}), 400)
    assert_json_error(gw.admin("PATCH", f"/projects/{pid}", {"tier": 3}), 400)
    assert_json_error(gw.admin("PATCH", f"/projects/{pid}", {"bogus": 1}), 422)
    assert_json_error(gw.admin("PUT", f"/projects/{pid}/keys/openai", {"key": 12345678}), 400)
    assert_json_error(gw.admin("PUT", f"/projects/{pid}/keys/openai",
                               {"key": canary(), "extra": 1}), 422)
    assert_json_error(gw.admin("PUT", f"/projects/{pid}/keys/openai",
                               {"key": canary(), "is_active": "yes"}), 400)
    r = gw.admin("PUT", f"/projects/{pid}/keys/openai", {"label": "no key"})  # key missing
    assert assert_json_error(r, 422)["code"] == "missing_field", r.text
    assert assert_json_error(gw.admin("GET", "/nosuch"), 404)["code"] == "not_found"
    r = gw.admin("DELETE", "/projects")
    assert assert_json_error(r, 405)["code"] == "method_not_allowed"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}, r.headers


def test_free_tier_cannot_add_keys(gw, redis_server):
    pid = gw.create_project(tier="free")
    key = canary()
    r = gw.admin("PUT", f"/projects/{pid}/keys/openai", {"key": key})
    err = assert_json_error(r, 403)
    assert err["message"] == "BYOK requires the starter tier or above"
    assert stored_record(redis_server, pid, "openai") is None
    assert key not in r.text


@pytest.mark.parametrize("provider,key", [
    ("openai", "xx-" + secrets.token_hex(16)),
    ("anthropic", "sk-" + secrets.token_hex(16)),
    ("openrouter", "sk-" + secrets.token_hex(16)),
    ("openai", "sk-has space" + secrets.token_hex(8)),
    ("openai", ""),
])
def test_bad_key_format_is_422(gw, redis_server, provider, key):
    pid = gw.create_project()
    r = gw.admin("PUT", f"/projects/{pid}/keys/{provider}", {"key": key})
    assert_json_error(r, 422)
    if key:
        assert key not in r.text
    assert stored_record(redis_server, pid, provider) is None


# -- live key test ----------------------------------------------------------------

@pytest.mark.parametrize("upstream,status", [(200, "valid"), (401, "invalid"), (403, "invalid"),
                                             (500, "error")])
def test_key_test_openai(gw, fake_provider, redis_server, upstream, status):
    p = gw.provision(keys={"openai": None})
    fake_provider.set_rule("/openai/models", status=upstream,
                           body={"object": "list", "data": []} if upstream == 200
                           else {"error": {"message": "nope"}})
    r = gw.admin("POST", f"/projects/{p.pid}/keys/openai/test")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["provider"] == "openai"
    assert body["status"] == status
    assert body["http_status"] == upstream
    assert isinstance(body["latency_ms"], int) and body["latency_ms"] >= 0
    assert isinstance(body["message"], str)
    rec = fake_provider.last()
    assert (rec.method, rec.path) == ("GET", "/openai/models")
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"
    gw.assert_no_leaks(r)
    stored = stored_record(redis_server, p.pid, "openai")
    assert stored["test_status"] == status and stored["last_tested"]
    e, _ = masked_entry(gw, p.pid, "openai")
    assert e["test_status"] == status and e["last_tested"]


def test_key_test_uses_provider_auth_header(gw, fake_provider):
    p = gw.provision(keys={"anthropic": None, "openrouter": None, "google": None})
    assert gw.admin("POST", f"/projects/{p.pid}/keys/anthropic/test").json()["status"] == "valid"
    rec = fake_provider.last()
    assert (rec.method, rec.path) == ("GET", "/anthropic/models")
    assert rec.headers["x-api-key"] == p.keys["anthropic"]
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in rec.headers

    assert gw.admin("POST", f"/projects/{p.pid}/keys/openrouter/test").json()["status"] == "valid"
    rec = fake_provider.last()
    assert (rec.method, rec.path) == ("GET", "/openrouter/key")
    assert rec.headers["authorization"] == f"Bearer {p.keys['openrouter']}"

    assert gw.admin("POST", f"/projects/{p.pid}/keys/google/test").json()["status"] == "valid"
    rec = fake_provider.last()
    assert rec.headers["x-goog-api-key"] == p.keys["google"]
    assert gw.admin("POST", f"/projects/{p.pid}/keys/groq/test").status_code == 404


def test_key_test_timeout_is_error(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    hold = threading.Event()
    fake_provider.set_rule("/openai/models", hold=hold)
    t0 = time.monotonic()
    r = gw.admin("POST", f"/projects/{p.pid}/keys/openai/test", timeout=HANG_GUARD)
    print(f"key test answered after {time.monotonic() - t0:.1f}s")
    # answered while the provider still holds its answer: the test timed out
    assert not hold.is_set()
    hold.set()
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "error"


def test_stats(gw, fake_provider):
    p = gw.provision(keys={"openai": None, "anthropic": None})
    gw.admin("POST", f"/projects/{p.pid}/keys/openai/test")
    assert gw.chat(p, model="gpt-4o").status_code == 200
    q = gw.provision(keys={})

    def stats():
        r = gw.admin("GET", f"/projects/{p.pid}/stats")
        assert r.status_code == 200, r.text
        return r.json()
    s = stats()
    assert s["total_providers"] == 4
    assert s["configured_providers"] == 2
    assert s["tested_providers"] == 1 and s["valid_providers"] == 1
    assert s["tier"] == "starter"
    wait_until(lambda: stats()["usage"].get("openai", {}).get("byok") == 1, HANG_GUARD,
               what="usage in stats")
    assert gw.admin("GET", f"/projects/{q.pid}/stats").json()["configured_providers"] == 0


# -- audit, invalidation ----------------------------------------------------------

def test_audit_trail_without_secrets(gw, redis_server):
    p = gw.provision(keys={"openai": None})
    gw.admin("PATCH", f"/projects/{p.pid}/keys/openai", {"label": "x"})
    gw.admin("DELETE", f"/projects/{p.pid}/keys/openai")
    entries = redis_server.client.xrange("byok:audit")
    actor = "admin:" + hashlib.sha256(gw.admin_token.encode()).hexdigest()[:8]
    want = [("project.create", p.pid), ("apikey.create", p.gateway_key_id),
            ("key.put", "openai"), ("key.patch", "openai"), ("key.delete", "openai")]
    got = [(f["action"], f["target"]) for _, f in entries]
    assert got == want, got
    for _, f in entries:
        assert (f["actor"], f["project"]) == (actor, p.pid), f
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", f["at"]), f
        assert set(f) == {"actor", "action", "project", "target", "at"}, f
    redis_server.assert_absent(gw.secrets)

    r = gw.admin("GET", f"/audit?project={p.pid}&limit=3")
    assert r.status_code == 200, r.text
    items = listing(r.json(), "entries", "audit")
    # newest first, the stream ids as ids
    assert [(i["action"], i["target"]) for i in items] == want[::-1][:3], items
    assert [i["id"] for i in items] == [e[0] for e in entries][::-1][:3]
    assert all(i["actor"] == actor and i["project"] == p.pid for i in items), items
    gw.assert_no_leaks(r)
    # a gateway key naming another project gets 404 (README scoping)
    other = gw.provision(keys={})
    r = gw.admin("GET", f"/audit?project={p.pid}", token=other.gateway_key)
    assert_json_error(r, 404)


def test_mutations_publish_invalidation(gw, redis_server):
    pid = gw.create_project()
    ps = redis_server.client.pubsub()
    ps.subscribe("byok:invalidate")
    wait_until(lambda: ps.get_message(timeout=0.1), HANG_GUARD, what="subscribe confirmation")
    gw.admin("PATCH", f"/projects/{pid}", {"name": "renamed"})
    gw.put_key(pid, "openai")

    got = []

    def two():
        m = ps.get_message(timeout=0.1)
        if m and m["type"] == "message":
            got.append(m["data"])
        return len(got) >= 2
    wait_until(two, HANG_GUARD, what="two invalidation messages")
    assert got == [pid, pid]
    ps.close()


# -- rotation ---------------------------------------------------------------------

def all_records(redis_server):
    out = {}
    for k in redis_server.client.scan_iter(match="byok:{*}:keys", count=1000):
        for provider, raw in redis_server.client.hgetall(k).items():
            out[(k, provider)] = json.loads(raw)
    return out


def test_master_key_rotation(gateway, fake_provider, redis_server):
    k1 = master_key_line("k1")
    gw = gateway(master_keys=[k1])
    a = gw.provision(keys={"openai": None, "anthropic": None})
    b = gw.provision(keys={"openai": None})
    assert {r["kid"] for r in all_records(redis_server).values()} == {"k1"}

    k2 = master_key_line("k2")
    gw.write_master_keys([k2, k1])
    gw.reload()
    # old records still decrypt before rotation
    assert gw.chat(a, model="gpt-4o").headers.get("x-byok-route") == "byok"
    # new writes use the active key
    c = gw.provision(keys={"openai": None})
    assert stored_record(redis_server, c.pid, "openai")["kid"] == "k2"

    r = gw.admin("POST", "/rotate")
    assert r.status_code == 200, r.text
    # a's two and b's one were on k1; c's was already on k2
    assert r.json() == {"rotated": 3, "unchanged": 1, "failed": 0, "skipped": 0,
                        "active_kid": "k2",
                        "before": {"k1": {"keys": 3, "servers": 0, "in_ring": True},
                                   "k2": {"keys": 1, "servers": 0, "in_ring": True}},
                        "after": {"k2": {"keys": 4, "servers": 0, "in_ring": True}}}, r.text
    recs = all_records(redis_server)
    assert len(recs) == 4
    assert {rec["kid"] for rec in recs.values()} == {"k2"}
    assert_sealed(stored_record(redis_server, a.pid, "openai"), a.keys["openai"], kid="k2")
    redis_server.assert_absent(gw.secrets)

    # only k2 left: everything still routes with the right keys
    gw.write_master_keys([k2])
    gw.restart()
    for proj, model, provider in [(a, "gpt-4o", "openai"), (a, "claude-3-opus", "anthropic"),
                                  (b, "gpt-4o", "openai"), (c, "gpt-4o", "openai")]:
        r = gw.chat(proj, model=model)
        assert r.status_code == 200, r.text
        assert r.headers.get("x-byok-route") == "byok", dict(r.headers)
        rec = fake_provider.last(f"/{provider}")
        got = rec.headers.get("authorization") or rec.headers.get("x-api-key")
        assert proj.keys[provider] in got
    gw.assert_no_leaks(r)


def test_unknown_kid_is_decrypt_error(gateway, fake_provider, redis_server):
    k1 = master_key_line("k1")
    gw = gateway(master_keys=[k1])
    p = gw.provision(keys={"openai": None})
    # A ring without k1 no longer starts while records use k1 (issue 11 item
    # 5), so the record itself names a kid no ring has.
    rec = stored_record(redis_server, p.pid, "openai")
    rec["kid"] = "k9"
    redis_server.client.hset(keys_hash(p.pid), "openai", json.dumps(rec))
    r = gw.chat(p, model="gpt-4o")
    assert r.headers.get("x-byok-fallback-reason") == "decrypt_error", dict(r.headers)
    assert fake_provider.requests("/openai") == []


# -- concurrency ------------------------------------------------------------------

def test_concurrent_put_delete_is_consistent(gw, fake_provider, redis_server):
    p = gw.provision(keys={})
    put_keys = []
    statuses = []
    lock = threading.Lock()
    errors = []

    def worker(n):
        try:
            for i in range(10):
                if (n + i) % 2:
                    k = canary()
                    with lock:
                        put_keys.append(k)
                    r = gw.admin("PUT", f"/projects/{p.pid}/keys/openai", {"key": k},
                                 headers={"Connection": "close"})
                else:
                    r = gw.admin("DELETE", f"/projects/{p.pid}/keys/openai",
                                 headers={"Connection": "close"})
                with lock:
                    statuses.append(r.status_code)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    gw.track(*put_keys)
    assert not errors, errors
    # 409 = the admin API detected a concurrent write and refused this one
    assert set(statuses) <= {200, 201, 404, 409}, statuses

    rec = stored_record(redis_server, p.pid, "openai")
    e, _ = masked_entry(gw, p.pid, "openai")
    if rec is None:
        assert e is None
        wait_until(lambda: gw.chat(p, model="gpt-4o").headers.get("x-byok-fallback-reason")
                   == "no_key", HANG_GUARD, what="no_key after concurrent writes")
    else:
        assert e is not None
        winners = [k for k in put_keys if rec["key_hint"].endswith(k[-4:])]
        assert winners, rec
        assert e["key_hint"] == rec["key_hint"]

        def routed():
            r = gw.chat(p, model="gpt-4o", headers={"Connection": "close"})
            return r.headers.get("x-byok-route") == "byok"
        wait_until(routed, HANG_GUARD, what="byok after concurrent writes")
        sent = fake_provider.last("/openai").headers["authorization"]
        assert sent.removeprefix("Bearer ") in winners
        assert_sealed(rec, winners[0])
    redis_server.assert_absent(gw.secrets)
