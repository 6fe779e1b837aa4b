"""First run and day-2 operations (issue 11), items 5-9: ASCII key hints,
key shape checks, discovery routes, rotation and JSON errors."""

import json
import re

from harness import (ADMIN_CONF, assert_json_error, canary, free_port, master_key_line,
                     providers_yaml, raw_http, status_of, wait_until)


def keys_hash(pid):
    return f"byok:{{{pid}}}:keys"


# ---------------------------------------------------------------- item 9


def test_i11_09_key_hint_is_ascii_in_admin_and_access_log(gateway, fake_provider, redis_server):
    gw = gateway()
    p = gw.provision()
    key = p.keys["openai"]
    r = gw.admin("GET", f"/projects/{p.pid}/keys")
    assert r.status_code == 200, r.text
    assert r.json()[0]["key_hint"] == f"sk-...{key[-4:]}"
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", r.text
    wait_until(lambda: f"key=sk-...{key[-4:]}" in gw.access_log(), timeout=10,
               what="the request's access-log line")
    log = gw.access_log()
    assert "\\x" not in log and "\u2026" not in log
    gw.track(key)
    gw.assert_no_leaks(r)


def test_i11_09_hint_stored_with_unicode_ellipsis_comes_out_ascii(gateway, fake_provider,
                                                                  redis_server):
    gw = gateway()
    p = gw.provision()
    key = p.keys["openai"]
    rc = redis_server.client
    rec = json.loads(rc.hget(keys_hash(p.pid), "openai"))
    rec["key_hint"] = f"sk-\u2026{key[-4:]}"   # as written before the hint became ASCII
    rc.hset(keys_hash(p.pid), "openai", json.dumps(rec))
    r = gw.admin("GET", f"/projects/{p.pid}/keys")
    assert r.json()[0]["key_hint"] == f"sk-...{key[-4:]}", r.text
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", r.text
    wait_until(lambda: f"key=sk-...{key[-4:]}" in gw.access_log(), timeout=10,
               what="the request's access-log line")
    log = gw.access_log()
    assert "\\xE2" not in log
    gw.track(key)
    gw.assert_no_leaks(r)


# ---------------------------------------------------------------- item 7


def shaped_catalog(base):
    """The test catalog with the shipped shape rule for openai."""
    return providers_yaml(base).replace(
        'key_prefix: "sk-"\n',
        'key_prefix: "sk-"\n    key_min_length: 20\n    key_pattern: "[A-Za-z0-9_-]"\n', 1)


def test_i11_07_placeholder_keys_are_refused_with_the_expected_shape(gateway, fake_provider):
    gw = gateway(providers=shaped_catalog(fake_provider.base))
    pid = gw.create_project()
    want = "key for OpenAI must be 'sk-' followed by at least 17 characters of [A-Za-z0-9_-]"
    for bad in ("sk-...", "sk-", "x", "sk-abc.def.ghi.jkl.mno"):
        r = gw.admin("PUT", f"/projects/{pid}/keys/openai", {"key": bad})
        assert assert_json_error(r, 422)["message"] == want, r.text
    assert gw.admin("GET", f"/projects/{pid}/keys").json() == []
    good = canary("sk-test-")
    assert gw.put_key(pid, "openai", good) == good
    r = gw.admin("PATCH", f"/projects/{pid}/keys/openai", {"key": "sk-..."})
    assert assert_json_error(r, 422)["message"] == want, r.text
    gw.track(good)
    gw.assert_no_leaks(r)



# ---------------------------------------------------------------- item 8


def test_i11_08_admin_index_lists_the_routes(gateway):
    gw = gateway()
    r = gw.admin("GET", "/")
    assert r.status_code == 200, r.text
    routes = {(x["method"], x["path"]): x["who"] for x in r.json()}
    assert routes[("GET", "/projects/{pid}/keys/{provider}")] == "admin, project key"
    assert routes[("POST", "/rotate")] == "admin"
    assert routes[("GET", "/")] == "admin, project key"
    assert gw.request("GET", "/admin/v1/").status_code == 401


def test_i11_08_one_masked_key(gateway, fake_provider):
    gw = gateway()
    p = gw.provision()
    key = p.keys["openai"]
    r = gw.admin("GET", f"/projects/{p.pid}/keys/openai")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["provider"] == "openai" and body["key_hint"] == f"sk-...{key[-4:]}"
    assert set(body) >= {"label", "is_active", "created_at"} and "ct" not in body
    # The project's own gateway key may read it too.
    r2 = gw.admin("GET", f"/projects/{p.pid}/keys/openai", token=p.gateway_key)
    assert r2.status_code == 200 and r2.json() == body
    assert_json_error(gw.admin("GET", f"/projects/{p.pid}/keys/anthropic"), 404)
    gw.track(key)
    gw.assert_no_leaks(r, r2)


def test_i11_08_models_list_without_fallback_lists_the_project_providers(gateway, fake_provider):
    """GET /v1/models never ends in 400 with fallback off: a project with keys
    gets its first provider's own list on its own key (issue 17 item 4), a
    project without usable keys an OpenAI-shaped list of what it could use
    (empty here), answered by the gateway itself."""
    for kw in ({"extra_http": "byok_fallback off;"}, {"overrides": {"byok_system_key": None}}):
        fake_provider.reset()
        gw = gateway(**kw)
        p = gw.provision(keys={"openai": None, "anthropic": None})
        r = gw.request("GET", "/v1/models", headers=p.auth)
        assert r.status_code == 200, r.text
        assert r.headers.get("x-byok-route") == "byok", r.headers
        assert [q.path for q in fake_provider.requests()] == ["/openai/models"]
        bare = gw.provision(keys={})
        r2 = gw.request("GET", "/v1/models", headers=bare.auth)
        assert r2.status_code == 200, r2.text
        assert r2.headers["content-type"] == "application/json"
        assert r2.json() == {"object": "list", "data": []}
        assert [q.path for q in fake_provider.requests()] == ["/openai/models"]
        # A named provider is still proxied as before.
        r3 = gw.request("GET", "/v1/models", headers={**p.auth, "x-byok-provider": "anthropic"})
        assert r3.status_code == 200 and r3.headers.get("x-byok-route") == "byok", r3.text
        gw.track(*p.keys.values())
        gw.assert_no_leaks(r, r2, r3)


# ---------------------------------------------------------------- item 5


def test_i11_05_rotation_counts_and_keyring_then_ring_check_at_nginx_t(gateway, fake_provider,
                                                                      redis_server):
    k1 = master_key_line("k1")
    gw = gateway(master_keys=[k1])
    p = gw.provision(keys={"openai": None, "anthropic": None})
    r = gw.admin("GET", "/keyring")
    assert r.status_code == 200, r.text
    ring = r.json()
    assert ring["kids"] == ["k1"] and ring["active_kid"] == "k1"
    assert ring["records"]["k1"]["keys"] >= 2 and ring["records"]["k1"]["in_ring"] is True
    assert k1.split()[1] not in r.text

    # A gateway key may not see the ring.
    assert_json_error(gw.admin("GET", "/keyring", token=p.gateway_key), 403)

    # Removing k1 while records use it: nginx -t fails naming k1 and the count.
    k2 = master_key_line("k2")
    n = ring["records"]["k1"]["keys"] + ring["records"]["k1"]["servers"]
    gw.write_master_keys([k2])
    rc, out, _ = gw.nginx_t()
    assert rc != 0, out
    assert f"master key 'k1' is still used by {n} records" in out, out
    assert k1.split()[1] not in out and k2.split()[1] not in out

    # The documented procedure: new key first, reload, rotate, check, remove.
    gw.write_master_keys([k2, k1])
    gw.reload()
    r = gw.admin("POST", "/rotate")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["active_kid"] == "k2"
    assert body["before"]["k1"]["keys"] == n and "k2" not in body["before"]
    assert "k1" not in body["after"] and body["after"]["k2"]["keys"] == n
    r = gw.admin("GET", "/keyring")
    assert r.json()["kids"] == ["k2", "k1"] and r.json()["records"]["k1"]["keys"] == 0
    gw.write_master_keys([k2])
    rc, out, _ = gw.nginx_t()
    assert rc == 0, out
    gw.reload()
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", r.text
    gw.track(*p.keys.values(), k1.split()[1], k2.split()[1])
    gw.assert_no_leaks(r)


def test_i11_05_record_under_unknown_kid_stays_visible(gateway, fake_provider, redis_server):
    gw = gateway()
    p = gw.provision()
    rc = redis_server.client
    rec = json.loads(rc.hget(keys_hash(p.pid), "openai"))
    rec["kid"] = "gone"
    rc.hset(keys_hash(p.pid), "openai", json.dumps(rec))
    r = gw.admin("GET", "/keyring")
    assert r.status_code == 200, r.text
    assert r.json()["records"]["gone"] == {"keys": 1, "servers": 0, "in_ring": False}
    assert r.json()["missing_kids"] is True
    rc_, out, _ = gw.nginx_t()
    assert rc_ != 0 and "master key 'gone' is still used by 1 record (1 provider key, 0 server secrets)" in out, out


def test_i11_05_nginx_t_with_redis_down_warns_and_passes(gateway, redis_server):
    gw = gateway()
    redis_server.stop()
    rc, out, _ = gw.nginx_t()
    assert rc == 0, out
    assert "master keys not checked against stored records" in out, out


# ---------------------------------------------------------------- item 6


def raw_json_error(raw: bytes, status: int):
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status_of(raw) == status, raw[:300]
    assert re.search(rb"(?im)^content-type: application/json", head), head
    err = json.loads(body)["error"]
    assert err["message"] and err["type"] and err["code"], err
    assert b"<html" not in raw.lower()
    return err


def test_i11_06_direct_and_fallback_both_failing_is_json_502(gateway, fake_provider):
    closed = free_port()
    catalog = providers_yaml(fake_provider.base).replace(
        f"{fake_provider.base}/openrouter", f"http://127.0.0.1:{closed}/openrouter")
    gw = gateway(providers=catalog)
    p = gw.provision(fallback="auto")
    fake_provider.fail("/openai", 500)
    r = gw.chat(p, model="gpt-4o")
    err = assert_json_error(r, 502)
    assert r.headers["content-type"] == "application/json"
    assert err["code"] == "upstream_unreachable", r.text
    assert "<html" not in r.text.lower()
    gw.track(*p.keys.values())
    gw.assert_no_leaks(r)


def test_i11_06_nginx_own_errors_are_json_on_gateway_and_admin(gateway):
    gw = gateway()
    port = gw.port
    # Body over client_max_body_size (16m), refused from Content-Length alone.
    err = raw_json_error(raw_http(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                        b"Authorization: Bearer byok_x\r\n"
                                        b"Content-Type: application/json\r\n"
                                        b"Content-Length: 20000000\r\nConnection: close\r\n\r\n"),
                         413)
    assert err["code"] == "payload_too_large"
    # Over-long URI, over-long header, broken request line.
    err = raw_json_error(raw_http(port, b"GET /v1/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
                         414)
    assert err["code"] == "uri_too_long"
    err = raw_json_error(raw_http(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: "
                                        + b"b" * 20000 + b"\r\n\r\n"), 400)
    assert err["code"] == "bad_request"   # nginx turns its 494 into 400 for error_page
    err = raw_json_error(raw_http(port, b"BLAH\r\n\r\n"), 400)
    assert err["code"] == "bad_request"
    # Methods the module's own handlers refuse; the unread body is discarded,
    # so the next request on the same keep-alive connection is intact.
    for _ in range(20):
        for path in ("/healthz", "/metrics"):
            r = gw.request("POST", path, data=b"x")
            assert_json_error(r, 405)
            assert r.headers["content-type"] == "application/json"


def test_i11_06_provider_errors_still_pass_through(gateway, fake_provider):
    gw = gateway()
    p = gw.provision(fallback="off")
    fake_provider.set_rule("/openai", status=400, body={"error": {"message": "from the provider",
                                                                  "type": "x", "code": "y"}})
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 400 and r.json()["error"]["message"] == "from the provider", r.text
    gw.track(*p.keys.values())


def test_i11_06_admin_listener_alone_answers_json_errors(gateway):
    port = free_port()
    admin_server = (f"server {{ listen 127.0.0.1:{port}; include {ADMIN_CONF}; "
                    f"location /admin/v1/ {{ byok_admin; }} }}")
    gw = gateway(extra_http=admin_server)
    raw_json_error(raw_http(port, b"BLAH\r\n\r\n"), 400)
    err = raw_json_error(raw_http(port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                         404)
    assert err["code"] == "not_found" and err["type"] == "not_found_error"
    raw_json_error(raw_http(port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"), 414)
    r = gw.admin("GET", "/me")
    assert r.status_code == 200
