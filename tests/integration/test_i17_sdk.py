"""Issue 17: every official SDK works unchanged — the gateway key where each
SDK puts it, native roots that match each SDK's base URL, the gateway's own
errors in each API's shape, the client's anthropic-version, and no fallback
retry on top of the client's own retries."""

import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import REPO, assert_json_error

SDK_DIR = Path(__file__).resolve().parent.parent / "sdk"
GOOGLE_PATH = "/google/v1beta/models/gemini-2.0-flash:generateContent"
GEMINI_ANSWER = {
    "candidates": [{"content": {"parts": [{"text": "hi from fake google"}], "role": "model"},
                    "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5, "totalTokenCount": 8},
    "modelVersion": "gemini-2.0-flash",
}
GEMINI_ASK = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.fixture(scope="module")
def sdk():
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm are required (scripts/deps.sh test installs them)"
    mods = SDK_DIR / "node_modules"
    if not all((mods / m).exists() for m in ("openai", "@anthropic-ai/sdk", "@google/genai")):
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock",
                        "--loglevel=error"], cwd=SDK_DIR, check=True, timeout=300)

    def run(gw, key, case):
        out = subprocess.run(["node", str(SDK_DIR / "sdk_i17.mjs"), gw.url(""), key, case],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])
    return run


# -- item 1: where the SDKs put the gateway key -------------------------------------

KEY_LOG_FORMAT = ("log_format keyrisk '$request | $request_uri | $args | $query_string | "
                  "$arg_key';")


def test_i17_01_google_key_header_and_query_param_are_accepted_never_forwarded(gateway, fake_provider):
    """A log_format with every variable that holds the query string logs the
    request without the `key=` parameter: the gateway removes it first."""
    gw = gateway(start=False, extra_http=KEY_LOG_FORMAT)
    log = gw.dir / "logs" / "keyrisk.log"
    gw.extra_server = f"access_log {log} keyrisk;"
    gw.conf_path.write_text(gw.render())
    gw.start()
    p = gw.provision(keys={"google": None})
    gw.track(p.gateway_key)
    fake_provider.set_rule("/google", body=GEMINI_ANSWER)

    r1 = gw.request("POST", GOOGLE_PATH, headers={"x-goog-api-key": p.gateway_key}, json=GEMINI_ASK)
    assert r1.status_code == 200, r1.text
    r2 = gw.request("POST", f"{GOOGLE_PATH}?alt=sse&key={p.gateway_key}&x=1", json=GEMINI_ASK)
    assert r2.status_code == 200, r2.text
    r3 = gw.request("POST", GOOGLE_PATH, headers={"api-key": p.gateway_key}, json=GEMINI_ASK)
    assert r3.status_code == 200, r3.text

    got = fake_provider.requests("/google")
    assert [g.path for g in got] == [GOOGLE_PATH, GOOGLE_PATH + "?alt=sse&x=1", GOOGLE_PATH]
    for g in got:
        assert g.headers["x-goog-api-key"] == p.keys["google"]
        assert p.gateway_key not in g.raw_text()
    logged = log.read_text()
    assert "alt=sse&x=1" in logged, logged  # the log did record the query...
    assert p.gateway_key not in logged      # ...without the key
    gw.assert_no_leaks(r1, r2, r3, logged)


def test_i17_01_azure_api_key_anywhere_google_sources_only_on_google(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.chat(None, headers={"api-key": p.gateway_key})
    assert r.status_code == 200, r.text
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {p.keys['openai']}"
    # A Google-style key on a non-Google path is not a gateway key source.
    for h, path in (({"x-goog-api-key": p.gateway_key}, "/v1/chat/completions"),
                    ({}, f"/v1/chat/completions?key={p.gateway_key}")):
        r = gw.chat(None, headers=h, path=path)
        assert_json_error(r, 401)
        gw.assert_no_leaks(r, extra=[p.gateway_key])


def test_i17_01_shipped_log_format_records_no_query():
    conf = (REPO / "conf" / "nginx.conf").read_text()
    fmt = conf[conf.index("log_format"):conf.index(";", conf.index("log_format"))]
    for var in ("$request ", "$request\"", "$request'", "$request_uri", "$args", "$query_string",
                "$arg_"):
        assert var not in fmt, var


# -- item 2: native roots are the SDKs' base URLs ----------------------------------

# provider -> (path its official SDK sends below base URL <gateway>/<id>, real API path)
SDK_PATHS = {
    "openai": ("/chat/completions", "/v1/chat/completions"),
    "anthropic": ("/v1/messages", "/v1/messages"),
    "google": ("/v1beta/models/gemini-2.0-flash:generateContent",
               "/v1beta/models/gemini-2.0-flash:generateContent"),
    "groq": ("/openai/v1/chat/completions", "/openai/v1/chat/completions"),
    "mistral": ("/v1/chat/completions", "/v1/chat/completions"),
    "together": ("/chat/completions", "/v1/chat/completions"),
    "perplexity": ("/chat/completions", "/chat/completions"),
    "cohere": ("/v2/chat", "/v2/chat"),
    "huggingface": ("/chat/completions", "/v1/chat/completions"),
    "deepseek": ("/chat/completions", "/chat/completions"),
    "openrouter": ("/chat/completions", "/api/v1/chat/completions"),
}


def shipped_catalog_on(fake_base):
    """conf/providers.yaml with each https://<host> replaced by <fake>/<id>:
    the paths stay the real ones."""
    doc = yaml.safe_load((REPO / "conf" / "providers.yaml").read_text())
    for pid in ("ollama", "custom"):
        doc["providers"].pop(pid)
    for pid, p in doc["providers"].items():
        for field in ("base_url", "openai_base"):
            if field in p:
                p[field] = re.sub(r"^https://[^/]+", f"{fake_base}/{pid}", p[field])
    return yaml.safe_dump(doc), doc["providers"]


def test_i17_02_each_sdk_path_reaches_the_real_api_path(gateway, fake_provider):
    text, providers = shipped_catalog_on(fake_provider.base)
    assert set(providers) == set(SDK_PATHS)
    gw = gateway(providers=text)
    keys = {pid: (p.get("key_prefix") or "k") + secrets.token_hex(16) for pid, p in providers.items()}
    p = gw.provision(keys=keys)
    for pid, (sdk_path, real_path) in SDK_PATHS.items():
        r = gw.chat(p, model="m", path=f"/{pid}{sdk_path}")
        assert r.status_code == 200, (pid, r.status_code, r.text)
        assert fake_provider.last(f"/{pid}/").path == f"/{pid}{real_path}", pid


def test_i17_02_google_sdk_with_base_url_gateway_google(gateway, fake_provider, sdk):
    text, _ = shipped_catalog_on(fake_provider.base)
    gw = gateway(providers=text)
    p = gw.provision(keys={"google": "AIza" + secrets.token_hex(16)})
    gw.track(p.gateway_key)
    fake_provider.set_rule("/google", body=GEMINI_ANSWER)
    assert sdk(gw, p.gateway_key, "google") == {"text": "hi from fake google"}
    rec = fake_provider.last("/google")
    assert rec.path == GOOGLE_PATH
    assert rec.headers["x-goog-api-key"] == p.keys["google"]

    sse = "data: " + json.dumps(GEMINI_ANSWER) + "\r\n\r\n"
    fake_provider.set_rule("/google", body=sse, headers={"content-type": "text/event-stream"})
    assert sdk(gw, p.gateway_key, "google_stream") == {"text": "hi from fake google"}
    assert fake_provider.last("/google").path == \
        "/google/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    for rec in fake_provider.requests():
        assert p.gateway_key not in rec.raw_text()
    gw.assert_no_leaks()


# -- item 5: the gateway's errors in each API's shape, 4xx for configuration ----------

def test_i17_05_errors_in_each_sdks_shape(gw, fake_provider, sdk):
    bad = "byok_" + "x" * 30
    g = sdk(gw, bad, "google_bad_key")
    assert g["status"] == 401 and "unknown gateway API key" in g["message"], g
    a = sdk(gw, bad, "anthropic_bad_key")
    assert (a["status"], a["name"], a["type"]) == (401, "AuthenticationError", "authentication_error"), a
    assert "unknown gateway API key" in a["message"], a
    o = sdk(gw, bad, "openai_bad_key")
    assert (o["status"], o["name"]) == (401, "AuthenticationError"), o

    r = gw.request("POST", GOOGLE_PATH, headers={"x-goog-api-key": bad}, json=GEMINI_ASK)
    assert r.json() == {"error": {"code": 401, "message": "unknown gateway API key",
                                  "status": "UNAUTHENTICATED"}}
    r = gw.request("POST", "/anthropic/v1/messages", headers={"x-api-key": bad}, json={})
    assert r.json() == {"type": "error", "error": {"type": "authentication_error",
                                                   "message": "unknown gateway API key"}}
    assert fake_provider.requests() == []


def test_i17_05_configuration_problems_are_4xx_in_native_shape(gateway, fake_provider):
    gw = gateway(overrides={"byok_system_key": None})  # no operator key at all
    p = gw.provision(keys={})
    r = gw.request("POST", "/anthropic/v1/messages", headers={"x-api-key": p.gateway_key},
                   json={"model": "claude-3-5-sonnet-latest"})
    assert r.status_code == 403, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "permission_error"
    r = gw.request("POST", GOOGLE_PATH, headers={"x-goog-api-key": p.gateway_key}, json=GEMINI_ASK)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["status"] == "PERMISSION_DENIED"
    r = gw.chat(p, model="gpt-4o")
    assert assert_json_error(r, 403)["code"] == "no_credential"
    r = gw.request("POST", "/nosuch/v1/x", headers={"Authorization": f"Bearer {p.gateway_key}"})
    assert assert_json_error(r, 404)["code"] == "unknown_provider"
    assert fake_provider.requests() == []


# -- item 6: the client's anthropic-version and anthropic-beta --------------------

def test_i17_06_client_anthropic_version_and_beta_pass_through(gw, fake_provider):
    p = gw.provision(keys={"anthropic": None})
    h = {"x-api-key": p.gateway_key}
    r = gw.request("POST", "/anthropic/v1/messages", json={"model": "claude-x"},
                   headers={**h, "anthropic-version": "2024-10-22", "anthropic-beta": "tools-2024"})
    assert r.status_code == 200, r.text
    got = fake_provider.last("/anthropic")
    assert got.headers["anthropic-version"] == "2024-10-22"
    assert got.headers["anthropic-beta"] == "tools-2024"
    assert [k for k, _ in got.header_list].count("anthropic-version") == 1
    r = gw.request("POST", "/anthropic/v1/messages", json={"model": "claude-x"}, headers=h)
    assert r.status_code == 200, r.text
    assert fake_provider.last("/anthropic").headers["anthropic-version"] == "2023-06-01"
    # The auth header is never the client's.
    assert fake_provider.last("/anthropic").headers["x-api-key"] == p.keys["anthropic"]


# -- item 7: no fallback retry on top of the client's ---------------------------------

def test_i17_07_no_fallback_when_the_client_is_retrying(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 503, "busy")
    r = gw.chat(p, headers={"x-stainless-retry-count": "1"})
    assert r.status_code == 503, r.text
    assert fake_provider.requests("/openrouter") == []
    r = gw.chat(p, headers={"x-stainless-retry-count": "0"})  # the first attempt may fall back
    assert r.status_code == 200 and r.headers["x-byok-route"] == "fallback", r.text


def test_i17_07_fallback_on_rate_limit_false_returns_the_providers_429(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.admin("PATCH", f"/projects/{p.pid}", {"fallback_on_rate_limit": False})
    assert r.status_code == 200 and r.json()["fallback_on_rate_limit"] is False, r.text
    assert gw.admin("PATCH", f"/projects/{p.pid}", {"fallback_on_rate_limit": "no"}).status_code == 400  # wrong type
    fake_provider.set_rule("/openai", status=429, headers={"retry-after": "7"},
                           body={"error": {"message": "slow down", "type": "rate_limit"}})
    r = gw.chat(p)
    assert r.status_code == 429 and r.headers.get("retry-after") == "7", r.text
    assert r.json()["error"]["message"] == "slow down"  # the provider's own body
    assert fake_provider.requests("/openrouter") == []
    fake_provider.fail("/openai", 503, "busy")  # 5xx still falls back
    r = gw.chat(p)
    assert r.status_code == 200 and r.headers["x-byok-route"] == "fallback", r.text
    assert gw.admin("GET", f"/projects/{p.pid}").json()["fallback_on_rate_limit"] is False


# -- item 4: bodiless /v1 requests use the project's provider and key -------------------

def test_i17_04_bodiless_v1_requests_go_to_the_projects_provider(gw, fake_provider):
    p = gw.provision(keys={"anthropic": None})
    r = gw.request("GET", "/v1/models", headers=p.auth)
    assert r.status_code == 200, r.text
    assert r.headers["x-byok-route"] == "byok" and r.headers["x-byok-provider"] == "anthropic"
    rec = fake_provider.last()
    assert rec.path == "/anthropic/models"
    assert rec.headers["x-api-key"] == p.keys["anthropic"]
    assert fake_provider.requests("/openrouter") == []

    gkey = gw.put_key(p.pid, "google")
    r = gw.admin("PATCH", f"/projects/{p.pid}", {"default_provider": "google"})
    assert r.status_code == 200 and r.json()["default_provider"] == "google", r.text
    assert gw.admin("PATCH", f"/projects/{p.pid}", {"default_provider": "nosuch"}).status_code == 422
    r = gw.request("GET", "/v1/models/gemini-2.0-flash", headers=p.auth)
    assert r.status_code == 200 and r.headers["x-byok-provider"] == "google", r.text
    rec = fake_provider.last()
    assert rec.path == "/google/models/gemini-2.0-flash"
    assert rec.headers["x-goog-api-key"] == gkey
    gw.assert_no_leaks(r)


def test_i17_04_bodiless_without_project_keys_keeps_the_fallback_provider(gw, fake_provider):
    p = gw.provision(keys={})
    r = gw.request("GET", "/v1/models", headers=p.auth)
    assert r.status_code == 200, r.text
    assert fake_provider.last().provider == "openrouter"


def test_i17_01_key_param_never_reaches_the_error_log_request_context(gw, fake_provider):
    """error_log lines of a request end with `request: "<request line>"`; the
    `key=` parameter is gone from that line too."""
    p = gw.provision(keys={"openai": None})
    junk = "byok_" + secrets.token_hex(16)
    gw.track(junk)
    fake_provider.fail("/openai", 503, "busy")
    r = gw.chat(p, path=f"/v1/chat/completions?trace=1&key={junk}")
    assert r.status_code == 200 and r.headers["x-byok-route"] == "fallback", r.text
    log = gw.error_log()
    assert 'request: "POST /v1/chat/completions?trace=1 HTTP/1.1"' in log, log[-2000:]
    gw.assert_no_leaks(r)
