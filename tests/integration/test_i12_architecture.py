"""Issue 12 (architecture), gateway half: the one proxy include
(conf/byok_proxy.conf) gives every gateway location the same protections."""

import pytest

from harness import custom_catalog

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


@pytest.mark.parametrize("directive", ["byok_system_key", "byok_fallback"])
def test_i12_08_operator_key_never_configured_for_a_tenant_endpoint(gateway, fake_provider,
                                                                   directive):
    # "custom" takes its base URL from each project's key: an operator key
    # routed there would travel to an address a tenant chose (and the
    # fallback retry has no endpoint to resolve).
    cfg = gateway(start=False, providers=custom_catalog(fake_provider.base))
    if directive == "byok_system_key":
        line = f"byok_system_key custom {cfg.system_key_path};"
    else:
        line = "byok_fallback custom;"
    conf = cfg.render(**{directive: line})
    assert line in conf
    rc, out, _ = cfg.nginx_t(conf)
    assert rc != 0, out
    assert "[emerg]" in out and f'{directive}: provider "custom" takes its endpoint' in out, out
    rc, out, _ = cfg.nginx_t()
    assert rc == 0, out
