"""The web console (issue 15): served by `byok_console` from the module,
driven in a real headless Chromium (Debian's package, through playwright-core
from tests/console/) against real nginx + module + Redis and the fake
provider."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from harness import canary, until

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
CHROMIUM = "/usr/bin/chromium"
XSS_LABEL = '<img src=x onerror="window.__xss=1">'


@pytest.fixture(scope="module")
def driver():
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm are required (scripts/deps.sh test)"
    assert Path(CHROMIUM).exists(), "chromium is required (scripts/deps.sh test installs it)"
    if not (CONSOLE_DIR / "node_modules" / "playwright-core").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=CONSOLE_DIR, check=True, timeout=300)
    return CONSOLE_DIR / "console_check.mjs"


def asset_names(index_html: str):
    return re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', index_html)


def test_i15_console_is_served_from_the_module_with_strict_headers(gw):
    r = gw.request("GET", "/console/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert '<meta name="byok-api" content="/admin/v1/">' in r.text
    assert "<script>" not in r.text and "style=" not in r.text  # nothing inline
    names = asset_names(r.text)
    assert any(n.startswith("app.") and n.endswith(".js") for n in names), names
    fetched = [r]
    for name in names:
        assert re.fullmatch(r"[a-z]+\.[0-9a-f]{10}\.(js|css)", name), name
        a = gw.request("GET", "/console/" + name)
        assert a.status_code == 200, name
        assert a.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert a.headers["content-type"].startswith(
            "text/javascript" if name.endswith(".js") else "text/css")
        fetched.append(a)
    # Every answer, errors included, carries the security headers.
    fetched.append(gw.request("GET", "/console/nope.js"))
    fetched.append(gw.request("GET", "/console/../console/index.html"))
    fetched.append(gw.request("POST", "/console/", data="x"))
    assert [x.status_code for x in fetched[-3:]] == [404, 200, 405]
    for x in fetched:
        csp = x.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert x.headers["x-frame-options"] == "DENY"
        assert x.headers["referrer-policy"] == "no-referrer"
        assert x.headers["x-content-type-options"] == "nosniff"
    h = gw.request("HEAD", "/console/")
    assert h.status_code == 200 and h.content == b""


def test_i15_console_api_option_is_checked_and_passed_to_the_page(gateway):
    gw = gateway(extra_server="location /ui/ { byok_console api=/admin/v1/; }")
    assert '<meta name="byok-api" content="/admin/v1/">' in gw.request("GET", "/ui/").text
    for bad in ("api=https://evil.example/", 'api=/a"b/', "api=/x", "path=/x/"):
        rc, out, _ = gw.nginx_t(gw.render().replace(
            "location /console/ { byok_console; }", f"location /console/ {{ byok_console {bad}; }}"))
        assert rc != 0 and "byok_console" in out, (bad, out)


def test_i15_me_tells_who_the_caller_is(gw):
    p = gw.provision(keys={})
    assert gw.admin("GET", "/me").json() == {"kind": "admin"}
    r = gw.admin("GET", "/me", token=p.gateway_key)
    assert r.json() == {"kind": "project", "project": p.pid, "scopes": []}
    assert gw.admin("GET", "/me", token=False).status_code == 401


def test_i15_console_in_chromium(gateway, driver, tmp_path):
    gw = gateway()
    p = gw.provision(keys={})
    # Traffic before the project has a key: it goes on the operator's key
    # (fallback), and shows up in the usage chart.
    for _ in range(3):
        assert gw.chat(p, model="gpt-4o-mini").status_code == 200
    until(lambda: gw.admin("GET", f"/projects/{p.pid}/stats").json()["usage"],
          lambda u: sum(sum(v.values()) for v in u.values()) >= 3, timeout=15,
          what="usage counters flushed")
    provider_key = canary("sk-test-console-")
    gw.track(provider_key)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    cfg = {"origin": gw.base_url, "adminToken": gw.admin_token, "gatewayKey": p.gateway_key,
           "gatewayKeyId": p.gateway_key_id, "project": p.pid, "providerKey": provider_key,
           "xssLabel": XSS_LABEL, "workspace": str(workspace), "screenshots": str(shots)}
    run = subprocess.run(["node", str(driver)], capture_output=True, text=True, timeout=180,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "BYOK_CONSOLE_CHECK": json.dumps(cfg)})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for name, path in out["screenshots"].items():
        print(f"console screenshot {name}: {path}")
    print(f"console load: {out.get('loadMs')} ms to the sign-in form, navigation {out.get('navigation')}")
    assert "failure" not in out, out["failure"] + "\nsteps done: " + ", ".join(out["steps"])
    assert out["cspViolations"] == []
    assert out["consoleErrors"] == []
    assert out["xss"] == {"fired": False, "imgs": 0}
    assert out["narrowOverflow"] <= 0, "the page scrolls sideways at 360 px"
    assert out["clipboardMatches"] is True
    print(f"console: key test '{out['keyTest']}', server test '{out['serverTest']}', "
          f"refused key '{out['keyError']}', minted key still in the JS heap after Done: "
          f"{out['mintedKeyInHeapAfterDone']}")

    # What the browser did really happened, through the API.
    keys = gw.admin("GET", f"/projects/{p.pid}/keys").json()
    assert [(k["provider"], k["label"], k["is_active"], k["test_status"]) for k in keys] == \
        [("openai", XSS_LABEL, True, "valid")]
    assert gw.fake.last("/openai").headers["authorization"] == f"Bearer {provider_key}"
    gkeys = {k["id"]: k for k in gw.admin("GET", f"/projects/{p.pid}/api-keys").json()}
    assert all(k["revoked"] for k in gkeys.values()) and len(gkeys) == 2
    server = gw.admin("GET", f"/projects/{p.pid}/servers/local1").json()
    assert (server["name"], server["is_default"], server["test_status"]) == (XSS_LABEL, True, "ok")
    assert gw.admin("GET", "/projects/webmade").status_code == 200
    assert set(out["screenshots"]) >= {"projects", "keys", "keys-360", "usage", "gateway",
                                       "servers", "audit", "project-keys"}
    gw.assert_no_leaks()
