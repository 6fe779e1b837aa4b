"""The web console (issue 15): served by `byok_console` from the module,
driven in a real headless Chromium (Debian's package, through playwright-core
from tests/console/) against real nginx + module + Redis and the fake
provider."""

import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from harness import canary, providers_yaml, until

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


# Screenshots are also copied here, one folder per test, for the closing note.
SHOTS_DIR = Path(__file__).resolve().parent.parent.parent / "build" / "console-screenshots"


def run_console(driver, tmp_path, gw, p, scenario="main", **extra):
    """Runs one scenario of console_check.mjs in Chromium; returns its JSON.
    Fails with the driver's own words when a step failed."""
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    cfg = {"scenario": scenario, "origin": gw.base_url, "adminToken": gw.admin_token,
           "gatewayKey": p.gateway_key, "gatewayKeyId": p.gateway_key_id, "project": p.pid,
           "xssLabel": XSS_LABEL, "screenshots": str(shots), **extra}
    run = subprocess.run(["node", str(driver)], capture_output=True, text=True, timeout=180,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "BYOK_CONSOLE_CHECK": json.dumps(cfg)})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    keep = SHOTS_DIR / scenario
    keep.mkdir(parents=True, exist_ok=True)
    for name, path in out["screenshots"].items():
        shutil.copy(path, keep / f"{name}.png")
        print(f"console screenshot {name}: {path} (copy in {keep})")
    assert "failure" not in out, out["failure"] + "\nsteps done: " + ", ".join(out["steps"])
    assert out["cspViolations"] == []
    assert out["consoleErrors"] == []
    return out


def priced_catalog(base: str) -> str:
    """The test catalog with prices (micro-dollars per token: gpt-* 1000 in /
    2000 out; OpenRouter, the operator's provider, 500 / 1000), so the usage
    page has costs to chart."""
    text = providers_yaml(base)
    text = text.replace('    models: ["gpt-*"', '    pricing:\n      "gpt-*": { input: 1000, output: 2000,'
                        ' cached_input: 500 }\n    models: ["gpt-*"', 1)
    return text.replace('    key_prefix: "sk-or-"\n', '    key_prefix: "sk-or-"\n    pricing:\n'
                        '      "*": { input: 500, output: 1000 }\n', 1)


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
    out = run_console(driver, tmp_path, gw, p, providerKey=provider_key, workspace=str(workspace))
    print(f"console load: {out.get('loadMs')} ms to the sign-in form, navigation {out.get('navigation')}")
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
                                       "servers", "audit", "project-keys", "projects-360",
                                       "gateway-360", "usage-360", "servers-360", "audit-360"}
    assert all(v <= 0 for v in out["narrow"].values()), out["narrow"]
    gw.assert_no_leaks()


def js_usd(v: float) -> str:
    """Dollars as console/fmt.js writes them (micro-dollar precision)."""
    text = repr(round(v * 1e6) / 1e6)
    return "$" + (text[:-2] if text.endswith(".0") else text)


def usage_rows_by_day_and_provider(gw, pid):
    """What the console's table and CSV must hold, asked of the API directly."""
    days = gw.admin("GET", f"/projects/{pid}/usage", params={"group_by": "day"}).json()["rows"]
    rows = []
    for d in [r["day"] for r in days if r["requests"] > 0]:
        per = gw.admin("GET", f"/projects/{pid}/usage",
                       params={"group_by": "provider", "from": d, "to": d}).json()["rows"]
        rows += [{**r, "day": d} for r in per]
    return rows


def test_i15_06_usage_charts_and_csv_follow_real_traffic(gateway, fake_provider, driver, tmp_path):
    gw = gateway(providers=priced_catalog(fake_provider.base))
    p = gw.provision()  # an openai key of its own: gpt-* goes BYOK
    for _ in range(2):
        assert gw.chat(p, model="gpt-4o").status_code == 200
    # No anthropic key: the operator's OpenRouter key carries it (metered as anthropic).
    assert gw.chat(p, model="claude-3-haiku").status_code == 200
    until(lambda: gw.admin("GET", f"/projects/{p.pid}/usage").json()["totals"],
          lambda t: t["requests"] >= 3, timeout=15, what="usage counters flushed")
    out = run_console(driver, tmp_path, gw, p, scenario="usage")

    expected = usage_rows_by_day_and_provider(gw, p.pid)
    assert {r["provider"] for r in expected} == {"openai", "anthropic"}, expected
    lines = out["csv"].split("\r\n")
    cols = lines[0].split(",")
    assert cols == ["day", "provider", "requests", "input_tokens", "output_tokens",
                    "cached_tokens", "tokens_unknown", "cost_usd"]
    got = [dict(zip(cols, line.split(","))) for line in lines[1:]]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g["day"], g["provider"]) == (e["day"], e["provider"])
        for c in cols[2:]:
            assert float(g[c]) == pytest.approx(e[c]), (c, g, e)
    assert [r[:2] for r in out["tables"]["usage-table"]] == [[e["day"], e["provider"]] for e in expected]
    assert out["pixels"]["tokens"] > 100 and out["pixels"]["cost"] > 100

    stats = gw.admin("GET", f"/projects/{p.pid}/stats").json()
    s = stats["savings_30d"]
    assert s["byok_cost_usd"] > 0 and s["operator_cost_usd"] > 0, s
    assert out["byokCost"] == f"{js_usd(s['byok_cost_usd'])} · {s['byok_requests']} request(s)"
    assert out["operatorCost"] == f"{js_usd(s['operator_cost_usd'])} · {s['operator_requests']} request(s)"
    routes = {r[0]: r for r in out["tables"]["usage-routes"]}
    assert set(routes) == {"your keys (BYOK)", "operator's key (fallback)"}, routes
    assert routes["your keys (BYOK)"][1] == "2"
    models = [r[0] for r in out["tables"]["usage-models"]]
    api_models = gw.admin("GET", f"/projects/{p.pid}/usage", params={"group_by": "model"}).json()["rows"]
    assert sorted(models) == sorted(m["model"] for m in api_models) and "gpt-4o" in models
    assert [r[0] for r in out["tables"]["usage-projects"]] == [p.pid]
    assert out["narrowOverflow"] <= 0 and out["narrowPixels"] > 50
    assert out["totals7"] != out["totals"]
    assert {"usage", "usage-360", "usage-project-key"} <= set(out["screenshots"])
    gw.assert_no_leaks()


def test_i15_07_gateway_key_controls_follow_manage_keys(gw, driver, tmp_path):
    p = gw.provision(keys={})
    r = gw.admin("POST", f"/projects/{p.pid}/api-keys", {"label": "manager", "scopes": ["manage_keys"]})
    assert r.status_code == 201, r.text
    manager = r.json()
    gw.track(manager["key"])
    out = run_console(driver, tmp_path, gw, p, scenario="scopes", managerKey=manager["key"])
    # The manager sees a revoke button for each of the two live keys.
    assert out["revokeButtons"] == 2
    assert out["focusOutline"] != "none"
    minted = {k["label"]: k for k in gw.admin("GET", f"/projects/{p.pid}/api-keys").json()}
    assert minted["kbd"]["scopes"] == ["manage_keys"] and minted["kbd"]["parent"] == manager["id"]
    assert out["mintedByKeyboard"].startswith(minted["kbd"]["prefix"])
    gw.track(out["mintedByKeyboard"])
    # The plain key really may not mint: the console hid what the API refuses.
    assert gw.admin("POST", f"/projects/{p.pid}/api-keys", {"label": "x"},
                    token=p.gateway_key).status_code == 403
    gw.assert_no_leaks()


def test_i15_08_project_limits_are_edited_and_refusals_said_in_words(gw, driver, tmp_path):
    p = gw.provision(keys={})
    out = run_console(driver, tmp_path, gw, p, scenario="limits")
    # The console shows the API's own refusal, code included.
    ref = gw.admin("PATCH", f"/projects/{p.pid}", {"limits": {"requests_per_minute": -5, "tokens_per_day": 0,
                                                              "cost_per_month_usd": 0, "scope": "operator"}})
    assert out["refusedStatus"] == ref.status_code and ref.status_code >= 400
    err = ref.json()["error"]
    assert err["code"] in out["refusedText"] and err["message"] in out["refusedText"]
    project = gw.admin("GET", f"/projects/{p.pid}").json()
    if out["savedStatus"] == 200:
        # An API with limits (issue 13): stored and shown.
        assert project["limits"]["requests_per_minute"] == 100
        assert "100 requests/min" in out["limitsShown"] and out["formAfter"] == "100"
    else:
        # Today's API refuses `limits`: said next to the form, nothing stored.
        assert "limits" not in project or not project["limits"]
        assert str(out["savedStatus"]) == str(ref.status_code) and err["code"] in out["savedText"]


def console_when(iso: str) -> str:
    """A time as console/fmt.js `when` shows it."""
    return iso.replace("T", " ").replace("Z", " UTC")


def stored_key_set(redis_server, pid):
    """The project's openai key set as Redis holds it (one record, or
    {"keys": [...]} for several)."""
    raw = redis_server.client.hget(f"byok:{{{pid}}}:keys", "openai")
    rec = json.loads(raw)
    return {r["id"]: r for r in rec.get("keys", [rec])}


def test_i15_09_provider_keys_page_drives_the_real_multikey_api(gw, fake_provider, redis_server,
                                                                 driver, tmp_path):
    p = gw.provision(keys={})
    primary, cooled, refused, added = (canary("sk-test-multi-") for _ in range(4))
    gw.track(primary, cooled, refused, added)
    soon = (datetime.now(timezone.utc) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ids = []
    for body in ({"key": primary, "label": "primary", "weight": 3, "expires_at": soon},
                 {"key": cooled, "label": XSS_LABEL, "weight": 1}):
        r = gw.admin("POST", f"/projects/{p.pid}/keys/openai", body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["key_id"])
    first_id, second_id = ids
    # Real traffic: the second key answers 429 once (Retry-After 600 s, so it
    # cools for the whole test) and the first one serves and gets a last use.
    fake_provider.key_rule(cooled, 429, {"error": {"message": "slow down"}},
                           headers={"Retry-After": "600"}, times=1)
    for _ in range(20):
        assert gw.chat(p).status_code == 200
        if cooled in fake_provider.used_keys("/openai"):
            break
    assert cooled in fake_provider.used_keys("/openai")

    def listed():
        return {k["key_id"]: k for k in gw.admin("GET", f"/projects/{p.pid}/keys").json()}
    until(listed, lambda k: k[first_id]["last_used_at"] and k[second_id]["health"] == "cooling",
          timeout=15, what="last use written and the 429 key cooling")
    before = listed()
    fake_provider.key_rule(refused, 401, {"error": {"message": "invalid key"}})

    out = run_console(driver, tmp_path, gw, p, scenario="multikey", providerKey=added,
                      refusedKey=refused, firstId=first_id, secondId=second_id)

    # What the page showed is what the API said.
    assert out["keyCount"] == 2 and out["cardBadge"] == "2 keys"
    shown = {f["id"]: f for f in out["fields"]}
    first, second = shown[first_id], shown[second_id]
    assert (first["state"], first["label"], first["weight"], first["health"]) == \
        ("active", "primary", "3", "healthy")
    assert first["expires_at"] == console_when(soon) + " (in 2 days)", first
    assert first["last_used_at"] == console_when(before[first_id]["last_used_at"])
    assert (second["state"], second["label"], second["weight"]) == ("cooling", XSS_LABEL, "1")
    assert second["health"] == f"cooling until {console_when(before[second_id]['health_until'])}"
    assert second["last_used_at"] == console_when(before[second_id]["last_used_at"])
    assert "expires_at" not in second  # null: left out
    # The test reached the provider with the second key and said so.
    assert out["testResult"].startswith("valid: ") and "HTTP 200" in out["testResult"], out["testResult"]
    assert fake_provider.used_keys("/openai").count(cooled) == 2
    assert out["summary"] == "Add another key"
    assert "key_invalid" in out["addError"] and "HTTP 401" in out["addError"], out["addError"]

    # The calls the page made, on the per-key routes.
    base = f"/admin/v1/projects/{p.pid}/keys/openai"
    calls = [(c["method"], c["path"], c["body"]) for c in out["sent"]]
    form = {"weight": 5, "expires_at": out["expectedExpiry"], "test": True}
    assert calls == [
        ("POST", f"{base}/{second_id}/test", None),
        ("PATCH", f"{base}/{first_id}", {"is_active": False}),
        ("DELETE", f"{base}/{second_id}", None),
        ("POST", base, {"key": "<refused key>", "label": "", **form}),
        ("POST", base, {"key": "<added key>", "label": "added in the console", **form}),
    ], calls

    # What is stored now: the first key disabled, the second gone, the
    # refused key never stored, the added one with the form's fields.
    after = listed()
    assert set(after) - {first_id} and second_id not in after and len(after) == 2, after
    (new_id,) = set(after) - {first_id}
    assert after[first_id]["is_active"] is False
    new = after[new_id]
    assert (new["label"], new["weight"], new["expires_at"], new["test_status"], new["is_active"]) == \
        ("added in the console", 5, out["expectedExpiry"], "valid", True)
    stored = stored_key_set(redis_server, p.pid)
    assert set(stored) == {first_id, new_id}
    assert stored[first_id]["is_active"] is False
    assert (stored[new_id]["weight"], stored[new_id]["expires_at"]) == (5, out["expectedExpiry"])
    assert fake_provider.used_keys("/openai").count(refused) == 1  # tested, refused, not stored
    shown_after = {f["id"]: f for f in out["after"]}
    assert shown_after[first_id]["state"] == "disabled" and shown_after[new_id]["state"] == "active"
    assert shown_after[new_id]["expires_at"].startswith(console_when(out["expectedExpiry"]))
    audit = gw.admin("GET", f"/audit?project={p.pid}&limit=50").text
    assert "key.add" in audit and "key.delete" in audit
    redis_server.assert_absent([primary, cooled, refused, added])
    gw.assert_no_leaks(audit)


def test_i15_left_02_gateway_key_minted_with_an_expiry(gw, redis_server, driver, tmp_path):
    p = gw.provision(keys={})
    out = run_console(driver, tmp_path, gw, p, scenario="expiry")
    gw.track(out["minted"])
    assert out["expiresLabel"] == "Expires"
    # Typed with the keyboard, segment by segment: 03/04/2027 05:06 PM.
    assert out["expiresValue"] == "2027-03-04T17:06", out["expiresValue"]
    listed = {k["label"]: k for k in gw.admin("GET", f"/projects/{p.pid}/api-keys").json()}
    key = listed["expiring"]
    assert key["expires_at"] == out["expectedExpiry"]
    assert out["minted"].startswith(key["prefix"])
    assert out["listedExpiry"].startswith(console_when(out["expectedExpiry"]) + " (in ")
    # Redis holds it on the key's metadata.
    meta = json.loads(redis_server.client.hget(f"byok:{{{p.pid}}}:apikeys", key["id"]))
    assert meta["expires_at"] == out["expectedExpiry"], meta
    # The key works until then (and a key minted without expiry has none).
    assert gw.chat(out["minted"], model="gpt-4o-mini").status_code == 200
    assert listed["test"]["expires_at"] is None
    assert out["narrowOverflow"] <= 0 and out["narrowFormOverflow"] <= 0
    assert {"gateway-expiry", "gateway-expiry-360"} <= set(out["screenshots"])
    redis_server.assert_absent([out["minted"]])
    gw.assert_no_leaks()


def test_i15_10_assets_fit_the_300kb_budget(gw):
    import gzip
    index = gw.request("GET", "/console/")
    bodies = [index.content] + [gw.request("GET", "/console/" + n).content
                                for n in asset_names(index.text)]
    # Modules imported by modules: follow the imports too.
    seen = set(asset_names(index.text))
    todo = list(seen)
    while todo:
        text = gw.request("GET", "/console/" + todo.pop()).text
        for n in re.findall(r"""from\s*['"]\./([a-z]+\.[0-9a-f]{10}\.js)['"]""", text):
            if n not in seen:
                seen.add(n)
                todo.append(n)
                bodies.append(gw.request("GET", "/console/" + n).content)
    compressed = sum(len(gzip.compress(b, 9)) for b in bodies)
    print(f"console: {len(bodies)} files, {sum(map(len, bodies))} bytes, {compressed} gzip-compressed")
    assert len(bodies) >= 8 and compressed < 300 * 1024
