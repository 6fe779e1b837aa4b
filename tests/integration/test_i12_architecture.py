"""Issue 12 (architecture), gateway half: the one proxy include
(conf/byok_proxy.conf) gives every gateway location the same protections."""

import pytest

PROVIDER_BODY = {"id": "from-the-provider", "object": "chat.completion", "choices": []}


@pytest.mark.parametrize("target", ["/metrics", "@byok_fallback"])
def test_i12_07_fallback_5xx_location_ignores_x_accel_redirect(gw, fake_provider, target):
    # fallback_on_rate_limit false moves the request to @byok_fallback_5xx,
    # which used to lack the X-Accel-* lines of the other locations.
    p = gw.provision(keys={"openai": None})
    r = gw.admin("PATCH", f"/projects/{p.pid}", {"fallback_on_rate_limit": False})
    assert r.status_code == 200, r.text
    fake_provider.set_rule("/openai", body=PROVIDER_BODY,
                           headers={"X-Accel-Redirect": target, "X-Accel-Buffering": "yes"})
    r = gw.chat(p, model="gpt-4o")
    assert r.status_code == 200, r.text[:300]
    assert r.json() == PROVIDER_BODY
    assert "byok_requests_total" not in r.text
    assert not [h for h in r.headers if h.lower().startswith("x-accel-")], r.headers
    assert r.headers.get("x-byok-route") == "byok"
    assert [rec.provider for rec in fake_provider.requests()] == ["openai"]
    gw.assert_no_leaks(r)
