"""Issue 10, execution-server items, tried as a hostile tenant would with the
project's own gateway key: SSRF through the ssh test (1), retargeting a
stored secret (2, servers half), echoed secrets in test results (12), the
tier rule (16) and the exec fallback of the workspace check (17)."""

import base64
import json
import socket

import pytest

from harness import SshServer, assert_json_error, canary, free_port, silent_listener
from test_resolution import FakeDns

UNREACHABLE = ("the server could not be reached, or the target is not allowed for "
               "self-service tests")


@pytest.fixture
def dns():
    d = FakeDns()
    yield d
    d.close()


@pytest.fixture(scope="module")
def sshd_no_sftp(tmp_path_factory):
    """An sshd without any Subsystem line: exec works, sftp does not."""
    server = SshServer(tmp_path_factory.mktemp("sshd-nosftp"))
    text = server.config.read_text()
    assert "Subsystem" in text
    server.config.write_text("".join(line for line in text.splitlines(True)
                                     if not line.startswith("Subsystem")))
    server.start()
    yield server
    server.stop()


def loopback_name() -> str:
    """A name the system resolver (libssh's) maps to loopback and the write-
    time checks let through: the machine's own host name when /etc/hosts
    says so. The fake DNS answers 127.0.0.1 for it too."""
    name = socket.gethostname()
    try:
        if name and name.lower() != "localhost" and \
                socket.gethostbyname(name).startswith("127."):
            return name
    except OSError:
        pass
    return "build.internal"


def ssh_cc(sshd, **over):
    cfg = {"host": sshd.host, "port": sshd.port, "username": sshd.username,
           "auth_method": "key", "private_key": sshd.private_key,
           "host_key_fingerprint": sshd.fingerprint}
    cfg.update(over)
    return {k: v for k, v in cfg.items() if v is not None}


def create(gw, pid, token=None, **fields):
    r = gw.admin("POST", f"/projects/{pid}/servers", fields, token=token)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_server(gw, pid, sid, token=None):
    r = gw.admin("POST", f"/projects/{pid}/servers/{sid}/test", {}, token=token, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


test_server.__test__ = False  # a helper, not a test


def raw_record(redis_server, pid, sid):
    return redis_server.client.hget(f"byok:{{{pid}}}:servers", sid)


# ---- item 1 ---------------------------------------------------------------------


def test_i10_01_ssh_name_resolving_to_loopback_is_refused(gateway, dns, sshd):
    listener = silent_listener(0.3)
    port = listener.getsockname()[1]
    name = loopback_name()
    try:
        gw = gateway(extra_http=f"resolver 127.0.0.1:{dns.port} ipv6=off valid=1s;\n"
                                "    byok_server_test_timeout 3s;")
        p = gw.provision(keys={})
        sid = create(gw, p.pid, token=p.gateway_key, name="ssrf", server_type="ssh",
                     workspace_path="/tmp", connection_config=ssh_cc(sshd, host=name, port=port))
        body = test_server(gw, p.pid, sid, token=p.gateway_key)
        with pytest.raises(socket.timeout):
            conn, _ = listener.accept()  # libssh never connected anywhere
            conn.close()
        assert (name, 1) in dns.queries, "the module did not resolve the name itself"
        assert body["status"] == "failed", body
        assert body["message"] == UNREACHABLE
        assert body["excerpt"] == "" and body["latency_ms"] == 0
        gw.assert_no_leaks(extra=[sshd.private_key.strip()])
    finally:
        listener.close()


def test_i10_01_refused_closed_and_private_look_alike_for_a_gateway_key(gateway, dns, sshd):
    """No port scanner: a private literal, a name resolving to loopback and a
    closed port on an allowed host all give one answer."""
    gw = gateway(extra_http=f"resolver 127.0.0.1:{dns.port} ipv6=off valid=1s;\n"
                            "    byok_allow_endpoint allowed.internal;")
    p = gw.provision(keys={})
    closed = free_port()
    answers = []
    for host, port in (("10.1.2.3", 22), ("inside.internal", sshd.port),
                       ("allowed.internal", closed)):
        sid = create(gw, p.pid, token=p.gateway_key, name=host, server_type="ssh",
                     workspace_path="/tmp", connection_config=ssh_cc(sshd, host=host, port=port))
        body = test_server(gw, p.pid, sid, token=p.gateway_key)
        body.pop("id")
        answers.append(body)
    assert answers[0]["message"] == UNREACHABLE, answers[0]
    assert all(a == answers[0] for a in answers), answers
    # HTTP-tested types: a refused name and a closed port look alike too.
    http = []
    for host, port in (("inside.internal", 443), ("allowed.internal", closed)):
        sid = create(gw, p.pid, token=p.gateway_key, name="d" + host, server_type="docker",
                     connection_config={"endpoint": f"https://{host}:{port}"})
        body = test_server(gw, p.pid, sid, token=p.gateway_key)
        http.append({k: v for k, v in body.items() if k != "id"})
    assert http[0]["message"] == UNREACHABLE, http
    assert http[0] == http[1], http
    # The operator keeps the detail.
    sid = create(gw, p.pid, name="op", server_type="ssh", workspace_path="/tmp",
                 connection_config=ssh_cc(sshd, port=closed))
    body = test_server(gw, p.pid, sid)
    assert body["message"] == "cannot connect to the server"
    assert body["excerpt"], body


def test_i10_01_allowed_name_is_connected_through_the_checked_address(gateway, dns, sshd):
    """libssh gets the address the module checked: it could not resolve
    this name itself (only the fake DNS knows it)."""
    gw = gateway(extra_http=f"resolver 127.0.0.1:{dns.port} ipv6=off valid=1s;\n"
                            "    byok_allow_endpoint sshd.internal;")
    p = gw.provision(keys={})
    sid = create(gw, p.pid, token=p.gateway_key, name="ok", server_type="ssh",
                 workspace_path="/tmp", connection_config=ssh_cc(sshd, host="sshd.internal"))
    body = test_server(gw, p.pid, sid, token=p.gateway_key)
    assert body["status"] == "ok", body
    assert ("sshd.internal", 1) in dns.queries


# ---- item 2 ---------------------------------------------------------------------


def test_i10_02_retargeting_a_server_secret_needs_the_secret(gw, redis_server, sshd,
                                                             fake_provider):
    p = gw.provision(keys={})
    sid = create(gw, p.pid, name="ssh", server_type="ssh", workspace_path="/tmp",
                 connection_config=ssh_cc(sshd))
    token = canary("k8s-")
    gw.track(token)
    kid = create(gw, p.pid, name="k8s", server_type="kubernetes",
                 connection_config={"api_url": "https://k8s.example", "token": token})
    before = {s: raw_record(redis_server, p.pid, s) for s in (sid, kid)}
    moves = [(sid, {"host": "attacker.example"}), (sid, {"port": sshd.port + 1}),
             (sid, {"username": "other"}), (sid, {"host_key_fingerprint": ""}),
             (kid, {"api_url": "https://attacker.example"})]
    for server, cc in moves:
        for method in ("PATCH",):
            r = gw.admin(method, f"/projects/{p.pid}/servers/{server}",
                         {"connection_config": cc}, token=p.gateway_key)
            assert_json_error(r, 409)
            assert r.json()["error"]["code"] == "secret_required", (cc, r.text)
    # PUT carries its own secrets: without them nothing is written either.
    r = gw.admin("PUT", f"/projects/{p.pid}/servers/{sid}",
                 {"name": "ssh", "server_type": "ssh", "workspace_path": "/tmp",
                  "connection_config": ssh_cc(sshd, host="attacker.example", private_key=None)},
                 token=p.gateway_key)
    assert r.status_code == 422, r.text
    assert {s: raw_record(redis_server, p.pid, s) for s in (sid, kid)} == before

    # With the secret in the same request, or by the operator, the change is made.
    r = gw.admin("PATCH", f"/projects/{p.pid}/servers/{sid}",
                 {"connection_config": {"port": sshd.port, "host_key_fingerprint": "",
                                        "private_key": sshd.private_key}},
                 token=p.gateway_key)
    assert r.status_code == 200, r.text
    r = gw.admin("PATCH", f"/projects/{p.pid}/servers/{kid}",
                 {"connection_config": {"api_url": "https://k8s2.example"}})
    assert r.status_code == 200, r.text
    # Renaming needs nothing.
    r = gw.admin("PATCH", f"/projects/{p.pid}/servers/{sid}", {"name": "x"},
                 token=p.gateway_key)
    assert r.status_code == 200, r.text
    gw.assert_no_leaks(r, extra=[sshd.private_key.strip()])


# ---- item 12 --------------------------------------------------------------------


def echo_forms(secret: str):
    return [secret.upper(), base64.b64encode(secret.encode()).decode(),
            secret[::-1], " ".join(secret)]


def test_i10_12_kubernetes_version_echoing_the_token_is_redacted(gateway, redis_server,
                                                                 fake_provider):
    gw = gateway(extra_http="byok_allow_endpoint 127.0.0.1;")
    p = gw.provision(keys={})
    token = canary("k8s-token-")
    gw.track(token)
    forms = echo_forms(token)
    fake_provider.set_rule("/k8s/version", body={"major": "1", "minor": "29",
                                                 "gitVersion": "v1.29.3-" + token})
    fake_provider.set_rule("/k8s-echo/version", status=500,
                           body="token " + " / ".join(forms) + " refused")
    for api in ("/k8s", "/k8s-echo"):
        sid = create(gw, p.pid, name=api, server_type="kubernetes",
                     connection_config={"api_url": fake_provider.base + api, "token": token})
        r = gw.admin("POST", f"/projects/{p.pid}/servers/{sid}/test", {})
        assert r.status_code == 200, r.text
        got = gw.admin("GET", f"/projects/{p.pid}/servers/{sid}")
        stored = raw_record(redis_server, p.pid, sid)
        assert fake_provider.last(api).headers["authorization"] == f"Bearer {token}"
        for text in (r.text, got.text, stored):
            for s in [token] + forms:
                assert s not in text, f"{s[:8]}… in {text}"
        assert "[redacted]" in r.json()["excerpt"], r.text
        assert got.json()["test_excerpt"] == r.json()["excerpt"]
    assert r.json()["http_status"] == 500
    gw.assert_no_leaks(r, got, extra=forms)


def test_i10_12_key_test_echoing_the_key_is_redacted(gw, redis_server, fake_provider):
    p = gw.provision(keys={})
    key = gw.put_key(p.pid, "openai")
    forms = echo_forms(key)
    fake_provider.fail("/openai/models", 401,
                       "Incorrect API key provided: " + " or ".join(forms))
    r = gw.admin("POST", f"/projects/{p.pid}/keys/openai/test", {})
    assert r.status_code == 200, r.text
    stored = redis_server.client.hget(f"byok:{{{p.pid}}}:keys", "openai")
    for text in (r.text, stored):
        for s in [key] + forms:
            assert s not in text, f"{s[:8]}… in {text}"
    body = r.json()
    assert body["status"] == "invalid" and body["http_status"] == 401
    assert body["message"] == "the provider refused the key"
    assert body["excerpt"].startswith("Incorrect API key provided")
    gw.assert_no_leaks(r, extra=forms)


# ---- item 16 --------------------------------------------------------------------


def test_i10_16_free_project_cannot_create_servers(gw, tmp_path):
    p = gw.provision(tier="free", keys={})
    for token in (None, p.gateway_key):
        r = gw.admin("POST", f"/projects/{p.pid}/servers",
                     {"name": "l", "server_type": "local", "workspace_path": str(tmp_path)},
                     token=token)
        assert_json_error(r, 403)
        assert r.json()["error"]["message"] == "BYOK requires the starter tier or above"
    # A server made while on starter cannot be replaced once the tier is free.
    pid = gw.create_project(tier="starter")
    sid = create(gw, pid, name="l", server_type="local", workspace_path=str(tmp_path))
    assert gw.admin("PATCH", f"/projects/{pid}", {"tier": "free"}).status_code == 200
    r = gw.admin("PUT", f"/projects/{pid}/servers/{sid}",
                 {"name": "l2", "server_type": "local", "workspace_path": str(tmp_path)})
    assert_json_error(r, 403)
    assert r.json()["error"]["code"] == "tier_required"
    assert gw.admin("GET", f"/projects/{pid}/servers/{sid}").json()["name"] == "l"


# ---- item 17 --------------------------------------------------------------------


def test_i10_17_workspace_check_falls_back_to_exec_without_sftp(gw, sshd, sshd_no_sftp,
                                                                tmp_path):
    pid = gw.create_project()
    odd = tmp_path / "it's a $dir"
    odd.mkdir()
    cases = [(sshd_no_sftp, "/tmp", "ok", "exec"), (sshd, "/tmp", "ok", "sftp"),
             (sshd_no_sftp, str(odd), "ok", "exec"),
             (sshd_no_sftp, "/nonexistent/ws", "failed", "exec"),
             (sshd_no_sftp, str(odd / "file' ; true '"), "failed", "exec")]
    for server, path, status, method in cases:
        sid = create(gw, pid, name=path[:40], server_type="ssh", workspace_path=path,
                     connection_config=ssh_cc(server))
        body = test_server(gw, pid, sid)
        assert body["status"] == status, (path, body)
        assert body["workspace_check"] == method, (path, body)
        if status == "failed":
            assert body["stage"] == "workspace", body
    gw.assert_no_leaks(extra=[sshd.private_key.strip(), sshd_no_sftp.private_key.strip()])
