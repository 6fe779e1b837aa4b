"""Issue 16: several nginx nodes on one Redis, and Redis in production
(ACL user, TLS, Sentinel).

Every node is a separate nginx (own prefix, own cache zone) sharing the
Redis store and the master key ring; admin writes go to node 1 and must be
enforced by nodes 2 and 3 through the byok:invalidate channel, not through
cache expiry (ttl is 300 s here). Propagation figures are printed, never
asserted on: the waits only guard against hangs."""

import re
import statistics
import time

import pytest

from harness import Project, wait_until

HANG_GUARD = 10.0  # seconds; generous, only stops a hung wait


def three_nodes(gateway, **options):
    n1 = gateway(**options)
    rest = [gateway(master_keys=n1.master_key_lines, **options) for _ in range(2)]
    return n1, rest


def propagation(node, check) -> float:
    """Seconds from now until check(node) holds, polling without pause."""
    t0 = time.monotonic()
    wait_until(lambda: check(node), HANG_GUARD, interval=0.002, what=f"node :{node.port}")
    return time.monotonic() - t0


def authorization(fake, node, project):
    r = node.chat(project)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return fake.last("/openai").headers.get("authorization") if \
        r.headers.get("x-byok-route") == "byok" else None


def report(name, samples):
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(round(0.99 * len(s))) - 1)]
    print(f"\n[i16] {name}: n={len(s)} p50={statistics.median(s) * 1000:.1f} ms "
          f"p99={p99 * 1000:.1f} ms max={s[-1] * 1000:.1f} ms")
    return p99


def test_i16_01_three_nodes_enforce_changes_made_on_node_one(gateway, fake_provider):
    """100 changes (20 each: gateway key minted, provider key added,
    provider key changed, gateway key revoked, project deleted) made
    through node 1's admin API; each is enforced by nodes 2 and 3 although
    both had the project's old state cached. The time from node 1's
    acknowledgement to enforcement on the slower of nodes 2/3 is measured
    and printed (p99 over the 100)."""
    n1, others = three_nodes(gateway)
    samples = {"minted": [], "added": [], "changed": [], "revoked": [], "deleted": []}
    kinds = list(samples)

    for i in range(100):
        kind = kinds[i % len(kinds)]
        p: Project = n1.provision(keys={} if kind == "added" else {"openai": None})
        # warm every node's cache with the old state
        for node in others:
            r = node.chat(p)
            assert r.status_code == 200, (r.status_code, r.text[:300])
            want = "fallback" if kind == "added" else "byok"
            assert r.headers.get("x-byok-route") == want, r.headers

        if kind == "minted":
            minted = Project(p.pid, *n1.mint_key(p.pid))
            check = lambda node: node.chat(minted).status_code == 200  # noqa: E731
        elif kind == "added":
            new = n1.put_key(p.pid, "openai")
            check = lambda node: authorization(fake_provider, node, p) == f"Bearer {new}"  # noqa: E731
        elif kind == "changed":
            new = n1.put_key(p.pid, "openai")
            check = lambda node: authorization(fake_provider, node, p) == f"Bearer {new}"  # noqa: E731
        elif kind == "revoked":
            r = n1.admin("DELETE", f"/projects/{p.pid}/api-keys/{p.gateway_key_id}")
            assert r.status_code in (200, 204), (r.status_code, r.text)
            check = lambda node: node.chat(p).status_code == 401  # noqa: E731
        else:
            r = n1.admin("DELETE", f"/projects/{p.pid}")
            assert r.status_code in (200, 204), (r.status_code, r.text)
            check = lambda node: node.chat(p).status_code == 401  # noqa: E731
        # acknowledged by node 1 at this point; the slower node counts
        t0 = time.monotonic()
        for node in others:
            propagation(node, check)
        samples[kind].append(time.monotonic() - t0)
        if i % 10 == 9:
            fake_provider.clear()

    for kind in kinds:
        report(f"propagation {kind}", samples[kind])
    p99 = report("propagation all 100 changes", [x for v in samples.values() for x in v])
    assert p99 < HANG_GUARD  # reported above; enforcement itself is what is asserted
    for node in [n1, *others]:
        node.assert_no_leaks()


# -- TLS and ACL ------------------------------------------------------------------

import os  # noqa: E402
import secrets  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import redis  # noqa: E402

from harness import NGINX, REDIS_SERVER, free_port, stop_process  # noqa: E402

# Every command the module sends, directly or from its Lua scripts (grep
# lib/ and ngx_byok_module/ for the argv and redis.call names): the ACL line
# the README documents is the one these tests run under, so the two cannot
# drift apart.
_README_ACL = next(l for l in (Path(__file__).resolve().parents[2] / "README.md")
                   .read_text().splitlines() if l.startswith("user byok on >PASSWORD "))
ACL_COMMANDS = _README_ACL.split("&byok:invalidate ", 1)[1].strip()


def acl_line(user: str, password: str, prefix: str = "byok") -> str:
    return f"user {user} on >{password} ~{prefix}:* &{prefix}:invalidate {ACL_COMMANDS}"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path, ca_name: str = "ca"):
    """A CA and, signed by it, a server certificate for redis.test and
    127.0.0.1 and a client certificate."""
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{ca_name}.key", "-out", f"{ca_name}.pem", "-days", "2",
            "-subj", f"/CN=byok test {ca_name}", cwd=d)
    for who, san in (("server", "DNS:redis.test,IP:127.0.0.1"), ("client", "DNS:byok.client")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}", cwd=d)
        (d / f"{who}.ext").write_text(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", f"{ca_name}.pem", "-CAkey",
                f"{ca_name}.key", "-CAcreateserial", "-out", f"{who}.pem", "-days", "2",
                "-extfile", f"{who}.ext", cwd=d)
    return d


class TlsRedis:
    """redis-server with --tls-port only (no plaintext port), client
    certificates required, the default user disabled, an `admin` user for
    the test and the restricted `byok` user for the module."""

    def __init__(self, d: Path):
        self.dir = make_pki(d)
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.admin_password = secrets.token_hex(16)
        (d / "redis.conf").write_text(f"""\
port 0
tls-port {self.port}
bind 127.0.0.1
tls-cert-file {d}/server.pem
tls-key-file {d}/server.key
tls-ca-cert-file {d}/ca.pem
tls-auth-clients yes
save ""
appendonly no
dir {d}
logfile {d}/redis.log
user default off
user admin on >{self.admin_password} ~* &* +@all
{acl_line("byok", self.password)}
""")
        log = open(d / "redis.stdout", "ab")
        self.proc = subprocess.Popen([REDIS_SERVER, str(d / "redis.conf")], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.client = redis.Redis(host="127.0.0.1", port=self.port, username="admin",
                                  password=self.admin_password, ssl=True,
                                  ssl_ca_certs=str(d / "ca.pem"), ssl_certfile=str(d / "client.pem"),
                                  ssl_keyfile=str(d / "client.key"), decode_responses=True,
                                  socket_timeout=5)

        def up():
            assert self.proc.poll() is None, (d / "redis.log").read_text()[-2000:]
            return self.client.ping()
        wait_until(up, 10, what="TLS redis-server")
        self.password_file = d / "redis.pass"
        self.password_file.write_text(self.password + "\n")
        os.chmod(self.password_file, 0o600)

    def directive(self, ca: Path = None, name: str = "redis.test", client_cert: bool = True):
        line = (f"byok_redis 127.0.0.1:{self.port} tls tls_trusted_certificate={ca or self.dir / 'ca.pem'}"
                f" tls_server_name={name} user=byok password_file={self.password_file}")
        if client_cert:
            line += f" tls_certificate={self.dir}/client.pem tls_certificate_key={self.dir}/client.key"
        return line + " timeout=2s;"

    def stop(self):
        self.client.close()
        stop_process(self.proc)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    server = TlsRedis(tmp_path_factory.mktemp("tlsredis"))
    yield server
    server.stop()


def test_i16_02_tls_mtls_and_acl_user_serve_admin_and_gateway(gateway, fake_provider, tls_redis):
    """TLS-only Redis, CA- and name-verified, client certificate, ACL user
    restricted to the documented command list: the admin API, the gateway
    and invalidation all work; the password is not in `nginx -T`."""
    tls_redis.client.flushall()
    tls_redis.client.acl_log_reset()
    gw = gateway(overrides={"byok_redis": tls_redis.directive()})
    gw.track(tls_redis.password)
    p = gw.provision(keys={"openai": None})
    r = gw.chat(p)
    assert r.status_code == 200 and r.headers.get("x-byok-route") == "byok", (r.status_code, r.text)
    new = gw.put_key(p.pid, "openai")
    wait_until(lambda: gw.chat(p).status_code == 200 and
               fake_provider.last("/openai").headers.get("authorization") == f"Bearer {new}",
               HANG_GUARD, what="new key over the TLS subscriber")
    for path in (f"/projects/{p.pid}/stats", f"/audit?project={p.pid}", "/projects",
                 f"/projects/{p.pid}/api-keys", f"/projects/{p.pid}/keys"):
        r = gw.admin("GET", path)
        assert r.status_code == 200, (path, r.status_code, r.text)
    assert gw.admin("POST", "/rotate").status_code in (200, 202)
    assert gw.admin("DELETE", f"/projects/{p.pid}").status_code in (200, 204)
    # the invalidation comes back over the TLS subscriber link
    wait_until(lambda: gw.chat(p).status_code == 401, what="deleted project refused")
    assert not [k for k in tls_redis.client.keys("*") if p.pid in k]
    # nothing the module did was refused by the ACL
    assert tls_redis.client.acl_log() == [], tls_redis.client.acl_log()
    assert any(c.get("user") == "byok" for c in tls_redis.client.client_list())
    t = subprocess.run([NGINX, "-T", "-p", str(gw.dir), "-c", str(gw.conf_path)],
                       capture_output=True, text=True, timeout=30, env=gw.nginx_env())
    assert "password_file=" in t.stdout and tls_redis.password not in t.stdout + t.stderr
    assert "setup failed" not in gw.error_log(), gw.error_log()[-2000:]
    gw.assert_no_leaks()


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_name"])
def test_i16_03_tls_wrong_ca_or_name_is_refused(gateway, tls_redis, tmp_path, case):
    """A server certificate from another CA, or for another name, is refused
    with a clear log line; the admin API answers 503, nothing is sent."""
    if case == "wrong_ca":
        other = make_pki(tmp_path / "other", "otherca")
        line = tls_redis.directive(ca=other / "otherca.pem")
        want = "TLS certificate verify error"
    else:
        line = tls_redis.directive(name="wrong.test")
        want = 'TLS certificate does not match "wrong.test"'
    gw = gateway(overrides={"byok_redis": line})
    wait_until(lambda: want in gw.error_log(), HANG_GUARD, what=want)
    r = gw.admin("POST", "/projects", {"id": "p-refused", "name": "x"})
    assert r.status_code == 503, (r.status_code, r.text)
    assert not [k for k in tls_redis.client.keys("*") if "p-refused" in k]
    assert "link to 127.0.0.1:%d ready" % tls_redis.port not in gw.error_log()
    gw.track(tls_redis.password)
    gw.assert_no_leaks()


# -- Sentinel -----------------------------------------------------------------------

import signal  # noqa: E402
import threading  # noqa: E402


def spawn_redis(d: Path, name: str, args) -> subprocess.Popen:
    log = open(d / f"{name}.stdout", "ab")
    proc = subprocess.Popen([REDIS_SERVER, *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    log.close()
    return proc


class SentinelSet:
    """A primary, one replica and three sentinels (redis-server --sentinel,
    the binary Debian's redis-sentinel package links to) on loopback. With
    tls: TLS-only everywhere, passwords on the data nodes (the module logs in
    as the restricted ACL user `byok`) and another on the sentinels."""

    def __init__(self, d: Path, tls: bool = False):
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.tls = make_pki(d / "pki") if tls else None
        self.data_pw, self.byok_pw, self.sentinel_pw = (secrets.token_hex(12) for _ in range(3))
        self.ports = {n: free_port() for n in ("primary", "replica", "s1", "s2", "s3")}
        self.procs = {}
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(d),
                  "--protected-mode", "no"]
        tls_args = []
        if tls:
            tls_args = ["--tls-cert-file", str(self.tls / "server.pem"),
                        "--tls-key-file", str(self.tls / "server.key"),
                        "--tls-ca-cert-file", str(self.tls / "ca.pem"),
                        "--tls-auth-clients", "no", "--tls-replication", "yes"]
        auth = (["--requirepass", self.data_pw, "--masterauth", self.data_pw,
                 "--user", *acl_line("byok", self.byok_pw).split()[1:]] if tls else [])

        def listen(name):
            port = str(self.ports[name])
            return ["--port", "0", "--tls-port", port, *tls_args] if tls else ["--port", port]
        self.procs["primary"] = spawn_redis(d, "primary", [
            *listen("primary"), *common, *auth, "--logfile", str(d / "primary.log")])
        self.procs["replica"] = spawn_redis(d, "replica", [
            *listen("replica"), *common, *auth, "--logfile", str(d / "replica.log"),
            "--replicaof", "127.0.0.1", str(self.ports["primary"])])
        def sentinel_listen(name):
            # the same options as redis.conf lines: "--tls-port 1" -> "tls-port 1"
            args = listen(name)
            return "\n".join(f"{args[i][2:]} {args[i + 1]}" for i in range(0, len(args), 2))
        for s in ("s1", "s2", "s3"):
            conf = d / f"{s}.conf"
            conf.write_text(f"""\
{sentinel_listen(s)}
bind 127.0.0.1
protected-mode no
dir {d}
logfile {d}/{s}.log
sentinel monitor byok 127.0.0.1 {self.ports["primary"]} 2
sentinel down-after-milliseconds byok 1000
sentinel failover-timeout byok 10000
sentinel parallel-syncs byok 1
""" + (f"requirepass {self.sentinel_pw}\nsentinel auth-pass byok {self.data_pw}\n"
       f"sentinel sentinel-pass {self.sentinel_pw}\n" if tls else ""))
            self.procs[s] = spawn_redis(d, s, [str(conf), "--sentinel"])
        ssl = dict(ssl=True, ssl_ca_certs=str(self.tls / "ca.pem")) if tls else {}
        self.client = {n: redis.Redis(host="127.0.0.1", port=p, decode_responses=True,
                                      socket_timeout=5, **ssl,
                                      password=(None if not tls else self.sentinel_pw
                                                if n.startswith("s") else self.data_pw))
                       for n, p in self.ports.items()}

        def synced():
            info = self.client["replica"].info("replication")
            return info.get("master_link_status") == "up"
        wait_until(synced, 15, what="replica in sync")

        def sentinels_agree():
            return all(len(self.client[s].execute_command("SENTINEL", "replicas", "byok")) == 1 and
                       int(self.client[s].execute_command("SENTINEL", "master", "byok")[
                           self.client[s].execute_command("SENTINEL", "master", "byok")
                           .index("num-other-sentinels") + 1]) == 2
                       for s in ("s1", "s2", "s3"))
        wait_until(sentinels_agree, 20, interval=0.2, what="sentinels to discover each other")

    def directive(self) -> str:
        s = ",".join(f"127.0.0.1:{self.ports[n]}" for n in ("s1", "s2", "s3"))
        tls = ""
        if self.tls:
            files = {}
            for name, pw in (("redis.pass", self.byok_pw), ("sentinel.pass", self.sentinel_pw)):
                files[name] = self.dir / name
                files[name].write_text(pw + "\n")
                os.chmod(files[name], 0o600)
            tls = (f" tls tls_trusted_certificate={self.tls / 'ca.pem'} tls_server_name=redis.test"
                   f" user=byok password_file={files['redis.pass']}"
                   f" sentinel_password_file={files['sentinel.pass']}")
        return (f"byok_redis sentinel={s} master=byok{tls} wait_replicas=1 wait_timeout=1s "
                f"timeout=1s connect_timeout=500ms;")

    def stop(self):
        for c in self.client.values():
            c.close()
        for p in self.procs.values():
            stop_process(p)


@pytest.fixture(params=["plain", "tls"])
def sentinels(tmp_path, request):
    s = SentinelSet(tmp_path / "sentinel", tls=request.param == "tls")
    yield s
    s.stop()


def test_i16_04_sentinel_failover_under_load(gateway, fake_provider, sentinels):
    """One sentinel, then the primary killed under steady gateway load on
    cached projects: no
    gateway request fails, an uncached project works again once the
    sentinels promoted the replica, admin writes during the failover are
    either acknowledged (and then present on the new primary) or 503, and
    the gateway follows +switch-master."""
    gw = gateway(overrides={"byok_redis": sentinels.directive()})
    gw.track(sentinels.data_pw, sentinels.byok_pw, sentinels.sentinel_pw)
    wait_until(lambda: gw.admin("GET", "/projects").status_code == 200, HANG_GUARD,
               what="gateway to find the primary through the sentinels")
    cached = [gw.provision() for _ in range(4)]
    uncached = gw.provision()
    for p in cached:
        assert gw.chat(p).status_code == 200

    stop = threading.Event()
    failures, served = [], [0]
    acked, refused, other = [], [], []

    def load():
        i = 0
        while not stop.is_set():
            r = gw.chat(cached[i % len(cached)])
            i += 1
            if r.status_code != 200:
                failures.append((r.status_code, r.text[:200]))
            served[0] += 1

    def writes():
        i = 0
        while not stop.is_set():
            pid = f"p-w{i:04d}"
            i += 1
            r = gw.admin("POST", "/projects", {"id": pid, "name": pid, "tier": "starter"})
            (acked if r.status_code == 201 else refused if r.status_code == 503 else other).append(
                (pid, r.status_code, r.text[:200]))
            time.sleep(0.02)

    threads = [threading.Thread(target=load), threading.Thread(target=writes)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 3, HANG_GUARD, what="writes before the failover")
        # one sentinel is lost first: workers that used it move to another
        sentinels.procs["s1"].send_signal(signal.SIGKILL)
        n_acked = len(acked)
        wait_until(lambda: len(acked) >= n_acked + 3, HANG_GUARD, what="writes without s1")
        killed_at = time.monotonic()
        sentinels.procs["primary"].send_signal(signal.SIGKILL)
        new_primary = f"127.0.0.1:{sentinels.ports['replica']}"
        wait_until(lambda: f"is {new_primary}" in gw.error_log(), 60, interval=0.05,
                   what="+switch-master to reach the gateway")
        switched = time.monotonic() - killed_at
        n_acked = len(acked)
        wait_until(lambda: len(acked) >= n_acked + 5, 30, what="writes after the failover")
        writes_back = time.monotonic() - killed_at
        t0 = time.monotonic()
        wait_until(lambda: gw.chat(uncached).status_code == 200, 30, interval=0.02,
                   what="uncached project after the failover")
        uncached_back = time.monotonic() - killed_at
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print(f"\n[i16] sentinel failover: +switch-master seen {switched:.2f} s after the kill, "
          f"admin writes acknowledged again at {writes_back:.2f} s, uncached project served at "
          f"{uncached_back:.2f} s (waited {time.monotonic() - t0:.2f} s after the writes); "
          f"{served[0]} gateway requests, {len(failures)} failed; {len(acked)} writes "
          f"acknowledged, {len(refused)} answered 503")
    assert failures == [], failures[:5]
    assert other == [], other[:5]
    # every acknowledged write survived: it is on the new primary
    for pid, _, _ in acked:
        r = gw.admin("GET", f"/projects/{pid}")
        assert r.status_code == 200, (pid, r.status_code, r.text)
    # nothing half-applied: a project exists exactly when the project index
    # lists it, whatever its write was answered
    r = gw.admin("GET", "/projects")
    assert r.status_code == 200, r.text
    body = r.json()
    listed = {p["id"] for p in (body if isinstance(body, list) else body.get("projects", []))}
    for pid, _, _ in acked + refused:
        assert (gw.admin("GET", f"/projects/{pid}").status_code == 200) == (pid in listed), pid
    assert sentinels.client["replica"].info("replication")["role"] == "master"
    assert sentinels.client["replica"].acl_log() == []  # the ACL user sufficed
    gw.assert_no_leaks()


def test_i16_05_write_not_confirmed_by_a_replica_is_503(gateway, tmp_path):
    """wait_replicas=1: with the replica connected but stalled (SIGSTOP) an
    admin write is answered 503 not_replicated instead of being
    acknowledged; once the replica is back, writes are acknowledged."""
    d = tmp_path / "repl"
    d.mkdir()
    pp, rp = free_port(), free_port()
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(d)]
    procs = [spawn_redis(d, "primary", ["--port", str(pp), *common]),
             spawn_redis(d, "replica", ["--port", str(rp), *common,
                                        "--replicaof", "127.0.0.1", str(pp)])]
    replica = redis.Redis(host="127.0.0.1", port=rp, decode_responses=True, socket_timeout=5)
    try:
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 15,
                   what="replica in sync")
        gw = gateway(overrides={"byok_redis": f"byok_redis 127.0.0.1:{pp} wait_replicas=1 "
                                              f"wait_timeout=300ms timeout=2s;"})
        wait_until(lambda: gw.admin("GET", "/projects").status_code == 200, HANG_GUARD,
                   what="gateway ready")
        assert gw.admin("POST", "/projects", {"id": "p-ok1", "name": "a"}).status_code == 201
        procs[1].send_signal(signal.SIGSTOP)
        try:
            r = gw.admin("POST", "/projects", {"id": "p-stall", "name": "b"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "not_replicated", r.text
        finally:
            procs[1].send_signal(signal.SIGCONT)
        assert gw.admin("POST", "/projects", {"id": "p-ok2", "name": "c"}).status_code == 201
        wait_until(lambda: replica.exists(*[k for k in replica.keys("*") if "p-ok2" in k]),
                   HANG_GUARD, what="p-ok2 on the replica")
    finally:
        replica.close()
        for p in procs:
            stop_process(p)


@pytest.mark.parametrize("params, message", [
    ("127.0.0.1:6379 tls_server_name=redis.test", "tls_* parameters need \"tls\""),
    ("127.0.0.1:6379 tls", "needs \"tls_trusted_certificate=\""),
    ("127.0.0.1:6379 user=byok", "\"user=\" needs \"password_file=\""),
    ("sentinel=127.0.0.1:26379", "\"sentinel=\" and \"master=\" go together"),
    ("127.0.0.1:6379 master=byok", "\"sentinel=\" and \"master=\" go together"),
    ("sentinel=127.0.0.1:26379,unix:/tmp/s master=byok", "invalid sentinel address"),
    ("127.0.0.1:6379 wait_replicas=-1", "invalid parameter \"wait_replicas=-1\""),
    ("127.0.0.1:6379 sentinel_user=s", "sentinel_* parameters need \"sentinel=\""),
    ("sentinel=127.0.0.1:26379 master=byok sentinel_user=s",
     "\"sentinel_user=\" needs \"sentinel_password_file=\""),
    ("cluster=127.0.0.1:7000,unix:/tmp/s", "invalid cluster address"),
    ("cluster=127.0.0.1:7000 db=2", "\"cluster=\" takes neither \"master=\" nor \"db=\""),
    ("cluster=127.0.0.1:7000 master=byok", "\"cluster=\" takes neither"),
])
def test_i16_06_byok_redis_production_options_are_checked(gateway, params, message):
    gw = gateway(start=False)
    conf = gw.render(byok_redis=f"byok_redis {params};")
    rc, out, _ = gw.nginx_t(conf)
    assert rc != 0 and message in out, out


def test_i16_07_capacity_figures(gateway, redis_server):
    """Measures (and prints, for docs/deployment.md) the Redis memory of a
    project with one gateway key and one provider key, and how many such
    projects one MiB of cache zone holds (a 256 KiB zone, warmed with more
    projects than fit: LRU keeps as many as fit)."""
    gw = gateway(overrides={"byok_cache": "byok_cache zone=byok:256k ttl=300s stale=15m;"})
    n = 1000
    before = redis_server.client.info("memory")["used_memory"]
    projects = [gw.provision() for _ in range(n)]
    after = redis_server.client.info("memory")["used_memory"]
    for p in projects:
        assert gw.chat(p).status_code == 200
    entries = int(re.search(r"^byok_cache_entries (\d+)", gw.metrics(), re.M).group(1))
    per_mib = entries * 4
    print(f"\n[i16] capacity: Redis {(after - before) / n:.0f} bytes per project (1 gateway key, "
          f"1 provider key, audit entries included); cache zone: {entries} projects in 256 KiB "
          f"= ~{per_mib} per MiB" + (" (lower bound: nothing evicted)" if entries == n else ""))
    assert 0 < entries <= n


def test_i16_08_unix_socket_password_and_db_on_the_new_connection_path(gateway, tmp_path):
    """The rewritten links still serve a unix socket with AUTH <password>
    and SELECT: the admin API and the gateway work, data lands in db 3."""
    d = tmp_path / "unix"
    d.mkdir()
    sock, password = d / "redis.sock", secrets.token_hex(12)
    proc = spawn_redis(d, "redis", ["--port", "0", "--unixsocket", str(sock), "--save", "",
                                    "--appendonly", "no", "--dir", str(d),
                                    "--requirepass", password])
    client = redis.Redis(unix_socket_path=str(sock), password=password, db=3,
                         decode_responses=True, socket_timeout=5)
    try:
        wait_until(lambda: client.ping(), 10, what="redis on a unix socket")
        pw = d / "redis.pass"
        pw.write_text(password + "\n")
        os.chmod(pw, 0o600)
        gw = gateway(overrides={"byok_redis": f"byok_redis unix:{sock} password_file={pw} db=3;"})
        gw.track(password)
        p = gw.provision()
        assert gw.chat(p).status_code == 200
        assert any(p.pid in k for k in client.keys("*"))
        gw.assert_no_leaks()
    finally:
        client.close()
        stop_process(proc)


def test_i12_04_commands_during_a_command_link_reconnect_wait_for_it(gateway, fake_provider,
                                                                      tmp_path):
    """Issue 12 item 4 (the flake of test_i16_04): while a worker's command
    link is away and reconnecting, a command is queued (bounded, each until
    its own byok_redis timeout=) instead of refused with 503. Redis is
    restarted (with its data): lookups of uncached projects and admin writes
    issued while it is down all succeed once it is back."""
    d = tmp_path / "restart"
    d.mkdir()
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(d)]
    proc = spawn_redis(d, "redis", args)
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)
    try:
        wait_until(lambda: client.ping(), 10, what="redis-server")
        gw = gateway(overrides={"byok_redis": f"byok_redis 127.0.0.1:{port} timeout=30s;"})
        wait_until(lambda: gw.admin("GET", "/projects").status_code == 200, HANG_GUARD,
                   what="gateway ready")
        uncached = [gw.provision() for _ in range(6)]  # never used: not in any cache
        client.save()  # the restarted server loads dump.rdb
        client.close()
        stop_process(proc)

        def dropped():
            return sum(1 for line in gw.error_log().splitlines()
                       if "redis command link to" in line and "closed by the server" in line)
        wait_until(lambda: dropped() >= gw.worker_processes, HANG_GUARD,
                   what="every worker to see its command link drop")

        results = []

        def chat(p):
            results.append(("chat", p.pid, gw.chat(p).status_code))

        def create(i):
            r = gw.admin("POST", "/projects", {"id": f"p-during-{i}", "name": "x"})
            results.append(("create", f"p-during-{i}", r.status_code))

        threads = [threading.Thread(target=chat, args=(p,)) for p in uncached]
        threads += [threading.Thread(target=create, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        # Only lets the requests reach nginx while Redis is down; on the old
        # code they are answered 503 at once, whatever this wait is.
        time.sleep(0.5)
        proc = spawn_redis(d, "redis", args)
        for t in threads:
            t.join(60)
        assert len(results) == len(threads), results
        assert all(status in (200, 201) for _, _, status in results), results
        for i in range(3):
            assert gw.admin("GET", f"/projects/p-during-{i}").status_code == 200
        gw.assert_no_leaks()
    finally:
        client.close()
        stop_process(proc)
