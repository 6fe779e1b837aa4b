"""First run and day-2 operations (issue 11): /healthz for load balancers
and containers."""

import requests


def test_i11_08_healthz_needs_no_auth_and_reports_redis(gateway, redis_server):
    gw = gateway()
    r = gw.request("GET", "/healthz")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"status": "ok", "master_keys": True, "cache_zone": True, "redis": "connected"}
    assert gw.request("HEAD", "/healthz").status_code == 200
    assert gw.request("POST", "/healthz", json={}).status_code == 405

    # Cached projects are still served while Redis is away: the worker stays
    # healthy and says Redis is disconnected.
    redis_server.stop()
    from harness import until
    r = until(lambda: gw.request("GET", "/healthz"), lambda x: x.json()["redis"] == "disconnected",
              timeout=30, what="redis reported disconnected")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    for secret in gw.secrets:
        assert secret not in r.text
