"""Real redis-server and real nginx (with the built module) for the
integration tests. Every wait is a bounded loop; every path lives in a
per-test temporary directory."""

import base64
import json as jsonlib
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import redis
import requests

REPO = Path(__file__).resolve().parents[2]
MODULE = Path(os.environ.get("BYOK_MODULE", str(REPO / "build" / "ngx_http_byok_module.so")))
NGINX = os.environ.get("BYOK_NGINX", "/usr/sbin/nginx")
REDIS_SERVER = os.environ.get("BYOK_REDIS_SERVER", "redis-server")
GATEWAY_CONF = REPO / "conf" / "byok_gateway.conf"
ADMIN_CONF = REPO / "conf" / "byok_admin.conf"
# Extra environment for every nginx the harness runs (and only nginx), as
# shell words: `LD_PRELOAD='/x/libasan.so /x/libubsan.so' ASAN_OPTIONS=...`.
# `make test-asan` uses it to load the sanitizer runtimes into the system
# nginx; sanitizer reports go to <gateway>/logs/{asan,ubsan}.<pid>.
NGINX_ENV = dict(w.split("=", 1) for w in shlex.split(os.environ.get("BYOK_NGINX_ENV", "")))

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


# -- small helpers ------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: Optional[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL after a bounded wait."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT)


def silent_listener(timeout: float = 0.3) -> socket.socket:
    """A loopback listener a test expects never to be connected to."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(timeout)
    return listener


class Abort(Exception):
    """Raised by a wait_until predicate to stop waiting at once."""


def wait_until(pred, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
    """Polls pred() until it returns something truthy; returns that value.
    Raises AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Abort:
            raise
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def until(fetch, cond, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
    """Calls fetch() until cond(result) holds; returns that result (which
    may be falsy, e.g. a requests.Response with an error status)."""
    box = []

    def pred():
        v = fetch()
        if cond(v):
            box.append(v)
            return True
        return False
    wait_until(pred, timeout, interval, what)
    return box[0]


def canary(prefix: str = "sk-test-") -> str:
    """A unique, recognisable fake secret: prefix + 32 random hex chars."""
    return prefix + secrets.token_hex(16)


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line of `text` that starts (after
    indentation) with `needle`, e.g. a directive name."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith(needle):
            return n
    raise AssertionError(f"{needle!r} not in config")


def assert_json_error(resp: requests.Response, status: int):
    """Gateway/admin errors are JSON {"error": {"message": ..., ...}}."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert "json" in resp.headers.get("content-type", ""), resp.headers
    body = resp.json()
    assert isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
    return body["error"]


def _children(pid: int) -> List[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


# -- Redis ----------------------------------------------------------------------

class RedisServer:
    """A private redis-server on a free loopback port, no persistence."""

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.client = redis.Redis(host=self.host, port=self.port, decode_responses=True,
                                  socket_timeout=5)
        self.raw = redis.Redis(host=self.host, port=self.port, socket_timeout=5)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def extra_args(self) -> List[str]:
        """Arguments a kind of server adds to the common command line."""
        return []

    def start(self) -> None:
        if self.running():
            return
        log = open(self.dir / "redis.stdout", "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", self.host,
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--daemonize", "no", "--protected-mode", "no",
             "--enable-debug-command", "local",  # DEBUG SLEEP for stall tests
             "--logfile", str(self.dir / "redis.log")] + self.extra_args(),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise Abort(f"redis-server exited: {(self.dir / 'redis.log').read_text()[-2000:]}")
            return redis.Redis(host=self.host, port=self.port, socket_timeout=0.5).ping()

        wait_until(up, START_TIMEOUT, what="redis-server to answer PING")
        self.client.connection_pool.disconnect()
        self.raw.connection_pool.disconnect()

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None
        self.client.connection_pool.disconnect()
        self.raw.connection_pool.disconnect()

    def all_values(self) -> Dict[bytes, List[bytes]]:
        """Every key and every value/field/member stored, as raw bytes
        (SCAN + TYPE + the right read command)."""
        r = self.raw
        out: Dict[bytes, List[bytes]] = {}
        for key in r.scan_iter(count=1000):
            t = r.type(key).decode()
            vals: List[bytes] = []
            if t == "string":
                vals = [r.get(key) or b""]
            elif t == "hash":
                for k, v in r.hgetall(key).items():
                    vals += [k, v]
            elif t == "set":
                vals = list(r.smembers(key))
            elif t == "zset":
                vals = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
            elif t == "list":
                vals = r.lrange(key, 0, -1)
            elif t == "stream":
                for _id, fields in r.xrange(key):
                    for k, v in fields.items():
                        vals += [k, v]
            else:
                vals = [r.dump(key) or b""]
            out[key] = vals
        return out

    def assert_absent(self, secrets_: Iterable[str]) -> None:
        data = self.all_values()
        for s in secrets_:
            sb = s.encode()
            for key, vals in data.items():
                assert sb not in key, f"secret found in Redis key name {key!r}"
                for v in vals:
                    assert sb not in v, f"secret found in Redis value of {key!r}"


# -- sshd (execution-server tests) -------------------------------------------

SSHD = os.environ.get("BYOK_SSHD", "/usr/sbin/sshd")


class SshServer:
    """A private OpenSSH sshd on a free loopback port: public-key login for
    root with a generated client key, its own host key, no PAM."""

    def __init__(self, workdir: Path):
        assert Path(SSHD).exists(), f"{SSHD} missing: install openssh-server"
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.port = "127.0.0.1", free_port()
        self.username = "root"
        self.host_key = self.dir / "host_ed25519"
        self.client_key = self.dir / "client_ed25519"
        for k in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)],
                           check=True, timeout=30)
        (self.dir / "authorized_keys").write_text(
            (self.dir / "client_ed25519.pub").read_text())
        self.private_key = self.client_key.read_text()
        fp = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{self.host_key}.pub"],
                            check=True, capture_output=True, text=True, timeout=30).stdout
        self.fingerprint = fp.split()[1]  # "SHA256:..."
        self.config = self.dir / "sshd_config"
        self.config.write_text(f"""\
Port {self.port}
ListenAddress {self.host}
HostKey {self.host_key}
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.dir}/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp internal-sftp
""")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation dir
        log = open(self.dir / "sshd.log", "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise Abort((self.dir / "sshd.log").read_text()[-2000:])
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(64).startswith(b"SSH-")
        wait_until(up, START_TIMEOUT, what="sshd to answer")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


# -- nginx ----------------------------------------------------------------------

SAFE_LOG_FORMAT = (
    "log_format byok '$remote_addr [$time_local] \"$request_method $uri\" $status '\n"
    "                    'project=$byok_project provider=$byok_provider model=$byok_model '\n"
    "                    'route=$byok_route reason=$byok_fallback_reason key=$byok_key_hint '\n"
    "                    'id=$byok_request_id rt=$request_time';"
)


def providers_yaml(base: str) -> str:
    """Test catalog: every provider points at the fake under /<id>."""
    return f"""\
providers:
  openai:
    name: OpenAI
    base_url: {base}/openai
    openai_base: {base}/openai
    auth: bearer
    headers: {{}}
    key_prefix: "sk-"
    test: {{ method: GET, path: /models }}
    models: ["gpt-*", "o1*", "o3*", "o4*", "text-embedding-*", "chatgpt-*"]
  anthropic:
    name: Anthropic
    base_url: {base}/anthropic
    openai_base: {base}/anthropic
    auth: x-api-key
    headers: {{ anthropic-version: "2023-06-01" }}
    key_prefix: "sk-ant-"
    test: {{ method: GET, path: /models }}
    models: ["claude-*"]
  google:
    name: Google Gemini
    base_url: {base}/google
    openai_base: {base}/google
    auth: x-goog-api-key
    key_prefix: "AIza"
    test: {{ method: GET, path: /models }}
    models: ["gemini-*"]
  openrouter:
    name: OpenRouter
    base_url: {base}/openrouter
    openai_base: {base}/openrouter
    auth: bearer
    key_prefix: "sk-or-"
    test: {{ method: GET, path: /key }}
"""


# Default canary prefixes per provider of the test catalog.
KEY_PREFIX = {"openai": "sk-test-", "anthropic": "sk-ant-test-", "google": "AIzaTest",
              "openrouter": "sk-or-test-"}


def custom_catalog(base: str) -> str:
    """The test catalog plus the `custom` provider (per-key endpoints)."""
    return providers_yaml(base) + """\
  custom:
    name: Custom
    base_url: https://custom.invalid
    auth: bearer
    test: { method: GET, path: /models }
    per_key_endpoint: true
"""


def master_key_line(kid: str) -> str:
    return f"{kid} {base64.b64encode(secrets.token_bytes(32)).decode()}"


@dataclass
class Project:
    pid: str
    gateway_key: str
    gateway_key_id: Optional[str]
    keys: Dict[str, str] = field(default_factory=dict)

    @property
    def auth(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.gateway_key}"}


class Gateway:
    """One nginx master (worker_processes 2) with the module, in its own
    directory. Construct through the `gateway` fixture."""

    def __init__(self, workdir: Path, redis_server: RedisServer, fake, *,
                 ttl: str = "300s", stale: str = "15m",
                 master_keys: Optional[List[str]] = None,
                 admin_tokens: Optional[List[str]] = None,
                 system_key: Optional[str] = None,
                 providers: Optional[str] = None,
                 extra_main: str = "", extra_http: str = "", extra_server: str = "",
                 overrides: Optional[Dict[str, Optional[str]]] = None,
                 worker_processes: int = 2, error_log_level: str = "notice",
                 access_log: bool = True):
        self.dir = Path(workdir)
        self.redis = redis_server
        self.fake = fake
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ttl, self.stale = ttl, stale
        self.worker_processes = worker_processes
        self.error_log_level = error_log_level
        self.access_log_on = access_log
        self.extra_main, self.extra_http, self.extra_server = extra_main, extra_http, extra_server
        self.overrides = dict(overrides or {})
        self.proc: Optional[subprocess.Popen] = None
        self.killed_workers: set = set()
        self._local = threading.local()  # one requests.Session per thread

        for sub in ("secrets", "logs", "temp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path = self.dir / "nginx.conf"
        self.master_keys_path = self.dir / "secrets" / "master.keys"
        self.admin_tokens_path = self.dir / "secrets" / "admin.tokens"
        self.system_key_path = self.dir / "secrets" / "openrouter.key"
        self.providers_path = self.dir / "providers.yaml"
        self.error_log_path = self.dir / "logs" / "error.log"
        self.access_log_path = self.dir / "logs" / "access.log"
        self.pid_path = self.dir / "nginx.pid"

        self.secrets: set = set()
        self.master_key_lines = master_keys or [master_key_line("k1")]
        self.write_master_keys(self.master_key_lines)
        self.admin_tokens = admin_tokens or [secrets.token_hex(24)]
        self.admin_token = self.admin_tokens[0]
        self._write_secret(self.admin_tokens_path, "\n".join(self.admin_tokens) + "\n")
        self.secrets.update(self.admin_tokens)
        self.system_key = system_key or canary("sk-or-system-")
        self._write_secret(self.system_key_path, self.system_key + "\n")
        self.secrets.add(self.system_key)
        self.providers_yaml = providers if providers is not None else providers_yaml(fake.base)
        self.providers_path.write_text(self.providers_yaml)
        self.conf_path.write_text(self.render())

    # -- files -----------------------------------------------------------------

    @staticmethod
    def _write_secret(path: Path, text: str, mode: int = 0o600) -> None:
        path.write_text(text)
        os.chmod(path, mode)

    def write_master_keys(self, lines: List[str], mode: int = 0o600) -> None:
        """Replaces the key ring file (first line = active key)."""
        self.master_key_lines = list(lines)
        self._write_secret(self.master_keys_path, "\n".join(lines) + "\n", mode)
        for line in lines:
            parts = line.split()
            if len(parts) == 2:
                self.secrets.add(parts[1])

    def http_directives(self) -> Dict[str, str]:
        d = {
            "byok_redis": f"byok_redis {self.redis.address} timeout=500ms;",
            "byok_master_keys": f"byok_master_keys {self.master_keys_path};",
            "byok_providers": f"byok_providers {self.providers_path};",
            "byok_cache": f"byok_cache zone=byok:16m ttl={self.ttl} stale={self.stale};",
            "byok_system_key": f"byok_system_key openrouter {self.system_key_path};",
            "byok_admin_token_file": f"byok_admin_token_file {self.admin_tokens_path};",
        }
        for name, line in self.overrides.items():
            if line is None:
                d.pop(name, None)
            else:
                d[name] = line
        return d

    def render(self, **overrides: Optional[str]) -> str:
        """nginx.conf of the SPEC §3 shape. `overrides` maps a directive name
        (byok_cache, ...) to a replacement line, or None to drop it."""
        directives = self.http_directives()
        for name, line in overrides.items():
            if line is None:
                directives.pop(name, None)
            else:
                directives[name] = line
        t = self.dir / "temp"
        access = (f"access_log {self.dir / 'logs' / 'access.log'} byok;" if self.access_log_on
                  else "access_log off;")
        http_lines = "\n    ".join(directives.values())
        return f"""\
load_module {MODULE};
worker_processes {self.worker_processes};
user root;
error_log {self.error_log_path} {self.error_log_level};
pid {self.pid_path};
{self.extra_main}
events {{}}
http {{
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    {SAFE_LOG_FORMAT}
    {access}

    {http_lines}
    {self.extra_http}

    server {{
        listen 127.0.0.1:{self.port};
        include {GATEWAY_CONF};
        include {ADMIN_CONF};
        location /admin/v1/ {{ byok_admin; }}
        location = /metrics {{ byok_metrics; }}
        location /console/ {{ byok_console; }}
        {self.extra_server}
    }}
}}
"""

    # -- process control -------------------------------------------------------

    def nginx_t(self, conf_text: Optional[str] = None, name: str = "test.conf"):
        """Runs `nginx -t` on `conf_text` (or the gateway's own config);
        returns (returncode, stderr+stdout, config path)."""
        path = self.conf_path
        if conf_text is not None:
            path = self.dir / name
            path.write_text(conf_text)
        p = subprocess.run([NGINX, "-t", "-p", str(self.dir), "-c", str(path)],
                           capture_output=True, text=True, timeout=30, env=self.nginx_env())
        return p.returncode, p.stderr + p.stdout, path

    def nginx_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(NGINX_ENV)
        for var, name in (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan")):
            if var in NGINX_ENV:
                env[var] = f"{NGINX_ENV[var]}:log_path={self.dir / 'logs' / name}"
        return env

    def sanitizer_reports(self) -> List[str]:
        """Contents of every ASan/UBSan report file nginx wrote."""
        logs = self.dir / "logs"
        return [f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}"
                for p in sorted(logs.glob("asan.*")) + sorted(logs.glob("ubsan.*"))]

    def start(self) -> "Gateway":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        assert MODULE.exists(), f"module not built: {MODULE}"
        self.conf_path.write_text(self.render())
        self._stdout = open(self.dir / "logs" / "nginx.stdout", "ab")
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(self.conf_path),
             "-g", "daemon off; master_process on;"],
            stdout=self._stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.nginx_env())

        def up():
            if self.proc.poll() is not None:
                raise _StartError(self.diagnostics())
            if len(_children(self.proc.pid)) < self.worker_processes:
                return False
            try:
                requests.get(self.base_url + "/metrics", timeout=1)
                return True
            except requests.ConnectionError:
                return False

        try:
            wait_until(up, START_TIMEOUT, what="nginx to serve")
        except _StartError as e:
            self.proc = None
            raise RuntimeError(f"nginx did not start:\n{e}") from None
        except AssertionError:
            diag = self.diagnostics()
            self.stop()
            raise RuntimeError(f"nginx did not start in time:\n{diag}") from None
        return self

    def diagnostics(self) -> str:
        out = ""
        for p in (self.dir / "logs" / "nginx.stdout", self.error_log_path):
            if p.exists():
                out += f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}\n"
        return out

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def workers(self) -> List[int]:
        return _children(self.proc.pid) if self.running() else []

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL to master and workers after a
        bounded wait."""
        self.session.close()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            workers = self.workers()
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                workers += self.workers()
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
            for w in set(workers):
                try:
                    os.kill(w, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
        self._stdout.close()

    def restart(self) -> "Gateway":
        self.stop()
        return self.start()

    def reload(self, timeout: float = START_TIMEOUT) -> None:
        """SIGHUP with the current files; waits until a complete new
        generation of workers replaced the old one. Raises when nginx
        refused the new configuration."""
        assert self.running()
        self.conf_path.write_text(self.render())
        self.session.close()
        old = set(self.workers())
        log_mark = self.error_log_path.stat().st_size if self.error_log_path.exists() else 0
        self.proc.send_signal(signal.SIGHUP)

        def done():
            tail = self.error_log_path.read_bytes()[log_mark:].decode(errors="replace")
            if "[emerg]" in tail:
                raise _StartError(tail)
            now = set(self.workers())
            return len(now) >= self.worker_processes and not (now & old)

        try:
            wait_until(done, timeout, what="reload to replace the workers")
        except _StartError as e:
            raise RuntimeError(f"nginx refused the reload:\n{e}") from None

    # -- logs ------------------------------------------------------------------

    def error_log(self) -> str:
        return self.error_log_path.read_text(errors="replace") if self.error_log_path.exists() else ""

    def access_log(self) -> str:
        return self.access_log_path.read_text(errors="replace") if self.access_log_path.exists() else ""

    def kill_worker(self, pid: int) -> None:
        """SIGKILLs one worker on purpose; crashes() then ignores its exit."""
        assert pid in self.workers(), (pid, self.workers())
        self.killed_workers.add(pid)
        os.kill(pid, signal.SIGKILL)

    def crashes(self) -> List[str]:
        expected = [f"process {pid} exited on signal 9" for pid in self.killed_workers]
        return [l for l in self.error_log().splitlines()
                if ("exited on signal" in l or "[alert]" in l and "worker process" in l)
                and not any(e in l for e in expected)]

    # -- HTTP ------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 15)
        return self.session.request(method, self.url(path), **kw)

    def admin_headers(self, token: Optional[str] = None) -> Dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def admin(self, method: str, path: str, json=None, token=None, headers=None,
              **kw) -> requests.Response:
        """Admin API call. `path` is relative to /admin/v1; token None = the
        admin token, False = no Authorization header. Provider keys sent and
        gateway keys received are remembered as secrets for leak scans."""
        h = {} if token is False else self.admin_headers(token)
        h.update(headers or {})
        if json is not None:
            if isinstance(json, dict) and isinstance(json.get("key"), str):
                self.secrets.add(json["key"])
            kw["json"] = json
        resp = self.request(method, "/admin/v1" + path, headers=h, **kw)
        try:
            body = resp.json()
            if isinstance(body, dict) and isinstance(body.get("key"), str):
                self.secrets.add(body["key"])
        except ValueError:
            pass
        return resp

    def create_project(self, pid: Optional[str] = None, name: Optional[str] = None,
                       tier: str = "starter", fallback: str = "auto") -> str:
        pid = pid or "p-" + secrets.token_hex(4)
        r = self.admin("POST", "/projects",
                       {"id": pid, "name": name or f"Project {pid}", "tier": tier,
                        "fallback": fallback})
        assert r.status_code == 201, (r.status_code, r.text)
        return pid

    def mint_key(self, pid: str, label: Optional[str] = None):
        r = self.admin("POST", f"/projects/{pid}/api-keys", {"label": label or "test"})
        assert r.status_code == 201, (r.status_code, r.text)
        body = r.json()
        assert body["key"].startswith("byok_"), body
        return body["key"], body.get("id")

    def put_key(self, pid: str, provider: str, key: Optional[str] = None, **extra) -> str:
        key = key or canary(KEY_PREFIX.get(provider, "sk-test-"))
        r = self.admin("PUT", f"/projects/{pid}/keys/{provider}", {"key": key, **extra})
        assert r.status_code in (200, 201), (r.status_code, r.text)
        return key

    def provision(self, tier: str = "starter", fallback: str = "auto",
                  keys: Optional[Dict[str, Optional[str]]] = None,
                  pid: Optional[str] = None) -> Project:
        """Project + gateway key + provider keys. keys maps provider -> key
        (None = generate a canary); default {"openai": <canary>}. For tier
        free the keys are stored while the project is starter, then the tier
        is lowered, so the project has keys it may not use."""
        if keys is None:
            keys = {"openai": None}
        pid = self.create_project(pid, tier="starter" if tier == "free" else tier,
                                  fallback=fallback)
        gkey, gid = self.mint_key(pid)
        stored = {p: self.put_key(pid, p, k) for p, k in keys.items()}
        if tier == "free":
            r = self.admin("PATCH", f"/projects/{pid}", {"tier": "free"})
            assert r.status_code == 200, (r.status_code, r.text)
        return Project(pid, gkey, gid, stored)

    def chat(self, project_or_key, model: Optional[str] = "gpt-4o",
             path: str = "/v1/chat/completions", headers=None, body=None,
             auth: str = "bearer", **kw) -> requests.Response:
        """POST a chat request with the gateway key (Project or str)."""
        key = project_or_key.gateway_key if isinstance(project_or_key, Project) else project_or_key
        h = {}
        if key is not None:
            h = ({"Authorization": f"Bearer {key}"} if auth == "bearer" else {"x-api-key": key})
        h.update(headers or {})
        if body is None:
            body = {"messages": [{"role": "user", "content": "hi"}]}
            if model is not None:
                body["model"] = model
        return self.request("POST", path, headers=h, json=body, **kw)

    def metrics(self) -> str:
        r = self.request("GET", "/metrics")
        assert r.status_code == 200, (r.status_code, r.text[:300])
        return r.text

    # -- secrets -----------------------------------------------------------------

    def track(self, *secrets_: str) -> None:
        self.secrets.update(secrets_)

    def assert_no_leaks(self, *texts, extra: Iterable[str] = (), metrics: bool = True) -> None:
        """No known secret in error.log, access.log, nginx.stdout, /metrics
        nor in `texts` (str, bytes, requests.Response: body and headers) —
        neither whole nor in part or re-encoded (see leak_forms)."""
        found = []
        stdout = self.dir / "logs" / "nginx.stdout"
        corpus = {"error.log": self.error_log(), "access.log": self.access_log(),
                  "nginx.stdout": stdout.read_text(errors="replace") if stdout.exists() else ""}
        if metrics and self.running():
            try:
                corpus["/metrics"] = self.metrics()
            except AssertionError:
                corpus["/metrics"] = self.request("GET", "/metrics").text
        for i, t in enumerate(texts):
            if isinstance(t, requests.Response):
                corpus[f"response {i} headers"] = "\n".join(f"{k}: {v}" for k, v in t.headers.items())
                corpus[f"response {i} body"] = t.content.decode("utf-8", "replace")
            elif isinstance(t, bytes):
                corpus[f"text {i}"] = t.decode("utf-8", "replace")
            else:
                corpus[f"text {i}"] = str(t)
        for s in set(self.secrets) | set(extra):
            for form, what in leak_forms(s):
                for where, text in corpus.items():
                    if form in text:
                        found.append(f"{s[:6]}… ({what}) in {where}")
        assert not found, "secrets leaked: " + ", ".join(found)


class _StartError(Abort):
    pass


def raw_http(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends raw bytes, returns the whole answer (for requests that HTTP
    client libraries refuse to build)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                if m and len(rest) >= int(m.group(1)):
                    break
        return out


def status_of(raw: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    assert m, raw[:200]
    return int(m.group(1))


def jdump(obj) -> str:
    return jsonlib.dumps(obj, separators=(",", ":"))


def metric_value(text: str, sample: str) -> float:
    """The value of exactly one Prometheus sample of `text`, named with its
    labels as exposed (`byok_decrypt_failures_total`,
    `byok_fallbacks_total{reason="tier"}`); 0 when the sample is absent
    (counters with a zero value may be left out)."""
    for line in text.splitlines():
        if not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
    return 0.0


def redis_stalled(redis_server) -> bool:
    """True while redis-server does not answer a PING within 0.3 s (a
    DEBUG SLEEP is running). Used to wait for a stall to begin."""
    try:
        redis.Redis(host=redis_server.host, port=redis_server.port,
                    socket_timeout=0.3, socket_connect_timeout=0.3).ping()
        return False
    except redis.TimeoutError:
        return True


def assert_never_connected(listener):
    """Called after the gateway answered: had nginx connected, the kernel
    would have completed the handshake before that answer, so the
    connection would already wait in the backlog. No waiting involved."""
    listener.setblocking(False)
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return
    conn.close()
    raise AssertionError("the gateway connected to a target it must never contact")


# Public heads of secrets: the gateway key's first 12 characters are its
# published `prefix`; canary prefixes are the catalog's public key_prefix.
PUBLIC_HEADS = ("byok_", "sk-or-system-", "sk-ant-test-", "sk-or-test-", "sk-test-", "AIzaTest",
                "sk-junk-", "redis-pw-", "pw-", "sk-custom-", "sk-")


def leak_forms(secret: str):
    """(text, description) pairs a leak scan looks for: the secret itself,
    upper- and lower-cased, base64 (standard and URL-safe, padded or not),
    and for secrets of 24+ characters its first 12 characters after the
    public head (gateway keys: after their 12-character published prefix),
    its middle 12 and its last 12."""
    if not secret:
        return []
    forms = {secret: "whole", secret.upper(): "upper-case", secret.lower(): "lower-case"}
    raw = secret.encode()
    for enc, name in ((base64.b64encode, "base64"), (base64.urlsafe_b64encode, "base64url")):
        b = enc(raw).decode()
        forms.setdefault(b, name)
        forms.setdefault(b.rstrip("="), name)
    if len(secret) >= 24:
        head = 12 if secret.startswith("byok_") else next(
            (len(h) for h in PUBLIC_HEADS if secret.startswith(h)), 0)
        body = secret[head:]
        if len(body) >= 24:
            forms.setdefault(body[:12], "first 12")
            mid = len(body) // 2
            forms.setdefault(body[mid - 6:mid + 6], "middle 12")
        forms.setdefault(secret[-12:], "last 12")
    return [(f, w) for f, w in forms.items() if len(f) >= 6]


# conf/byok_gateway.conf includes byok_proxy.conf relative to the main
# nginx.conf's directory (like fastcgi_params): every gateway directory gets
# a copy, as `make run` and the Docker image put one next to their nginx.conf.
import shutil  # noqa: E402

PROXY_CONF = REPO / "conf" / "byok_proxy.conf"
_gateway_init = Gateway.__init__


def _gateway_init_with_proxy_conf(self, *args, **kw):
    _gateway_init(self, *args, **kw)
    shutil.copyfile(PROXY_CONF, self.dir / PROXY_CONF.name)


Gateway.__init__ = _gateway_init_with_proxy_conf


# -- Redis Cluster (issue 16) --------------------------------------------------

REDIS_CLI = os.environ.get("BYOK_REDIS_CLI", "redis-cli")


class ClusterNode(RedisServer):
    """One redis-server of a RedisCluster: cluster-enabled, its node table
    (nodes.conf) in its own directory, so a restarted node rejoins with its
    slots."""

    node_timeout_ms = 2000

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.bus_port = free_port()

    def extra_args(self) -> List[str]:
        return ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # the bus port defaults to port + 10000: out of range for high ports
                "--cluster-port", str(self.bus_port)]

    def node_id(self) -> str:
        return self.client.execute_command("CLUSTER", "MYID")


class RedisCluster:
    """A local Redis Cluster of `primaries` primaries and no replicas
    (`redis-cli --cluster create`), shaped like RedisServer for the tests:
    .address is the `byok_redis cluster=...` argument, .client / .raw are
    cluster clients (redis-py follows MOVED itself), .nodes the servers."""

    def __init__(self, workdir: Path, primaries: int = 3):
        self.dir = Path(workdir)
        self.nodes = [ClusterNode(self.dir / f"node{i}") for i in range(primaries)]
        self.host, self.port = self.nodes[0].host, self.nodes[0].port
        self._client = self._raw = None
        self.created = False

    @property
    def address(self) -> str:
        return "cluster=" + ",".join(n.address for n in self.nodes)

    @property
    def client(self):
        if self._client is None:
            self._client = redis.RedisCluster(host=self.host, port=self.port,
                                              decode_responses=True, socket_timeout=5)
        return self._client

    @property
    def raw(self):
        if self._raw is None:
            self._raw = redis.RedisCluster(host=self.host, port=self.port, socket_timeout=5)
        return self._raw

    def reset_clients(self) -> None:
        for c in (self._client, self._raw):
            if c is not None:
                c.close()
        self._client = self._raw = None

    def running(self) -> bool:
        return all(n.running() for n in self.nodes)

    def start(self) -> None:
        if self.created and self.running():
            return
        for n in self.nodes:
            n.start()
        if not self.created:
            subprocess.run([REDIS_CLI, "--cluster", "create", *[n.address for n in self.nodes],
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            self.created = True
        self.wait_ok()
        self.reset_clients()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every node says cluster_state:ok and knows every slot's owner."""
        seen = []

        def ok():
            seen.clear()
            for n in self.nodes:
                info = n.client.execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in info:
                    seen.append(f"{n.port}: {info[:40]}")
                    return False
            maps = {str(sorted((s[0], s[1], s[2][1])
                               for s in n.client.execute_command("CLUSTER", "SLOTS")))
                    for n in self.nodes}
            seen.extend(maps)
            return len(maps) == 1
        try:
            wait_until(ok, timeout, interval=0.1, what="cluster_state:ok on every node")
        except AssertionError as e:
            raise AssertionError(f"{e}: {seen}") from None

    def stop(self) -> None:
        """Every node at once (SIGTERM to all, then the waits), as a
        standalone server stops: no worker's subscriber finds a node still
        up to move to in between."""
        for n in self.nodes:
            if n.running():
                n.proc.terminate()
        for n in self.nodes:
            n.stop()
        self.reset_clients()

    def flushall(self) -> None:
        for n in self.nodes:
            n.client.flushall()

    def slot_of(self, key: str) -> int:
        return int(self.nodes[0].client.execute_command("CLUSTER", "KEYSLOT", key))

    def node_of_slot(self, slot: int) -> ClusterNode:
        """The primary serving `slot` now (asked of every node in turn)."""
        for asking in self.nodes:
            if not asking.running():
                continue
            for first, last, primary, *_ in asking.client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"no node serves slot {slot}")

    def node_of(self, key: str) -> ClusterNode:
        return self.node_of_slot(self.slot_of(key))

    def move_slot(self, slot: int, to: ClusterNode, finish: bool = True) -> None:
        """Moves `slot` with its keys to `to` the way `redis-cli --cluster
        reshard` does: IMPORTING / MIGRATING, MIGRATE the keys, then (finish)
        SETSLOT NODE on every node."""
        src = self.node_of_slot(slot)
        if src is to:
            return
        to.client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id())
        src.client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", to.node_id())
        for _ in range(10000):  # bounded: a slot of a test holds few keys
            keys = src.raw.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            src.raw.execute_command("MIGRATE", to.host, to.port, "", 0, 5000, "KEYS", *keys)
        if finish:
            self.finish_slot(slot, to)

    def finish_slot(self, slot: int, to: ClusterNode) -> None:
        for n in [to] + [n for n in self.nodes if n is not to]:
            n.client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", to.node_id())
        self.wait_ok()
        self.reset_clients()

    def all_values(self) -> Dict[bytes, List[bytes]]:
        out: Dict[bytes, List[bytes]] = {}
        for n in self.nodes:
            out.update(n.all_values())
        return out

    def assert_absent(self, secrets_: Iterable[str]) -> None:
        for n in self.nodes:
            n.assert_absent(secrets_)

    def errorstat(self, node: ClusterNode, kind: str) -> int:
        """How many `kind` errors (MOVED, ASK, TRYAGAIN) `node` answered."""
        stat = node.client.info("errorstats").get(f"errorstat_{kind}")
        if isinstance(stat, dict):
            return int(stat["count"])
        return int(str(stat).split("=")[1]) if stat else 0  # "count=N"

    def subscribers(self, channel: str = "byok:invalidate") -> int:
        return sum(n.client.pubsub_numsub(channel)[0][1] for n in self.nodes if n.running())


class MallocCounter:
    """bench/malloc_count.c preloaded into the nginx started after this:
    malloc-family calls per worker process (issue 18's allocation bounds).
    Needs `cc` and no sanitizer runtime (it owns malloc)."""

    def __init__(self, tmp_path: Path, monkeypatch):
        so, self.counts = tmp_path / "malloc_count.so", tmp_path / "mc"
        self.counts.mkdir()
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(so),
                        str(REPO / "bench" / "malloc_count.c"), "-ldl", "-lpthread"], check=True)
        monkeypatch.setitem(NGINX_ENV, "LD_PRELOAD", str(so))
        monkeypatch.setitem(NGINX_ENV, "MALLOC_COUNT_DIR", str(self.counts))

    def per_call(self, gw: "Gateway", call, n: int) -> float:
        """Allocations of gw's only worker per call of call(), over n calls."""
        (worker,) = gw.workers()
        path = self.counts / str(worker)

        def calls():
            return int.from_bytes(path.read_bytes()[:8], "little") if path.exists() else 0

        before = calls()
        for _ in range(n):
            call()
        return (calls() - before) / n


def read_monitor(mon, enough, limit=15):
    """Lines of a MONITOR connection until enough(lines) holds or `limit`
    seconds pass (a hang guard). The caller closes `mon`."""
    seen = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = mon.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        seen += chunk
        if enough(seen.split(b"\r\n")):
            break
    return seen.split(b"\r\n")
