"""Issue 10, request-path items: what a hostile tenant, a hostile provider or
an unauthenticated flood could do to the gateway, asserted on what the fake
provider, Redis and the nginx workers actually saw."""

import json
import re
import secrets
import socket
import threading

import pytest

from harness import assert_json_error, canary, raw_http, status_of, until, wait_until

CHAT = "/v1/chat/completions"


# -- item 9: X-Accel-* from providers ------------------------------------------

PROVIDER_BODY = {"id": "from-the-provider", "object": "chat.completion", "choices": []}


@pytest.mark.parametrize("target", ["/metrics", "@byok_fallback", "@byok_direct",
                                    "/admin/v1/projects"])
@pytest.mark.parametrize("policy", ["auto", "off"])
def test_i10_09_provider_x_accel_redirect_is_ignored(gw, fake_provider, target, policy):
    # policy auto proxies from `location /`, policy off from @byok_direct.
    p = gw.provision(keys={"openai": None}, fallback=policy)
    fake_provider.set_rule("/openai", body=PROVIDER_BODY,
                           headers={"X-Accel-Redirect": target, "X-Accel-Buffering": "yes",
                                    "X-Accel-Expires": "60", "X-Accel-Charset": "koi8-r"})
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200, r.text[:300]
    assert r.json() == PROVIDER_BODY
    assert "byok_requests_total" not in r.text
    assert not [h for h in r.headers if h.lower().startswith("x-accel-")], r.headers
    assert r.headers.get("x-byok-route") == "byok"
    # Only the one direct call: no fallback with the operator's key.
    assert [rec.provider for rec in fake_provider.requests()] == ["openai"]
    gw.assert_no_leaks(r)


def test_i10_09_x_accel_redirect_in_fallback_answer_is_ignored(gw, fake_provider):
    p = gw.provision(keys={"openai": None})
    fake_provider.fail("/openai", 500)
    fake_provider.set_rule("/openrouter", body=PROVIDER_BODY,
                           headers={"X-Accel-Redirect": "/metrics"})
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200, r.text[:300]
    assert r.json() == PROVIDER_BODY
    assert r.headers.get("x-byok-route") == "fallback"
    assert "x-accel-redirect" not in {h.lower() for h in r.headers}


@pytest.mark.parametrize("target", ["/metrics", "/_byok/key-test"])
def test_i10_09_key_test_ignores_x_accel_redirect(gw, fake_provider, target):
    p = gw.provision(keys={"openai": None})
    fake_provider.set_rule("/openai/models", status=401, body={"error": {"message": "bad key"}},
                           headers={"X-Accel-Redirect": target})
    r = gw.admin("POST", f"/projects/{p.pid}/keys/openai/test")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["http_status"]) == ("invalid", 401), body
    assert len(fake_provider.requests("/openai/models")) == 1
    gw.assert_no_leaks(r)


# -- item 15: key= in any case ------------------------------------------------------

def test_i10_15_key_query_parameter_stripped_in_any_case(gw, fake_provider):
    p = gw.provision(keys={"openai": None, "google": None})
    junk = [canary("sk-junk-") for _ in range(5)]
    gw.track(*junk)
    query = (f"Key={junk[0]}&alt=sse&KEY={junk[1]}&kEY={junk[2]}&%6Bey={junk[3]}"
             f"&%4B%45%59={junk[4]}&keys=1")
    for method, path in (("POST", "/openai/chat/completions"), ("POST", "/google/chat"),
                         ("POST", CHAT), ("GET", "/v1/models")):
        r = gw.request(method, f"{path}?{query}",
                       headers={**p.auth, "x-byok-provider": "openai"},
                       json={"model": "gpt-4o", "messages": []} if method == "POST" else None)
        assert r.status_code == 200, (path, r.text)
        rec = fake_provider.last()
        assert rec.query == "alt=sse&keys=1", (path, rec.query)
        assert not re.search(r"(^|&)(k|%6b)(e|%65)(y|%79)(=|&|$)", rec.query, re.I), rec.query
    text = fake_provider.all_text()
    for j in junk:
        assert j not in text, f"{j[:10]}… reached the provider"
    gw.assert_no_leaks()
