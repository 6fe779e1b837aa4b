"""Issue 16, Cluster: the key layout in cluster mode (`byok_redis cluster=`).

Every EVAL the module sends declares every key it touches, all in one
project's `{pid}` slot; the global keys (gateway-key hashes, the projects
set, the global audit stream, the global day counters) are written by
single-key steps around the project's script, ordered so that a step that
is lost leaves the store fail-closed.

The store here is a ONE-node Redis Cluster (all 16384 slots on one node):
it refuses an EVAL whose declared KEYS are in different slots (CROSSSLOT),
so every script path below proves its declaration. Undeclared cross-slot
access inside a script is not refused by one node (Redis allows it when the
slots are local), so every test here also watches the node with MONITOR and
checks that each command a script ran touched its EVAL's slot (and
tests/unit/test_cluster_layout.cpp checks each command lib/ builds). The
one node serves every slot here; routing over several nodes is
test_i16_cluster.py.
"""
import hashlib
import json
import socket
import threading
import pytest
import redis

from harness import (START_TIMEOUT, ClusterNode, assert_json_error, until, wait_until)

HANG_GUARD = 10  # seconds; only guards against hangs


class ClusterRedis(ClusterNode):
    """A private one-node Redis Cluster owning every slot."""

    def start(self) -> None:
        if self.running():
            return
        super().start()
        probe = self.client
        if "cluster_state:ok" not in probe.execute_command("CLUSTER", "INFO"):
            probe.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_until(lambda: "cluster_state:ok" in probe.execute_command("CLUSTER", "INFO"),
                   START_TIMEOUT, what="cluster_state:ok")


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str) -> int:
    k = key.encode()
    o = k.find(b"{")
    if o >= 0:
        c = k.find(b"}", o + 1)
        if c > o + 1:
            k = k[o + 1:c]
    return crc16(k) % 16384


def monitor_args(line: bytes):
    """`+<time> [<db> <client>] "arg" "arg" ...` -> (client, [args])."""
    head, _, rest = line.partition(b"] ")
    client = head.split(b" ")[-1].decode()
    args, i = [], 0
    while i < len(rest):
        if rest[i:i + 1] != b'"':
            i += 1
            continue
        i += 1
        out = bytearray()
        while i < len(rest) and rest[i:i + 1] != b'"':
            ch = rest[i:i + 1]
            if ch == b"\\":
                nxt = rest[i + 1:i + 2]
                if nxt == b"x":
                    out.append(int(rest[i + 2:i + 4], 16))
                    i += 4
                    continue
                out += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a",
                        b"b": b"\b"}.get(nxt, nxt)
                i += 2
                continue
            out += ch
            i += 1
        args.append(out.decode("utf-8", "replace"))
        i += 1
    return client, args


class SlotWatch:
    """MONITOR on the node: each command a script ran (client `lua`, fed
    right after its EVAL) must touch a key of the EVAL's slot."""

    KEYLESS = {"PUBLISH"}
    ALL_ARGS = {"DEL", "EXISTS", "UNLINK"}

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.buf = b""
        self.problems, self.scripts, self.inner, self.seen_end = [], 0, 0, False
        self.declared, self.slots = [], set()
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                self.buf += data
                while b"\r\n" in self.buf:
                    line, self.buf = self.buf.split(b"\r\n", 1)
                    self._line(line)
        except OSError:
            return

    def _line(self, line: bytes):
        if not line.startswith(b"+") or b"[" not in line:
            return
        client, args = monitor_args(line)
        if not args:
            return
        cmd = args[0].upper()
        if client == "lua":
            if cmd in self.KEYLESS:
                return
            keys = args[1:] if cmd in self.ALL_ARGS else args[1:2]
            for k in keys:
                self.inner += 1
                if key_slot(k) not in self.slots:
                    self.problems.append(f"{cmd} {k} outside the slot of {self.declared[:3]}")
            return
        if cmd in ("EVAL", "EVALSHA"):
            self.declared = args[3:3 + int(args[2])]
            self.slots = {key_slot(k) for k in self.declared}
            self.scripts += 1
            self.seen_end = self.seen_end or self.declared == ["byok:{watch}:end"]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def _cluster_session(tmp_path_factory):
    server = ClusterRedis(tmp_path_factory.mktemp("cluster"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(_cluster_session):
    """Overrides conftest's: the `gateway` fixture uses this one-node cluster."""
    _cluster_session.start()
    _cluster_session.client.flushall()
    yield _cluster_session


@pytest.fixture
def slot_watch(redis_server):
    watch = SlotWatch(redis_server.port)
    yield watch
    # a last command flushes the monitor feed of what came before it
    redis_server.client.eval("return redis.call('EXISTS', KEYS[1])", 1, "byok:{watch}:end")
    wait_until(lambda: watch.seen_end, HANG_GUARD, what="the monitor to see the last script")
    watch.close()
    assert not watch.problems, "scripts touched keys outside their slot:\n" + \
        "\n".join(watch.problems[:20])


@pytest.fixture
def cgw(gateway, redis_server, slot_watch):
    return gateway(overrides={
        "byok_redis": f"byok_redis cluster={redis_server.address} timeout=2s;"})


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def project_keys(rc, pid):
    return sorted(k for k in rc.scan_iter(count=1000) if "{" + pid + "}" in k)


def invalidate(rc, pid):
    rc.publish("byok:invalidate", pid)


def refused(gw, key):
    return lambda: gw.chat(key)


def test_i16_cluster_fixture_refuses_cross_slot_scripts(redis_server):
    """The fixture is a real cluster: the old layout's scripts (global and
    `{pid}` keys in one EVAL) are refused there."""
    with pytest.raises(redis.ResponseError, match="CROSSSLOT"):
        redis_server.client.eval("return 1", 2, "byok:audit", "byok:project:{p1}")
    assert redis_server.client.eval("return 1", 2, "byok:{p1}:audit", "byok:project:{p1}") == 1


def test_i16_cluster_project_create_list_get_patch(cgw, redis_server):
    rc = redis_server.client
    a = cgw.create_project("acme")
    b = cgw.create_project("beta")
    listed = cgw.admin("GET", "/projects")
    assert listed.status_code == 200, listed.text
    assert [p["id"] for p in listed.json()] == [a, b]
    assert rc.smembers("byok:projects") == {a, b}
    assert assert_json_error(cgw.admin("POST", "/projects", {"id": a, "name": "again"}),
                             409)["code"] == "conflict"
    r = cgw.admin("PATCH", f"/projects/{a}", {"name": "Acme 2"})
    assert r.status_code == 200 and r.json()["name"] == "Acme 2", r.text
    # An id in the set whose hash is missing (a create cut short after the
    # SADD) is not listed.
    rc.sadd("byok:projects", "ghost")
    assert [p["id"] for p in cgw.admin("GET", "/projects").json()] == [a, b]


def test_i16_cluster_gateway_key_mint_use_revoke(cgw, redis_server, fake_provider):
    rc = redis_server.client
    p = cgw.provision(keys={"openai": None})
    r = cgw.chat(p)
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "byok"
    seen = fake_provider.last("/openai")
    assert seen.headers["authorization"] == f"Bearer {p.keys['openai']}"
    h = rc.hgetall(f"byok:apikey:{sha(p.gateway_key)}")
    assert h["project"] == p.pid and h["revoked"] == "0"
    # The admin API accepts the key for its own project.
    assert cgw.admin("GET", f"/projects/{p.pid}", token=p.gateway_key).status_code == 200

    rv = cgw.admin("DELETE", f"/projects/{p.pid}/api-keys/{p.gateway_key_id}")
    assert rv.status_code == 200 and rv.json()["revoked"] is True, rv.text
    meta = json.loads(rc.hget(f"byok:{{{p.pid}}}:apikeys", p.gateway_key_id))
    assert meta["revoked"] is True
    assert rc.hget(f"byok:apikey:{sha(p.gateway_key)}", "revoked") == "1"
    r = until(refused(cgw, p), lambda x: x.status_code == 401, HANG_GUARD,
              what="the revoked key refused")
    assert assert_json_error(r, 401)
    assert cgw.admin("GET", f"/projects/{p.pid}", token=p.gateway_key).status_code == 401
    cgw.assert_no_leaks(r)
    redis_server.assert_absent([p.gateway_key, p.keys["openai"]])


def test_i16_cluster_revocation_holds_when_the_pointer_step_is_lost(cgw, redis_server,
                                                                    fake_provider):
    """The `{pid}` metadata is the authority: a gateway-key hash that still
    says revoked=0 (its follow-up step lost) authenticates nothing."""
    rc = redis_server.client
    p = cgw.provision(keys={"openai": None})
    assert cgw.chat(p).status_code == 200
    assert cgw.admin("DELETE", f"/projects/{p.pid}/api-keys/{p.gateway_key_id}").status_code == 200
    pointer = f"byok:apikey:{sha(p.gateway_key)}"
    rc.hset(pointer, mapping={"revoked": "0", "revoked_at": ""})  # the lost follow-up
    invalidate(rc, p.pid)
    fake_provider.clear()
    r = until(refused(cgw, p), lambda x: x.status_code == 401, HANG_GUARD,
              what="the key refused by its metadata")
    assert "revoked" in assert_json_error(r, 401)["message"]
    assert cgw.admin("GET", f"/projects/{p.pid}", token=p.gateway_key).status_code == 401
    assert fake_provider.requests("/openai") == []


def test_i16_cluster_a_key_hash_without_metadata_authenticates_nothing(cgw, redis_server,
                                                                       fake_provider):
    """A mint cut short after its first step (the key's hash, written before
    the project's script) leaves a hash without metadata: refused."""
    rc = redis_server.client
    p = cgw.provision(keys={"openai": None})
    orphan = "byok_" + "A" * 43
    rc.hset(f"byok:apikey:{sha(orphan)}", mapping={
        "project": p.pid, "id": "kdeadbeef0000", "label": "x", "created_at": "",
        "revoked": "0", "scopes": "manage_keys", "parent": "", "expires_at": ""})
    r = cgw.chat(orphan)
    assert_json_error(r, 401)
    assert cgw.admin("GET", f"/projects/{p.pid}", token=orphan).status_code == 401
    assert fake_provider.requests("/openai") == []
    assert cgw.chat(p).status_code == 200


def test_i16_cluster_child_keys_revoked_with_their_parent(cgw, redis_server):
    rc = redis_server.client
    pid = cgw.create_project()
    r = cgw.admin("POST", f"/projects/{pid}/api-keys", {"scopes": ["manage_keys"]})
    assert r.status_code == 201, r.text
    parent = r.json()
    child = cgw.admin("POST", f"/projects/{pid}/api-keys", {"label": "c"}, token=parent["key"])
    assert child.status_code == 201, child.text
    rv = cgw.admin("DELETE", f"/projects/{pid}/api-keys/{parent['id']}")
    assert rv.json()["also_revoked"] == [child.json()["id"]], rv.text
    for k in (parent["key"], child.json()["key"]):
        assert rc.hget(f"byok:apikey:{sha(k)}", "revoked") == "1"
        assert_json_error(cgw.chat(k), 401)


def test_i16_cluster_audit_global_and_per_project(cgw, redis_server):
    rc = redis_server.client
    p = cgw.provision(keys={"openai": None})
    other = cgw.create_project()
    glob = cgw.admin("GET", "/audit", params={"limit": 100})
    assert glob.status_code == 200, glob.text
    actions = {(e["project"], e["action"]) for e in glob.json()}
    assert actions >= {(p.pid, "project.create"), (p.pid, "apikey.create"), (p.pid, "key.put"),
                       (other, "project.create")}, actions
    own = cgw.admin("GET", "/audit", params={"project": p.pid}, token=p.gateway_key)
    assert own.status_code == 200, own.text
    assert {e["project"] for e in own.json()} == {p.pid}
    assert {e["action"] for e in own.json()} >= {"project.create", "apikey.create"}
    # The global copy names the project's entry: the same event, one id each.
    project_ids = {e["id"] for e in own.json()}
    copies = [f for _, f in rc.xrange("byok:audit") if f.get("project") == p.pid]
    assert copies and {f["project_entry"] for f in copies} == project_ids


def test_i16_cluster_delete_removes_everything_of_the_project(cgw, redis_server,
                                                               fake_provider):
    rc = redis_server.client
    p = cgw.provision(keys={"openai": None})
    keep = cgw.provision(keys={"openai": None})
    second, _ = cgw.mint_key(p.pid, "second")
    assert cgw.chat(p).status_code == 200
    assert cgw.chat(keep).status_code == 200
    # the usage flush (once a second) writes the project's day counters
    wait_until(lambda: any(":usage:" in k or ":meter:" in k for k in project_keys(rc, p.pid)),
               HANG_GUARD, what="usage counters of the project")
    r = cgw.admin("DELETE", f"/projects/{p.pid}")
    assert r.status_code == 200, r.text
    assert project_keys(rc, p.pid) == []
    for k in (p.gateway_key, second):
        assert not rc.exists(f"byok:apikey:{sha(k)}")
    assert p.pid not in rc.smembers("byok:projects")
    assert all(rc.hget(k, "project") != p.pid for k in rc.scan_iter(match="byok:apikey:*"))
    assert [x["id"] for x in cgw.admin("GET", "/projects").json()] == [keep.pid]
    audit = [f for _, f in rc.xrange("byok:audit") if f.get("action") == "project.delete"]
    assert [f["project"] for f in audit] == [p.pid]
    r = until(refused(cgw, p), lambda x: x.status_code == 401, HANG_GUARD,
              what="the deleted project's key refused")
    assert_json_error(r, 401)
    assert cgw.chat(keep).status_code == 200
    assert cgw.admin("DELETE", f"/projects/{p.pid}").status_code == 404


def test_i16_cluster_stats_and_usage_after_traffic(cgw, redis_server):
    p = cgw.provision(keys={"openai": None})
    for _ in range(3):
        assert cgw.chat(p).status_code == 200

    def usage():
        r = cgw.admin("GET", f"/projects/{p.pid}/usage")
        assert r.status_code == 200, r.text
        return r.json()
    until(usage, lambda b: b["totals"]["requests"] >= 3, HANG_GUARD, what="3 metered requests")
    everyone = until(lambda: cgw.admin("GET", "/usage"),
                     lambda r: r.status_code == 200 and r.json()["totals"]["requests"] >= 3,
                     HANG_GUARD, what="the admin ranking")
    assert p.pid in json.dumps(everyone.json())
    stats = cgw.admin("GET", f"/projects/{p.pid}/stats")
    assert stats.status_code == 200, stats.text
    keys = cgw.admin("GET", f"/projects/{p.pid}/keys")
    assert keys.status_code == 200 and keys.json()[0]["provider"] == "openai", keys.text
    cgw.assert_no_leaks(stats, keys)


def test_i16_opt_a_fresh_node_learns_stored_key_health(cgw, redis_server, fake_provider):
    """A verdict recorded in byok:{<pid>}:key_health before this node saw it
    (another node's, published while this one was not running) is learnt
    by the cold lookup: the invalid key is never sent."""
    rc = redis_server.client
    p = cgw.provision(keys={})
    ids = {}
    for label in ("bad", "good"):
        key = "sk-test-" + label + "-" + "x" * 24
        r = cgw.admin("POST", f"/projects/{p.pid}/keys/openai", {"key": key, "label": label})
        assert r.status_code == 201, r.text
        ids[label] = (key, r.json()["key_id"])
    rc.hset(f"byok:{{{p.pid}}}:key_health", ids["bad"][1], "invalid 0")
    fake_provider.clear()
    for _ in range(6):
        r = cgw.chat(p)
        assert r.status_code == 200, r.text
    used = {rec.headers["authorization"] for rec in fake_provider.requests("/openai")}
    assert used == {f"Bearer {ids['good'][0]}"}, used
    keys = cgw.admin("GET", f"/projects/{p.pid}/keys/openai")
    cgw.assert_no_leaks(keys)
