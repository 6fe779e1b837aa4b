"""Execution servers (SPEC §8): CRUD, one default per project, secrets of
connection_config encrypted and never returned, and connection tests that
really connect (a real sshd on loopback, real directories)."""

import json
import socket
import threading
import time

from harness import assert_json_error, canary, free_port, until

HANG_GUARD = 60  # seconds; only stops a hung test, never decides a verdict


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


def run_test(gw, pid, sid, want="ok", stage="done"):
    """POST …/test; asserts the README's answer (status ok|failed and the
    stage that failed, or "done") and that the outcome was stored."""
    t0 = time.monotonic()
    r = gw.admin("POST", f"/projects/{pid}/servers/{sid}/test", timeout=HANG_GUARD)
    print(f"server test took {time.monotonic() - t0:.2f}s")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["stage"]) == (want, stage), body
    assert body["id"] == sid and isinstance(body["latency_ms"], int), body
    s = server(gw, pid, sid)
    assert s.get("last_tested_at"), s
    assert s["test_status"] == want, s
    return r


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
    assert r.status_code == 200, r.text
    assert r.json() == {"id": b, "deleted": True, "was_default": False}, r.text
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
    run_test(gw, pid, good)
    run_test(gw, pid, missing, "failed", "workspace")
    run_test(gw, pid, notdir, "failed", "workspace")


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
    r = run_test(gw, pid, sid)
    gw.assert_no_leaks(r, extra=[sshd.private_key.strip()])


def test_ssh_wrong_host_key_is_refused(gw, sshd):
    pid = gw.create_project()
    wrong = "SHA256:" + "A" * 43
    sid, _ = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd, host_key_fingerprint=wrong))
    run_test(gw, pid, sid, "failed", "host_key")


def test_ssh_trust_on_first_use_records_fingerprint(gw, sshd):
    pid = gw.create_project()
    sid, _ = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd, host_key_fingerprint=None))
    run_test(gw, pid, sid)
    assert sshd.fingerprint in json.dumps(server(gw, pid, sid))


def test_ssh_missing_workspace_fails(gw, sshd):
    pid = gw.create_project()
    sid, _ = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/nonexistent/ws",
                    connection_config=ssh_config(sshd))
    run_test(gw, pid, sid, "failed", "workspace")


def test_ssh_closed_port_fails_at_connect(gw, sshd):
    pid = gw.create_project()
    sid, _ = create(gw, pid, name="ssh", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd, port=free_port()))
    run_test(gw, pid, sid, "failed", "connect")


def test_gateway_keeps_serving_during_ssh_test(gateway, fake_provider, sshd):
    """The ssh test runs on the thread pool, not the event loop. Its target
    accepts TCP and never speaks SSH, so libssh blocks waiting for the banner
    until the test closes that connection. One worker: gateway requests sent
    while the ssh test is pending must be answered before it is — proof that
    the worker's event loop is free."""
    gw = gateway(worker_processes=1)
    p = gw.provision(keys={"openai": None})
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(1)
    mute.settimeout(HANG_GUARD)
    sid, _ = create(gw, p.pid, name="mute", server_type="ssh", workspace_path="/tmp",
                    connection_config=ssh_config(sshd, port=mute.getsockname()[1]))
    done = []
    t = threading.Thread(target=lambda: done.append(
        gw.admin("POST", f"/projects/{p.pid}/servers/{sid}/test", timeout=HANG_GUARD)))
    t.start()
    conn = None
    try:
        conn, _ = mute.accept()  # libssh connected and now waits for the banner
        for _ in range(6):
            r = gw.chat(p, model="gpt-4o", headers={"Connection": "close"})
            assert r.status_code == 200 and r.headers["x-byok-route"] == "byok", r.text
            assert not done, "the ssh test ended before the concurrent requests were answered"
    finally:
        if conn is not None:
            conn.close()  # release libssh
        t.join(HANG_GUARD)
        mute.close()
    assert done and done[0].status_code == 200, done
    body = done[0].json()
    assert (body["status"], body["stage"]) == ("failed", "connect"), body


def test_execution_server_variable(gateway, tmp_path):
    gw = gateway(extra_server="add_header x-test-exec $byok_execution_server always;")
    p = gw.provision(keys={"openai": None})
    sid, _ = create(gw, p.pid, name="d", server_type="local", workspace_path=str(tmp_path),
                    is_default=True)
    # the default is set by an invalidating write; the variable follows it
    until(lambda: gw.chat(p, model="gpt-4o", headers={"Connection": "close"}),
          lambda r: r.headers.get("x-test-exec") == sid, HANG_GUARD,
          what="$byok_execution_server")


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
