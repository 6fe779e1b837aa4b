"""Request path (SPEC §4): routing, credentials, fallback, streaming,
header hygiene, cache invalidation and Redis outages — asserted on what the
fake provider actually received."""

import base64
import datetime
import json
import re
import secrets
import threading
import time

import pytest

import redis

from harness import (Abort, assert_json_error, canary, free_port, metric_value, providers_yaml, raw_http,
                     redis_stalled, status_of, until, wait_until)

CHAT = "/v1/chat/completions"
HANG_GUARD = 30  # seconds; only stops a hung test, never decides a verdict


def route(r):
    return r.headers.get("x-byok-route")


def reason(r):
    return r.headers.get("x-byok-fallback-reason")


def assert_not_sent(fake, *secrets_):
    text = fake.all_text()
    for s in secrets_:
        assert s not in text, f"{s[:8]}… reached the provider"


# -- direct routing -------------------------------------------------------------

def test_openai_unified_direct(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
    r = gw.chat(p, body=body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "gpt-4o"
    assert route(r) == "byok"
    assert r.headers.get("x-byok-provider") == "openai"
    assert reason(r) is None

    rec = fake_provider.last()
    assert rec.method == "POST"
    assert rec.path == "/openai/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"
    assert rec.json() == body  # model unchanged, body untouched
    assert len(fake_provider.requests()) == 1
    assert_not_sent(fake_provider, p.gateway_key)


def test_openai_native_passthrough(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.chat(p, model="gpt-4o-mini", path="/openai/chat/completions")
    assert r.status_code == 200, r.text
    assert route(r) == "byok"
    rec = fake_provider.last()
    assert rec.path == "/openai/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"
    assert rec.json()["model"] == "gpt-4o-mini"
    assert_not_sent(fake_provider, p.gateway_key)


def test_gateway_key_in_x_api_key(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.chat(p, model="gpt-4o", auth="x-api-key")
    assert r.status_code == 200, r.text
    rec = fake_provider.last()
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"
    assert "x-api-key" not in rec.headers
    assert_not_sent(fake_provider, p.gateway_key)


def test_unified_models_and_embeddings(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.request("GET", "/v1/models", headers={**p.auth, "x-byok-provider": "openai"})
    assert r.status_code == 200, r.text
    rec = fake_provider.last()
    assert (rec.method, rec.route_path) == ("GET", "/openai/models")
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"

    r = gw.request("POST", "/v1/embeddings", headers=p.auth,
                   json={"model": "text-embedding-3-small", "input": "hello"})
    assert r.status_code == 200, r.text
    rec = fake_provider.last()
    assert rec.route_path == "/openai/embeddings"
    assert rec.json() == {"model": "text-embedding-3-small", "input": "hello"}


def test_anthropic_native_messages(gw, fake_provider):
    p = gw.provision(keys={"anthropic": None})
    body = {"model": "claude-3-5-sonnet-latest", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}
    r = gw.request("POST", "/anthropic/v1/messages", json=body,
                   headers={"x-api-key": p.gateway_key})
    assert r.status_code == 200, r.text
    assert route(r) == "byok"
    assert r.headers.get("x-byok-provider") == "anthropic"
    rec = fake_provider.last()
    assert rec.path == "/anthropic/v1/messages"
    assert rec.headers["x-api-key"] == p.keys["anthropic"]
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in rec.headers
    assert rec.json() == body
    assert_not_sent(fake_provider, p.gateway_key)


def test_anthropic_unified_by_model_glob(gw, fake_provider):
    p = gw.provision(keys={"anthropic": None})
    r = gw.chat(p, model="claude-3-5-haiku-latest")
    assert r.status_code == 200, r.text
    assert route(r) == "byok"
    assert r.headers.get("x-byok-provider") == "anthropic"
    rec = fake_provider.last()
    assert rec.path == "/anthropic/chat/completions"
    assert rec.headers["x-api-key"] == p.keys["anthropic"]
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in rec.headers
    assert rec.json()["model"] == "claude-3-5-haiku-latest"


def test_google_x_goog_api_key(gw, fake_provider):
    p = gw.provision(keys={"google": None})
    r = gw.chat(p, model="gemini-2.0-flash")
    assert r.status_code == 200, r.text
    assert r.headers.get("x-byok-provider") == "google"
    rec = fake_provider.last()
    assert rec.path == "/google/chat/completions"
    assert rec.headers["x-goog-api-key"] == p.keys["google"]
    assert "authorization" not in rec.headers
    assert "x-api-key" not in rec.headers


@pytest.mark.parametrize("model,provider,sent", [
    ("openai/gpt-4o", "openai", "gpt-4o"),
    ("anthropic/claude-3-opus", "anthropic", "claude-3-opus"),
])
def test_model_prefix_selects_provider_and_is_stripped(gw, fake_provider, model, provider, sent):
    p = gw.provision(keys={"openai": None, "anthropic": None})
    r = gw.chat(p, model=model)
    assert r.status_code == 200, r.text
    assert r.headers.get("x-byok-provider") == provider
    assert route(r) == "byok"
    rec = fake_provider.last()
    assert rec.path == f"/{provider}/chat/completions"
    assert rec.json()["model"] == sent
    assert rec.json()["messages"] == [{"role": "user", "content": "hi"}]


def test_header_selects_provider(gw, fake_provider):
    p = gw.provision(keys={"openai": None, "anthropic": None})
    r = gw.chat(p, model="my-finetune", headers={"x-byok-provider": "anthropic"})
    assert r.status_code == 200, r.text
    assert r.headers.get("x-byok-provider") == "anthropic"
    rec = fake_provider.last()
    assert rec.path == "/anthropic/chat/completions"
    assert rec.headers["x-api-key"] == p.keys["anthropic"]
    assert rec.json()["model"] == "my-finetune"


def test_header_wins_over_model(gw, fake_provider):
    p = gw.provision(keys={"openai": None, "anthropic": None})
    r = gw.chat(p, model="gpt-4o", headers={"x-byok-provider": "anthropic"})
    assert r.status_code == 200, r.text
    assert fake_provider.last().path == "/anthropic/chat/completions"
    assert fake_provider.last().json()["model"] == "gpt-4o"


def test_unmatched_model_goes_to_fallback_untouched(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.chat(p, model="llama-3-70b-instruct")
    assert r.status_code == 200, r.text
    # README: an unmatched model goes to the fallback provider untouched,
    # route `system` with the operator's key (not a fallback: no reason)
    assert route(r) == "system"
    assert r.headers.get("x-byok-provider") == "openrouter"
    assert reason(r) is None
    rec = fake_provider.last()
    assert rec.path == "/openrouter/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {gw.system_key}"
    assert rec.json()["model"] == "llama-3-70b-instruct"
    assert_not_sent(fake_provider, p.keys["openai"], p.gateway_key)


def test_system_route_for_provider_with_operator_key(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.chat(p, model="meta-llama/llama-3-70b", headers={"x-byok-provider": "openrouter"})
    assert r.status_code == 200, r.text
    assert route(r) == "system"
    rec = fake_provider.last()
    assert rec.path == "/openrouter/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {gw.system_key}"
    assert rec.json()["model"] == "meta-llama/llama-3-70b"


# -- fallback -------------------------------------------------------------------

def assert_fallback(fake, r, want_reason, model_sent, system_key, *not_sent):
    assert r.status_code == 200, r.text
    assert route(r) == "fallback", dict(r.headers)
    assert reason(r) == want_reason, dict(r.headers)
    rec = fake.last("/openrouter")
    assert rec.path == "/openrouter/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {system_key}"
    assert rec.json()["model"] == model_sent
    assert rec.json()["messages"] == [{"role": "user", "content": "hi"}]
    assert_not_sent(fake, *not_sent)


def test_no_key_falls_back_to_openrouter(gw, fake_provider):
    p = gw.provision(keys={})
    r = gw.chat(p, model="gpt-4o-mini")
    assert_fallback(fake_provider, r, "no_key", "openai/gpt-4o-mini", gw.system_key, p.gateway_key)
    assert fake_provider.requests("/openai") == []


def test_free_tier_falls_back_with_reason_tier(gw, fake_provider):
    p = gw.provision(tier="free", keys={"openai": None})
    r = gw.chat(p, model="gpt-4o-mini")
    assert_fallback(fake_provider, r, "tier", "openai/gpt-4o-mini", gw.system_key,
                    p.keys["openai"], p.gateway_key)
    assert fake_provider.requests("/openai") == []


def test_inactive_key_falls_back(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.admin("PATCH", f"/projects/{p.pid}/keys/openai", {"is_active": False})
    assert r.status_code == 200, r.text
    r = gw.chat(p, model="gpt-4o-mini")
    assert_fallback(fake_provider, r, "inactive", "openai/gpt-4o-mini", gw.system_key,
                    p.keys["openai"], p.gateway_key)


def test_prefixed_model_is_not_renamed_twice(gw, fake_provider):
    p = gw.provision(keys={})
    r = gw.chat(p, model="openai/gpt-4o")
    assert_fallback(fake_provider, r, "no_key", "openai/gpt-4o", gw.system_key)


def test_policy_off_without_key_is_denied(gw, fake_provider):
    p = gw.provision(fallback="off", keys={})
    r = gw.chat(p, model="gpt-4o")
    err = assert_json_error(r, 403)
    assert p.gateway_key not in r.text
    assert (err["code"], err["type"]) == ("byok_denied", "permission_error")
    assert fake_provider.requests() == []


def test_policy_no_key_returns_provider_error(gw, fake_provider):
    p = gw.provision(fallback="no_key", keys={"openai": None})
    fake_provider.fail("/openai", 503)
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 503, r.text
    assert len(fake_provider.requests("/openai")) == 1
    assert fake_provider.requests("/openrouter") == []


def test_policy_no_key_still_falls_back_without_key(gw, fake_provider):
    p = gw.provision(fallback="no_key", keys={})
    r = gw.chat(p, model="gpt-4o")
    assert_fallback(fake_provider, r, "no_key", "openai/gpt-4o", gw.system_key)


def test_policy_off_returns_provider_error(gw, fake_provider):
    p = gw.provision(fallback="off", keys={"openai": None})
    fake_provider.fail("/openai", 429)
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 429, r.text
    assert fake_provider.requests("/openrouter") == []


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_auto_falls_back_on_provider_failure(gw, fake_provider, status):
    p = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", status)
    r = gw.chat(p, model="gpt-4o")
    assert_fallback(fake_provider, r, f"upstream_{status}", "openai/gpt-4o", gw.system_key)
    direct = fake_provider.requests("/openai")
    assert len(direct) == 1
    assert direct[0].headers["authorization"] == f"Bearer {p.keys['openai']}"
    # the project key went to its own provider only
    assert p.keys["openai"] not in fake_provider.last("/openrouter").raw_text()


def test_auto_does_not_fall_back_on_client_error(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 400, "bad request from provider")
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 400
    assert "bad request from provider" in r.text
    assert fake_provider.requests("/openrouter") == []


def test_auto_falls_back_on_connect_error(gateway, fake_provider):
    dead = f"http://127.0.0.1:{free_port()}"
    cat = providers_yaml(fake_provider.base).replace(
        f"{fake_provider.base}/openai", f"{dead}/openai")
    gw = gateway(providers=cat)
    p = gw.provision(keys={"openai": None})
    r = gw.chat(p, model="gpt-4o")
    assert_fallback(fake_provider, r, "upstream_error", "openai/gpt-4o", gw.system_key)


def test_fallback_decision_logged_without_secrets(gw, fake_provider):
    p = gw.provision(tier="free", keys={"openai": None})
    r = gw.chat(p, model="gpt-4o")
    assert route(r) == "fallback"
    line = wait_until(lambda: [l for l in gw.error_log().splitlines()
                               if p.pid in l and "tier" in l], HANG_GUARD, what="fallback log line")
    assert "openai" in line[0]
    gw.assert_no_leaks(r)


# -- streaming ------------------------------------------------------------------



def first_chunk_while_held(resp, hold):
    """Reads the stream up to its first event while the fake provider still
    holds every later chunk (so nothing later exists yet), then releases
    the provider and reads the rest. Returns (first event bytes, rest).
    A buffering proxy would deliver nothing before the release: the read
    would hang until HANG_GUARD (requests' read timeout) and fail."""
    it = resp.iter_content(chunk_size=None)
    first = b""
    while b"\n\n" not in first:
        first += next(it)
    assert not hold.is_set(), "the provider was released before chunk 1 arrived"
    t0 = time.monotonic()
    hold.set()
    rest = b"".join(it)
    print(f"rest of the stream {time.monotonic() - t0:.3f}s after the release")
    return first, rest


def test_sse_streams_unbuffered(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    hold = threading.Event()
    fake_provider.stream("/openai", chunks=5, hold=hold)
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = gw.request("POST", CHAT, headers=p.auth, json=body, stream=True, timeout=HANG_GUARD)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert route(r) == "byok"
    first, rest = first_chunk_while_held(r, hold)
    assert b"tok0 " in first and b"tok1" not in first, first
    text = (first + rest).decode()
    for i in range(5):
        assert f"tok{i} " in text
    assert text.rstrip().endswith("data: [DONE]")
    assert fake_provider.last().json()["stream"] is True


def test_sse_fallback_streams_too(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 503)
    hold = threading.Event()
    fake_provider.stream("/openrouter", chunks=4, hold=hold)
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = gw.request("POST", CHAT, headers=p.auth, json=body, stream=True, timeout=HANG_GUARD)
    assert r.status_code == 200
    assert route(r) == "fallback" and reason(r) == "upstream_503"
    first, rest = first_chunk_while_held(r, hold)
    assert b"tok0 " in first and b"tok1" not in first, first
    assert b"data: [DONE]" in rest
    assert fake_provider.last("/openrouter").json()["model"] == "openai/gpt-4o"


# -- authentication and hygiene -----------------------------------------------

def test_missing_gateway_key_is_401(gw, fake_provider):
    r = gw.chat(None, model="gpt-4o")
    assert_json_error(r, 401)
    assert fake_provider.requests() == []


@pytest.mark.parametrize("bad", ["byok_" + secrets.token_hex(20), "sk-not-a-gateway-key",
                                 "Basic Zm9vOmJhcg=="])
def test_unknown_gateway_key_is_401(gw, fake_provider, bad):
    gw.provision(keys={"openai": None})
    gw.track(bad)
    r = gw.chat(bad, model="gpt-4o")
    assert_json_error(r, 401)
    assert bad not in r.text
    assert fake_provider.requests() == []
    gw.assert_no_leaks(r)


def test_client_credentials_never_reach_provider(gw, fake_provider):
    p = gw.provision(keys={"openai": None, "google": None})
    junk = {h: canary("sk-junk-") for h in ("api-key", "x-goog-api-key", "query")}
    r = gw.request("POST", f"/openai/chat/completions?key={junk['query']}&foo=bar",
                   headers={**p.auth, "api-key": junk["api-key"],
                            "x-goog-api-key": junk["x-goog-api-key"]},
                   json={"model": "gpt-4o", "messages": []})
    assert r.status_code == 200, r.text
    rec = fake_provider.last()
    assert rec.route_path == "/openai/chat/completions"
    assert "foo=bar" in rec.query
    assert not re.search(r"(^|&)key=", rec.query), rec.query
    assert "api-key" not in rec.headers and "x-goog-api-key" not in rec.headers
    assert rec.headers["authorization"] == f"Bearer {p.keys['openai']}"

    # gateway key in x-api-key; client junk in Authorization is not forwarded either
    r = gw.request("POST", "/google/chat/completions?key=" + junk["query"],
                   headers={"x-api-key": p.gateway_key, "x-goog-api-key": junk["x-goog-api-key"]},
                   json={"model": "gemini-2.0-flash", "messages": []})
    assert r.status_code == 200, r.text
    rec = fake_provider.last()
    assert rec.headers["x-goog-api-key"] == p.keys["google"]
    assert "x-api-key" not in rec.headers and "authorization" not in rec.headers

    r = gw.request("GET", f"/v1/models?key={junk['query']}",
                   headers={**p.auth, "x-byok-provider": "openai"})
    assert r.status_code == 200, r.text
    assert "key=" not in fake_provider.last().query

    assert_not_sent(fake_provider, p.gateway_key, *junk.values())


@pytest.mark.parametrize("value", [b"openai\rX-Evil: 1", b"open\x00ai"], ids=["cr", "nul"])
def test_control_chars_in_provider_header_are_400(gw, fake_provider, value):
    p = gw.provision(keys={"openai": None})
    body = b'{"model":"gpt-4o","messages":[]}'
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
           b"Authorization: Bearer " + p.gateway_key.encode() + b"\r\n"
           b"Content-Type: application/json\r\n"
           b"x-byok-provider: " + value + b"\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    out = raw_http(gw.port, req)
    assert status_of(out) == 400, out[:300]
    assert fake_provider.requests() == []


@pytest.mark.parametrize("path,want", [("/openai/chat%0D%0AX-Evil:%201/completions", 200),
                                       ("/openai/chat%0Acompletions", 200),
                                       ("/openai/chat%00completions", 400)],
                         ids=["crlf", "lf", "nul"])
def test_encoded_control_chars_in_path_never_reach_provider(gw, fake_provider, path, want):
    """The native path is copied upstream: decoded CR/LF/NUL must give 400,
    or the path must stay percent-encoded."""
    p = gw.provision(keys={"openai": None})
    body = b'{"model":"gpt-4o","messages":[]}'
    req = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
           b"Authorization: Bearer " + p.gateway_key.encode() + b"\r\n"
           b"Content-Type: application/json\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    out = raw_http(gw.port, req)
    # README Input: the upstream path is the raw URI, so CR/LF stay encoded;
    # nginx's own URI parser refuses an encoded NUL before the module runs
    assert status_of(out) == want, out[:300]
    if want == 400:
        assert fake_provider.requests() == []
    else:
        rec = fake_provider.last("/openai")
        assert rec.path == path, rec.path
        assert "x-evil" not in rec.headers


def test_invalid_json_body_is_400(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    r = gw.request("POST", CHAT, headers={**p.auth, "content-type": "application/json"},
                   data=b'{"model": "gpt-4o", "messages": [')
    assert_json_error(r, 400)
    assert fake_provider.requests() == []


# -- tampering, invalidation ------------------------------------------------------

@pytest.mark.parametrize("policy", ["auto", "off"])
def test_record_copied_between_projects_is_never_sent(gw, fake_provider, redis_server, policy):
    a = gw.provision(keys={"openai": None})
    b = gw.provision(fallback=policy, keys={})
    rc = redis_server.client
    # warm B's cache with its key-less state
    gw.chat(b, model="gpt-4o")
    stolen = rc.hget(f"byok:{{{a.pid}}}:keys", "openai")
    assert stolen and json.loads(stolen)["ct"]
    rc.hset(f"byok:{{{b.pid}}}:keys", "openai", stolen)
    rc.publish("byok:invalidate", b.pid)
    fake_provider.clear()

    def decided(r):
        if policy == "auto":
            return reason(r) == "decrypt_error"
        return r.status_code == 403 and any(b.pid in l and "decrypt" in l
                                            for l in gw.error_log().splitlines())

    r = until(lambda: gw.chat(b, model="gpt-4o", headers={"Connection": "close"}), decided, HANG_GUARD,
              what="B to see the copied record")
    if policy == "auto":
        assert route(r) == "fallback"
        assert fake_provider.last().path == "/openrouter/chat/completions"
        assert fake_provider.last().json()["model"] == "openai/gpt-4o"
    else:
        assert_json_error(r, 403)
    assert fake_provider.requests("/openai") == []
    assert_not_sent(fake_provider, a.keys["openai"])
    wait_until(lambda: any(b.pid in l and "decrypt" in l for l in gw.error_log().splitlines()),
               HANG_GUARD, what="decrypt failure logged")
    gw.assert_no_leaks(r)


def test_record_for_other_provider_does_not_decrypt(gw, fake_provider, redis_server):
    p = gw.provision(keys={"openai": None})
    rc = redis_server.client
    rec = rc.hget(f"byok:{{{p.pid}}}:keys", "openai")
    rc.hset(f"byok:{{{p.pid}}}:keys", "anthropic", rec)
    rc.publish("byok:invalidate", p.pid)
    r = until(lambda: gw.chat(p, model="claude-3-opus", headers={"Connection": "close"}),
              lambda r: reason(r) == "decrypt_error", HANG_GUARD,
              what="decrypt_error for moved record")
    assert fake_provider.requests("/anthropic") == []
    for rq in fake_provider.requests("/openrouter"):
        assert p.keys["openai"] not in rq.raw_text()
    assert route(r) == "fallback"


def test_tampered_ciphertext_is_never_sent(gw, fake_provider, redis_server):
    p = gw.provision(keys={"openai": None})
    rc = redis_server.client
    key = f"byok:{{{p.pid}}}:keys"
    rec = json.loads(rc.hget(key, "openai"))
    ct = bytearray(base64.b64decode(rec["ct"]))
    ct[0] ^= 1
    rec["ct"] = base64.b64encode(bytes(ct)).decode()
    rc.hset(key, "openai", json.dumps(rec))
    rc.publish("byok:invalidate", p.pid)
    until(lambda: gw.chat(p, model="gpt-4o", headers={"Connection": "close"}),
          lambda r: reason(r) == "decrypt_error", HANG_GUARD,
          what="decrypt_error for tampered record")
    assert fake_provider.requests("/openai") == []


def fresh_chat(gw, p, model="gpt-4o"):
    """A request on a new connection (so both workers get exercised)."""
    return gw.chat(p, model=model, headers={"Connection": "close"})


def consistently(gw, p, pred, n=6):
    return all(pred(fresh_chat(gw, p)) for _ in range(n))


# The cache ttl is 300 s (harness default): a change seen within the
# HANG_GUARD can only come from the published invalidation. The control
# test below shows that without a publish the cache keeps the old answer.

def test_deleted_key_changes_route_on_invalidation(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    assert consistently(gw, p, lambda r: route(r) == "byok")
    r = gw.admin("DELETE", f"/projects/{p.pid}/keys/openai")
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    wait_until(lambda: consistently(gw, p, lambda r: route(r) == "fallback"
                                    and reason(r) == "no_key"), HANG_GUARD,
               what="route change after delete")
    print(f"route changed {time.monotonic() - t0:.3f}s after the delete")


def test_i19_unpublished_change_is_not_seen_until_invalidation(gw, fake_provider,
                                                               redis_server):
    """Control for the invalidation tests: a hand edit of Redis without a
    publish leaves the cached answer in place; the publish alone changes it."""
    p = gw.provision(keys={"openai": None})
    assert consistently(gw, p, lambda r: route(r) == "byok")
    redis_server.client.hdel(f"byok:{{{p.pid}}}:keys", "openai")
    assert consistently(gw, p, lambda r: route(r) == "byok", n=8)
    redis_server.client.publish("byok:invalidate", p.pid)
    wait_until(lambda: consistently(gw, p, lambda r: reason(r) == "no_key"), HANG_GUARD,
               what="route change after the publish")


def test_added_key_changes_route_on_invalidation(gw, fake_provider):
    p = gw.provision(keys={})
    assert consistently(gw, p, lambda r: route(r) == "fallback")
    key = gw.put_key(p.pid, "openai")
    wait_until(lambda: consistently(gw, p, lambda r: route(r) == "byok"), HANG_GUARD,
               what="route change after add")
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {key}"


def test_tier_change_applies_on_invalidation(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    assert route(fresh_chat(gw, p)) == "byok"
    assert gw.admin("PATCH", f"/projects/{p.pid}", {"tier": "free"}).status_code == 200
    wait_until(lambda: consistently(gw, p, lambda r: reason(r) == "tier"), HANG_GUARD,
               what="tier change")


# -- Redis outage ------------------------------------------------------------------

def test_redis_outage_and_recovery(gw, fake_provider, redis_server):
    p = gw.provision(keys={"openai": None})
    assert consistently(gw, p, lambda r: route(r) == "byok")  # cached in both workers
    redis_server.stop()
    try:
        for _ in range(4):
            r = fresh_chat(gw, p)
            assert r.status_code == 200, r.text
            assert route(r) == "byok"
        assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {p.keys['openai']}"

        unknown = "byok_" + secrets.token_hex(20)
        gw.track(unknown)
        r = gw.chat(unknown, model="gpt-4o")
        # README: unknown keys get 503 while Redis is unreachable, never a pass
        assert assert_json_error(r, 503)["code"] == "key_store_unavailable"
        # admin writes fail closed
        r = gw.admin("POST", "/projects", {"id": "during-outage", "name": "x"})
        assert r.status_code == 503, r.text
    finally:
        redis_server.start()

    # Redis came back empty (no persistence): a new project works without
    # restarting nginx.
    def create():
        r = gw.admin("POST", "/projects", {"id": "after-outage", "name": "x", "tier": "starter"})
        return r.status_code == 201
    wait_until(create, HANG_GUARD, interval=0.2, what="admin API to reach Redis again")
    key, _ = gw.mint_key("after-outage")
    okey = gw.put_key("after-outage", "openai")
    r = until(lambda: gw.chat(key, model="gpt-4o"), lambda r: r.status_code == 200, HANG_GUARD,
              interval=0.2, what="new project served")
    assert route(r) == "byok"
    assert fake_provider.last("/openai").headers["authorization"] == f"Bearer {okey}"
    gw.assert_no_leaks()


def stale_served(gw):
    return metric_value(gw.metrics(), "byok_cache_stale_total")


def test_stale_cache_served_while_redis_down(gateway, fake_provider, redis_server):
    """ttl 1s, stale 15m: once the entry is past its ttl (seen as a stale
    hit in /metrics, no clock involved) the cached project is still served."""
    gw = gateway(ttl="1s", stale="15m")
    p = gw.provision(keys={"openai": None})
    assert consistently(gw, p, lambda r: route(r) == "byok")
    before = stale_served(gw)
    redis_server.stop()
    try:
        def served_stale():
            r = fresh_chat(gw, p)
            if r.status_code != 200 or route(r) != "byok":
                raise Abort(f"not served from the cache: {r.status_code} {r.text}")
            return stale_served(gw) > before
        wait_until(served_stale, HANG_GUARD, interval=0.2, what="a stale hit")
        r = fresh_chat(gw, p)
        assert r.status_code == 200, r.text
        assert route(r) == "byok"
    finally:
        redis_server.start()


def test_expired_stale_cache_fails_closed(gateway, fake_provider, redis_server):
    """ttl 1s, stale 2s: served stale first (counted), then refused with 503
    once the stale window is over, and never proxied after that."""
    gw = gateway(ttl="1s", stale="2s")
    p = gw.provision(keys={"openai": None})
    assert consistently(gw, p, lambda r: route(r) == "byok")
    before = stale_served(gw)
    redis_server.stop()
    try:
        seen = []

        def refused():
            r = fresh_chat(gw, p)
            seen.append(r.status_code)
            return r.status_code == 503
        wait_until(refused, HANG_GUARD, interval=0.1, what="the stale entry to expire")
        assert set(seen) == {200, 503} and seen.index(503) == len(seen) - 1, seen
        assert stale_served(gw) > before, "never served stale before refusing"
        fake_provider.clear()
        r = fresh_chat(gw, p)
        assert assert_json_error(r, 503)["code"] == "key_store_unavailable"
        assert fake_provider.requests() == []
    finally:
        redis_server.start()


def test_redis_stall_does_not_block_cached_requests(gw, fake_provider, redis_server):
    """Redis alive but not answering (DEBUG SLEEP): cached projects are
    answered while the stall is still going on (the stalling command has
    not returned yet), so they never waited for Redis."""
    p = gw.provision(keys={"openai": None})
    assert consistently(gw, p, lambda r: route(r) == "byok")
    failures = []

    def stall():
        try:
            redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=60
                        ).execute_command("DEBUG", "SLEEP", "3")
        except Exception as e:  # noqa: BLE001
            failures.append(e)
    t = threading.Thread(target=stall)
    t.start()
    try:
        wait_until(lambda: redis_stalled(redis_server), HANG_GUARD, what="the stall to begin")
        for _ in range(4):
            r = fresh_chat(gw, p)
            assert r.status_code == 200 and route(r) == "byok", r.text
            assert t.is_alive(), "the stall ended before the cached request was answered"
    finally:
        t.join(60)
    assert not failures, failures


# -- logs and metrics -----------------------------------------------------------

def test_logs_contain_no_secrets(gw, fake_provider):
    a = gw.provision(keys={"openai": None, "anthropic": None})
    b = gw.provision(tier="free", keys={"openai": None})
    responses = [
        gw.chat(a, model="gpt-4o"),
        gw.chat(a, model="claude-3-opus"),
        gw.request("POST", "/anthropic/v1/messages", headers={"x-api-key": a.gateway_key},
                   json={"model": "claude-3-opus", "messages": []}),
        gw.chat(b, model="gpt-4o"),
        gw.chat("byok_" + secrets.token_hex(20), model="gpt-4o"),
        gw.admin("GET", f"/projects/{a.pid}/keys"),
        gw.admin("GET", "/projects", token="wrong-" + secrets.token_hex(8)),
    ]
    fake_provider.fail("/openai", 503)
    responses.append(gw.chat(a, model="gpt-4o"))
    gw.assert_no_leaks(*responses)

    log = gw.access_log()
    assert re.search(rf"project={a.pid} provider=openai model=gpt-4o route=byok", log), log
    assert re.search(rf"project={b.pid} .*route=fallback reason=tier", log), log
    # key hint (public prefix + last 4) is logged; nginx may \x-escape the "…"
    assert re.search(r"key=sk-\S*" + re.escape(a.keys["openai"][-4:]), log), log


PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$')


def parse_prometheus(text):
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert line == "" or re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* ", line), line
            continue
        m = PROM_LINE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_metrics_prometheus_text(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    q = gw.provision(keys={})
    before = parse_prometheus(gw.metrics())
    for _ in range(3):
        assert gw.chat(p, model="gpt-4o").status_code == 200
    assert gw.chat(q, model="gpt-4o").status_code == 200

    r = gw.request("GET", "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    after = parse_prometheus(r.text)
    names = {k.split("{")[0] for k in after}
    assert names and all(n.startswith("byok_") for n in names), names
    assert re.search(r"^# TYPE byok_\w+ counter$", r.text, re.M)
    assert re.search(r"^# TYPE byok_\w+ histogram$", r.text, re.M)
    grew = [k for k, v in after.items() if v > before.get(k, 0) and "byok" in k]
    assert any('route="byok"' in k for k in grew), grew
    assert any('reason="no_key"' in k for k in grew), grew
    # one metrics scrape sums both workers' counters
    total = lambda s: sum(v for k, v in s.items()
                          if k.startswith("byok_requests_total") and 'route="byok"' in k)
    assert total(after) - total(before) == 3
    gw.assert_no_leaks(r)
    assert p.pid not in r.text  # per-project labels would explode cardinality


def test_usage_counters_written(gw, fake_provider, redis_server):
    """Usage per project/provider/route/day for every route (README Usage):
    byok, system and fallback each land in their own field; denied
    requests are not counted."""
    p = gw.provision(keys={"openai": None})
    q = gw.provision(keys={})
    off = gw.provision(fallback="off", keys={})
    for _ in range(2):
        assert route(gw.chat(p, model="gpt-4o")) == "byok"
    for _ in range(3):
        assert route(gw.chat(p, model="llama-3-70b")) == "system"
    assert route(gw.chat(q, model="gpt-4o")) == "fallback"
    assert gw.chat(off, model="gpt-4o").status_code == 403
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    rc = redis_server.client
    want = {p.pid: {"openai:byok": "2", "openrouter:system": "3"},
            q.pid: {"openai:fallback": "1"}}
    for pid, fields in want.items():
        key = f"byok:{{{pid}}}:usage:{day}"
        total = sum(int(v) for v in fields.values())
        # flushed once a second: wait for every request to be counted
        wait_until(lambda: sum(int(v) for v in rc.hgetall(key).values()) >= total, HANG_GUARD,
                   what=f"{total} requests counted in {key}")
        assert rc.hgetall(key) == fields
        assert 0 < rc.ttl(key) <= 90 * 86400
    assert rc.exists(f"byok:{{{off.pid}}}:usage:{day}") == 0
    r = gw.admin("GET", f"/projects/{p.pid}/stats")
    assert r.json()["usage"] == {"openai": {"byok": 2, "system": 0, "fallback": 0},
                                 "openrouter": {"byok": 0, "system": 3, "fallback": 0}}, r.text
