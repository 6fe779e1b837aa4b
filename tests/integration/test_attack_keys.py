"""Issue 10 (the gateway attacked as a hostile tenant would), the items about
keys: retargeting a stored key (2), target fields inside the AEAD (8), live
key tests on big answers (3), minting and revoking gateway keys (7), the
per-project audit stream (18) and local catalog providers (6)."""

import base64
import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from harness import (REPO, assert_json_error, canary, custom_catalog, providers_yaml,
                     silent_listener, wait_until)

ALLOW_LOOPBACK = "byok_allow_endpoint 127.0.0.1;"


def keys_hash(pid):
    return f"byok:{{{pid}}}:keys"


def custom_gateway(gateway, fake_provider, **kw):
    """Test catalog + `custom`; loopback endpoints allowed so that a custom
    endpoint can point at the fake provider."""
    return gateway(providers=custom_catalog(fake_provider.base), extra_http=ALLOW_LOOPBACK, **kw)


def put_custom(gw, p, key, endpoint, token=None):
    r = gw.admin("PUT", f"/projects/{p.pid}/keys/custom", {"key": key, "endpoint": endpoint},
                 token=token)
    assert r.status_code in (200, 201), r.text
    return r


def chat_custom(gw, p):
    return gw.chat(p, model="m1", headers={"x-byok-provider": "custom"})


# -- item 2: a stored key is not sent elsewhere without the key -------------------

def test_i10_02_endpoint_change_by_gateway_key_needs_the_key_again(gateway, fake_provider,
                                                                    redis_server):
    gw = custom_gateway(gateway, fake_provider)
    p = gw.provision(keys={})
    tok = p.gateway_key
    key = canary("sk-custom-")
    good, evil = fake_provider.base + "/custom", fake_provider.base + "/attacker"
    put_custom(gw, p, key, good, token=tok)
    before = redis_server.client.hget(keys_hash(p.pid), "custom")

    r = gw.admin("PATCH", f"/projects/{p.pid}/keys/custom", {"endpoint": evil}, token=tok)
    err = assert_json_error(r, 409)
    assert err["code"] == "secret_required"
    assert "key" in err["message"]
    assert redis_server.client.hget(keys_hash(p.pid), "custom") == before, "record changed"
    assert chat_custom(gw, p).status_code == 200
    assert not fake_provider.requests("/attacker"), "the stored key went to the new endpoint"
    assert fake_provider.last("/custom").headers["authorization"] == f"Bearer {key}"

    # Metadata that does not move the key needs no secret.
    r = gw.admin("PATCH", f"/projects/{p.pid}/keys/custom", {"label": "x", "endpoint": good},
                 token=tok)
    assert r.status_code == 200, r.text

    # With the key supplied again the tenant may move it (it is its own key).
    key2 = canary("sk-custom-")
    r = gw.admin("PATCH", f"/projects/{p.pid}/keys/custom",
                 {"endpoint": fake_provider.base + "/moved", "key": key2}, token=tok)
    assert r.status_code == 200, r.text
    assert r.json()["endpoint"] == fake_provider.base + "/moved"
    assert chat_custom(gw, p).status_code == 200
    assert fake_provider.last("/moved").headers["authorization"] == f"Bearer {key2}"

    # The admin token may move it without the key: the stored key follows,
    # re-sealed for its new endpoint.
    r = gw.admin("PATCH", f"/projects/{p.pid}/keys/custom", {"endpoint": good})
    assert r.status_code == 200, r.text
    fake_provider.reset()
    r = chat_custom(gw, p)
    assert r.status_code == 200, r.text
    assert fake_provider.last("/custom").headers["authorization"] == f"Bearer {key2}"
    gw.track(key, key2)
    gw.assert_no_leaks(r)
    redis_server.assert_absent([key, key2])


# -- item 8: the target is inside the AEAD ------------------------------------------

def test_i10_08_endpoint_rewritten_in_redis_does_not_decrypt(gateway, fake_provider,
                                                             redis_server):
    gw = custom_gateway(gateway, fake_provider)
    p = gw.provision(keys={})
    key = canary("sk-custom-")
    put_custom(gw, p, key, fake_provider.base + "/custom")
    rc = redis_server.client
    rec = json.loads(rc.hget(keys_hash(p.pid), "custom"))
    rec["endpoint"] = fake_provider.base + "/attacker"   # a foothold in Redis
    rc.hset(keys_hash(p.pid), "custom", json.dumps(rec))

    r = chat_custom(gw, p)   # first lookup: nothing cached yet
    assert not fake_provider.requests("/attacker"), "the key went to the rewritten endpoint"
    assert not fake_provider.requests("/custom")
    # decrypt_error: never sent; policy auto falls back on the operator's key.
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "fallback"
    assert r.headers["x-byok-fallback-reason"] == "decrypt_error"
    assert key not in fake_provider.all_text()
    assert "does not decrypt" in gw.error_log()
    assert "byok_decrypt_failures_total 1" in gw.metrics()
    # The live key test does not send it either.
    r2 = gw.admin("POST", f"/projects/{p.pid}/keys/custom/test")
    assert r2.status_code == 200 and r2.json()["status"] == "error", r2.text
    assert not fake_provider.requests("/attacker")
    gw.track(key)
    gw.assert_no_leaks(r, r2)


def seal_v1(master_line, plaintext, pid, subject):
    """A record sealed as the first release did (AAD without target fields)."""
    kid, b64 = master_line.split()
    salt, nonce = os.urandom(16), os.urandom(12)
    dk = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
              info=b"byok provider key v1").derive(base64.b64decode(b64))
    ct = AESGCM(dk).encrypt(nonce, plaintext.encode(), f"byok/v1|{pid}|{subject}|{kid}".encode())
    return {"v": 1, "kid": kid, "salt": base64.b64encode(salt).decode(),
            "nonce": base64.b64encode(nonce).decode(), "ct": base64.b64encode(ct).decode()}


def test_i10_08_v1_records_still_work_and_rotate_upgrades_them(gateway, fake_provider,
                                                               redis_server):
    gw = gateway()
    p = gw.provision(keys={})
    key = canary("sk-test-")
    rec = seal_v1(gw.master_key_lines[0], key, p.pid, "openai")
    rec.update({"label": "", "endpoint": "", "is_active": True, "key_hint": "sk-…x",
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"})
    rc = redis_server.client
    rc.hset(keys_hash(p.pid), "openai", json.dumps(rec))

    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", r.text
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {key}"

    r = gw.admin("POST", "/rotate")
    assert r.status_code == 200, r.text
    assert r.json()["rotated"] == 1, r.json()
    assert json.loads(rc.hget(keys_hash(p.pid), "openai"))["v"] == 2
    assert gw.admin("POST", "/rotate").json()["rotated"] == 0   # nothing left to upgrade
    fake_provider.reset()
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", r.text
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {key}"
    gw.track(key)
    gw.assert_no_leaks(r)


def test_i10_08_server_host_rewritten_in_redis_does_not_decrypt(gw, redis_server):
    pid = gw.create_project()
    password = canary("pw-")
    gw.track(password)
    real = silent_listener(0.3)
    moved = socket.socket()
    moved.bind(("127.0.0.2", 0))
    moved.listen(8)
    moved.settimeout(0.3)
    try:
        port = real.getsockname()[1]
        r = gw.admin("POST", f"/projects/{pid}/servers",
                     {"id": "s1", "name": "box", "server_type": "ssh", "workspace_path": "/tmp",
                      "connection_config": {"host": "127.0.0.1", "port": port,
                                            "username": "deploy", "auth_method": "password",
                                            "password": password}})
        assert r.status_code == 201, r.text
        rc = redis_server.client
        field = f"byok:{{{pid}}}:servers"
        rec = json.loads(rc.hget(field, "s1"))
        version = (rec["v"], rec["secrets"]["v"])
        rec["connection_config"]["host"] = "127.0.0.2"
        rec["connection_config"]["port"] = moved.getsockname()[1]
        rc.hset(field, "s1", json.dumps(rec))

        r = gw.admin("POST", f"/projects/{pid}/servers/s1/test", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "failed", r.json()
        with pytest.raises(socket.timeout):
            conn, _ = moved.accept()   # nothing was sent to the rewritten host
            conn.close()
        assert version == (2, 2)
        gw.assert_no_leaks(r)
        redis_server.assert_absent([password])
    finally:
        real.close()
        moved.close()


def test_i10_08_trust_on_first_use_reseals_for_the_pinned_key(gw, sshd, redis_server):
    pid = gw.create_project()
    r = gw.admin("POST", f"/projects/{pid}/servers",
                 {"id": "s1", "name": "ssh", "server_type": "ssh", "workspace_path": "/tmp",
                  "connection_config": {"host": sshd.host, "port": sshd.port,
                                        "username": sshd.username, "auth_method": "key",
                                        "private_key": sshd.private_key}})
    assert r.status_code == 201, r.text
    field = f"byok:{{{pid}}}:servers"
    before = json.loads(redis_server.client.hget(field, "s1"))["secrets"]["ct"]
    for _ in range(2):   # pins on the first run; the second opens the re-sealed secrets
        r = gw.admin("POST", f"/projects/{pid}/servers/s1/test", timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    rec = json.loads(redis_server.client.hget(field, "s1"))
    assert rec["connection_config"]["host_key_fingerprint"] == sshd.fingerprint
    assert rec["secrets"]["ct"] != before
    # The pinned fingerprint emptied straight in Redis: the secrets no longer open.
    rec["connection_config"]["host_key_fingerprint"] = ""
    redis_server.client.hset(field, "s1", json.dumps(rec))
    r = gw.admin("POST", f"/projects/{pid}/servers/s1/test", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text


# -- item 3: key tests with answers of any size -------------------------------------

@pytest.mark.parametrize("status,verdict", [(200, "valid"), (401, "invalid")])
def test_i10_03_key_test_with_a_64k_answer(gw, fake_provider, status, verdict):
    p = gw.provision(keys={"openai": None})
    models = {"object": "list",
              "data": [{"id": f"model-{i:05d}", "object": "model", "owned_by": "fake"}
                       for i in range(1200)]}
    body = json.dumps(models).encode()
    if status != 200:
        body = json.dumps({"error": {"message": "bad key", "padding": "x" * 65536}}).encode()
    assert len(body) > 60000
    fake_provider.set_rule("/openai/models", status=status, body=body,
                           headers={"Content-Type": "application/json"})
    r = gw.admin("POST", f"/projects/{p.pid}/keys/openai/test")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    out = r.json()
    assert out["status"] == verdict and out["http_status"] == status, out
    assert len(out["message"]) <= 200
    assert "too big subrequest response" not in gw.error_log()
    listed = gw.admin("GET", f"/projects/{p.pid}/keys").json()
    assert [k["test_status"] for k in listed if k["provider"] == "openai"] == [verdict]
    gw.assert_no_leaks(r)


# -- item 7: minting and revoking gateway keys ------------------------------------

def mint(gw, pid, token=None, **body):
    return gw.admin("POST", f"/projects/{pid}/api-keys", {"label": "x", **body}, token=token)


def test_i10_07_plain_gateway_key_cannot_mint_or_revoke(gw):
    p = gw.provision(keys={})
    sibling = mint(gw, p.pid).json()
    r = mint(gw, p.pid, token=p.gateway_key)
    assert assert_json_error(r, 403)["code"] == "scope_required"
    r = gw.admin("DELETE", f"/projects/{p.pid}/api-keys/{sibling['id']}", token=p.gateway_key)
    assert assert_json_error(r, 403)["code"] == "scope_required"
    # The sibling still works; reading the list stays self-service.
    assert gw.chat(sibling["key"]).status_code == 200
    assert gw.admin("GET", f"/projects/{p.pid}/api-keys", token=p.gateway_key).status_code == 200
    # Only the admin or a manage_keys key may grant manage_keys.
    r = mint(gw, p.pid, token=p.gateway_key, scopes=["manage_keys"])
    assert_json_error(r, 403)


def test_i10_07_revoking_a_key_revokes_what_it_minted(gw, redis_server):
    p = gw.provision(keys={})
    manager = mint(gw, p.pid, scopes=["manage_keys"]).json()
    assert manager["scopes"] == ["manage_keys"] and "parent" not in manager
    child = mint(gw, p.pid, token=manager["key"], scopes=["manage_keys"]).json()
    assert child["parent"] == manager["id"]
    grandchild = mint(gw, p.pid, token=child["key"]).json()
    assert grandchild["parent"] == child["id"]
    other = mint(gw, p.pid).json()   # minted by the admin: not in the chain
    for k in (manager, child, grandchild, other):
        assert gw.chat(k["key"]).status_code == 200
    sha = hashlib.sha256(grandchild["key"].encode()).hexdigest()
    assert redis_server.client.hget(f"byok:apikey:{sha}", "parent") == child["id"]

    r = gw.admin("DELETE", f"/projects/{p.pid}/api-keys/{manager['id']}")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["also_revoked"]) == sorted([child["id"], grandchild["id"]])

    def refused():
        return all(gw.chat(k["key"], headers={"Connection": "close"}).status_code == 401
                   for k in (manager, child, grandchild) for _ in range(2))
    wait_until(refused, 5.0, what="the chain of minted keys refused")
    assert gw.chat(other["key"]).status_code == 200
    listed = {k["id"]: k for k in gw.admin("GET", f"/projects/{p.pid}/api-keys").json()}
    assert listed[grandchild["id"]]["revoked"] and listed[child["id"]]["revoked"]
    assert listed[grandchild["id"]]["parent"] == child["id"]
    assert not listed[other["id"]]["revoked"]
    # A revoked manager cannot mint any more.
    assert mint(gw, p.pid, token=manager["key"]).status_code == 401
    gw.assert_no_leaks(r)


# -- item 18: a project's audit trail ------------------------------------------------

def test_i10_18_project_audit_reads_its_own_stream(gw, redis_server):
    a = gw.provision(keys={})
    b = gw.provision(keys={})
    rc = redis_server.client
    # Many entries of other projects in the global stream, newer than A's.
    for n in range(3):
        gw.admin("PATCH", f"/projects/{a.pid}", {"name": f"A{n}"})
    pipe = rc.pipeline(transaction=False)
    for i in range(20000):
        pipe.xadd("byok:audit", {"actor": "admin:x", "action": "key.put",
                                 "project": f"other{i % 50}", "target": "openai",
                                 "at": "2026-01-01T00:00:00Z"})
    pipe.execute()
    for n in range(3):
        gw.admin("PATCH", f"/projects/{b.pid}", {"name": f"B{n}"})

    assert rc.type(f"byok:{{{a.pid}}}:audit") == "stream"
    own = rc.xrange(f"byok:{{{a.pid}}}:audit")
    assert own and all(f["project"] == a.pid for _, f in own)

    r = gw.admin("GET", "/audit", token=a.gateway_key, params={"project": a.pid, "limit": 1000})
    assert r.status_code == 200, r.text
    entries = r.json()
    assert entries and all(e["project"] == a.pid for e in entries), entries[:3]
    assert [e["id"] for e in entries] == [i for i, _ in reversed(own)]
    actions = [e["action"] for e in entries]
    assert actions.count("project.update") == 3
    assert "project.create" in actions and "apikey.create" in actions
    # The same ids as in the global stream.
    glob = {i for i, _ in rc.xrange("byok:audit")}
    assert {e["id"] for e in entries} <= glob
    assert gw.admin("GET", "/audit", token=a.gateway_key,
                    params={"project": b.pid}).status_code == 404

    # Deleting the project deletes its stream (a new project with that id
    # starts with an empty history).
    assert gw.admin("DELETE", f"/projects/{a.pid}").status_code == 200
    assert not rc.exists(f"byok:{{{a.pid}}}:audit")


# -- item 6: local catalog providers are opt-in -------------------------------------

def local_catalog(fake_provider):
    """The test catalog plus an `ollama` entry marked local, as shipped."""
    return providers_yaml(fake_provider.base) + f"""\
  ollama:
    name: Ollama
    base_url: {fake_provider.base}/ollama
    openai_base: {fake_provider.base}/ollama/v1
    auth: bearer
    local: true
"""


def test_i10_06_shipped_catalog_keeps_ollama_off(gateway, fake_provider):
    shipped = (REPO / "conf" / "providers.yaml").read_text()
    assert "local: true" in shipped.split("ollama:", 1)[1].split("custom:", 1)[0]
    # The built-in default (no byok_providers), and the shipped file.
    for options in ({"overrides": {"byok_providers": None}}, {"providers": shipped}):
        gw = gateway(**options)
        p = gw.provision(keys={})
        r = gw.admin("PUT", f"/projects/{p.pid}/keys/ollama", {"key": "anything-123456"},
                     token=p.gateway_key)
        err = assert_json_error(r, 403)
        assert err["code"] == "provider_not_allowed"
        assert "byok_allow_endpoint" in err["message"]
        r = gw.request("GET", "/ollama/api/tags", headers=p.auth)
        assert assert_json_error(r, 403)["code"] == "provider_not_allowed"
        r = gw.chat(p, model="ollama/llama3")
        assert assert_json_error(r, 403)["code"] == "provider_not_allowed"
        listed = {x["id"]: x for x in gw.admin("GET", "/providers").json()}
        assert listed["ollama"]["enabled"] is False and listed["openai"]["enabled"] is True
        gw.stop()


def test_i10_06_local_provider_needs_byok_allow_endpoint(gateway, fake_provider):
    gw = gateway(providers=local_catalog(fake_provider))
    p = gw.provision(keys={})
    r = gw.admin("PUT", f"/projects/{p.pid}/keys/ollama", {"key": "anything-123456"})
    assert assert_json_error(r, 403)["code"] == "provider_not_allowed"
    r = gw.request("GET", "/ollama/api/tags", headers=p.auth)
    assert assert_json_error(r, 403)["code"] == "provider_not_allowed"
    assert not fake_provider.requests("/ollama")
    gw.stop()

    # The operator names its host: tenants may use it.
    gw = gateway(providers=local_catalog(fake_provider), extra_http=ALLOW_LOOPBACK)
    p = gw.provision(keys={})
    key = canary("ollama-")
    r = gw.admin("PUT", f"/projects/{p.pid}/keys/ollama", {"key": key}, token=p.gateway_key)
    assert r.status_code == 201, r.text
    r = gw.request("GET", "/ollama/api/tags", headers=p.auth)
    assert r.status_code == 200, r.text
    assert fake_provider.last("/ollama").headers["authorization"] == f"Bearer {key}"
    gw.assert_no_leaks(r)
