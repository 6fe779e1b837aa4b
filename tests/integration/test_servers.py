"""Execution servers (SPEC §8): CRUD, one default per project, secrets of
connection_config encrypted and never returned, and connection tests that
really connect (a real sshd on loopback, real directories)."""

import json
import threading
import time


from harness import assert_json_error, canary, free_port

# The spec leaves the success word of test_status open; failures are any
# other non-empty value.
OK = {"ok", "success", "valid", "connected", "reachable"}


def listing(body, *names):
    if isinstance(body, list):
        return body
    for n in names + ("servers", "data", "items"):
        if isinstance(body.get(n), list):
            return body[n]
    raise AssertionError(f"no list in {body!r}")


def create(gw, pid, **fields):
    r = gw.admin("POST", f"/projects/{pid}/servers", fields)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body.get("id"), body
    return body["id"], r


def server(gw, pid, sid):
    r = gw.admin("GET", f"/projects/{pid}/servers/{sid}")
    assert r.status_code == 200, r.text
    return r.json()


def run_test(gw, pid, sid, timeout=30):
    t0 = time.monotonic()
    r = gw.admin("POST", f"/projects/{pid}/servers/{sid}/test", timeout=timeout)
    assert r.status_code == 200, r.text
    s = server(gw, pid, sid)
    assert s.get("last_tested_at"), s
    assert s.get("test_status"), s
    return s["test_status"], r, time.monotonic() - t0


def ssh_config(sshd, **over):
    cfg = {"host": sshd.host, "port": sshd.port, "username": sshd.username,
           "auth_method": "key", "private_key": sshd.private_key,
           "host_key_fingerprint": sshd.fingerprint}
    cfg.update(over)
    return {k: v for k, v in cfg.items() if v is not None}


def test_local_server_crud_and_default(gw, tmp_path, redis_server):
    pid = gw.create_project()
    ws = tmp_path / "ws"
    ws.mkdir()
    a, _ = create(gw, pid, name="a", server_type="local", workspace_path=str(ws), is_default=True)
    b, _ = create(gw, pid, name="b", server_type="local", workspace_path=str(ws), is_default=True)
    r = gw.admin("GET", f"/projects/{pid}/servers")
    assert r.status_code == 200, r.text
    items = listing(r.json())
    assert {i["id"] for i in items} == {a, b}
    assert sum(1 for i in items if i.get("is_default")) == 1, items
    default = gw.admin("GET", f"/projects/{pid}/servers/default")
    assert default.status_code == 200, default.text
    assert default.json()["id"] == b

    r = gw.admin("PATCH", f"/projects/{pid}/servers/{a}", {"is_default": True, "name": "a2"})
    assert r.status_code == 200, r.text
    assert gw.admin("GET", f"/projects/{pid}/servers/default").json()["id"] == a
    assert server(gw, pid, a)["name"] == "a2"
    assert server(gw, pid, b).get("is_default") is False
    assert redis_server.client.hexists(f"byok:{{{pid}}}:servers", a)

    r = gw.admin("DELETE", f"/projects/{pid}/servers/{b}")
    assert r.status_code in (200, 204), r.text
    assert gw.admin("GET", f"/projects/{pid}/servers/{b}").status_code == 404
    assert not redis_server.client.hexists(f"byok:{{{pid}}}:servers", b)


def test_server_input_validation(gw):
    pid = gw.create_project()
    assert_json_error(gw.admin("POST", f"/projects/{pid}/servers",
                               {"name": "x", "server_type": "telnet"}), 422)
    r = gw.admin("POST", f"/projects/{pid}/servers",
                 {"name": "x", "server_type": "local", "bogus": 1})
    assert_json_error(r, 422)
    r = gw.admin("POST", f"/projects/{pid}/servers", {"name": 5, "server_type": "local"})
    assert_json_error(r, 400)


def test_local_server_test_checks_directory(gw, tmp_path):
    pid = gw.create_project()
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "file").write_text("x")
    good, _ = create(gw, pid, name="g", server_type="local", workspace_path=str(ws))
    missing, _ = create(gw, pid, name="m", server_type="local",
                        workspace_path=str(tmp_path / "nope"))
    notdir, _ = create(gw, pid, name="f", server_type="local",
                       workspace_path=str(tmp_path / "file"))
    assert run_test(gw, pid, good)[0] in OK
    assert run_test(gw, pid, missing)[0] not in OK
    assert run_test(gw, pid, notdir)[0] not in OK


def test_ssh_secrets_encrypted_and_never_returned(gw, redis_server, sshd):
    pid = gw.create_project()
    password = canary("pw-")
    gw.track(password, sshd.private_key.strip())
    key_body = "".join(sshd.private_key.strip().splitlines()[1:-1])
    gw.track(key_body)
    sid, r = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd))
    pw_sid, r2 = create(gw, pid, name="pw", server_type="ssh", workspace_path="/tmp",
                        connection_config=ssh_config(sshd, auth_method="password",
                                                     private_key=None, password=password))
    raw = redis_server.client.hget(f"byok:{{{pid}}}:servers", sid)
    assert raw and key_body not in raw
    rec = json.loads(raw)
    assert "ct" in json.dumps(rec) and "kid" in json.dumps(rec), rec
    redis_server.assert_absent(gw.secrets)

    responses = [r, r2, gw.admin("GET", f"/projects/{pid}/servers"),
                 gw.admin("GET", f"/projects/{pid}/servers/{sid}"),
                 gw.admin("GET", f"/projects/{pid}/servers/{pw_sid}")]
    gw.assert_no_leaks(*responses)
    # the listing says which secret fields are set, without their values
    assert "private_key" in responses[3].text
    assert "password" in responses[4].text


def test_ssh_test_really_connects(gw, sshd):
    pid = gw.create_project()
    sid, _ = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd))
    status, r, _ = run_test(gw, pid, sid)
    assert status in OK, r.text
    gw.assert_no_leaks(r, extra=[sshd.private_key.strip()])


def test_ssh_wrong_host_key_is_refused(gw, sshd):
    pid = gw.create_project()
    wrong = "SHA256:" + "A" * 43
    sid, _ = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd, host_key_fingerprint=wrong))
    assert run_test(gw, pid, sid)[0] not in OK


def test_ssh_trust_on_first_use_records_fingerprint(gw, sshd):
    pid = gw.create_project()
    sid, _ = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd, host_key_fingerprint=None))
    assert run_test(gw, pid, sid)[0] in OK
    assert sshd.fingerprint in json.dumps(server(gw, pid, sid))


def test_ssh_missing_workspace_fails(gw, sshd):
    pid = gw.create_project()
    sid, _ = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/nonexistent/ws",
                    connection_config=ssh_config(sshd))
    assert run_test(gw, pid, sid)[0] not in OK


def test_ssh_closed_port_fails_in_bounded_time(gw, sshd):
    pid = gw.create_project()
    sid, _ = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd, port=free_port()))
    status, _, took = run_test(gw, pid, sid)
    assert status not in OK
    assert took < 15


def test_gateway_keeps_serving_during_ssh_test(gw, fake_provider, sshd):
    """The ssh test runs on the thread pool, not the event loop."""
    p = gw.provision(keys={"openai": None})
    # 192.0.2.1 (TEST-NET-1) does not answer: the connect waits for its timeout
    sid, _ = create(gw, p.pid, name="slow", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd, host="192.0.2.1", port=22))
    t = threading.Thread(target=lambda: gw.admin("POST", f"/projects/{p.pid}/servers/{sid}/test",
                                                 timeout=60))
    t.start()
    try:
        time.sleep(0.3)
        for _ in range(6):
            t0 = time.monotonic()
            r = gw.chat(p, model="gpt-4o", headers={"Connection": "close"})
            assert r.status_code == 200
            assert time.monotonic() - t0 < 0.5
    finally:
        t.join(60)


def test_execution_server_variable(gateway, tmp_path):
    gw = gateway(extra_server="add_header x-test-exec $byok_execution_server always;")
    p = gw.provision(keys={"openai": None})
    sid, _ = create(gw, p.pid, name="d", server_type="local", workspace_path=str(tmp_path),
                    is_default=True)
    r = gw.chat(p, model="gpt-4o", headers={"Connection": "close"})
    deadline = time.monotonic() + 1
    while r.headers.get("x-test-exec") != sid and time.monotonic() < deadline:
        time.sleep(0.05)
        r = gw.chat(p, model="gpt-4o", headers={"Connection": "close"})
    assert r.headers.get("x-test-exec") == sid


def test_self_service_tests_cannot_probe_private_targets(gw, tmp_path, fake_provider):
    """A project's own gateway key may manage its servers, but its connection
    tests may not reach the operator's network or the gateway's filesystem."""
    p = gw.provision()
    ws = tmp_path / "ws"
    ws.mkdir()
    local, _ = create(gw, p.pid, name="l", server_type="local", workspace_path=str(ws))
    docker, _ = create(gw, p.pid, name="d", server_type="docker",
                       connection_config={"endpoint": fake_provider.base + "/docker"})
    before = len(fake_provider.requests())
    for sid in (local, docker):
        r = gw.admin("POST", f"/projects/{p.pid}/servers/{sid}/test", {}, token=p.gateway_key)
        assert_json_error(r, 403)
    assert len(fake_provider.requests()) == before, "a self-service test reached a loopback target"
    # The operator may test the same servers.
    r = gw.admin("POST", f"/projects/{p.pid}/servers/{docker}/test", {})
    assert r.status_code == 200, r.text
    assert len(fake_provider.requests()) == before + 1
