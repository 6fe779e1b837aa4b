// Admin API (SPEC §7): drive admin::handle() and feed it Redis replies and
// HTTP results the way the nginx glue does.
#include <criterion/criterion.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lib/admin.h"
#include "lib/record.h"
#include "tests/unit/admin_support.h"
#include "tests/unit/test_support.h"

using namespace byok;
using namespace byok::admin;
using nlohmann::json;
using namespace byok::admin::test;

namespace {

const char *kOpenAiKey = "sk-test-abcdefghijklmnopqrstuvwxyz0123";

Config config(const KeyRing &ring = ring1()) {
    Config c;
    c.catalog = &catalog();
    c.ring = &ring;
    c.admin_tokens = {"other-token", kAdminToken};
    c.clock.now = [] { return int64_t{1795000000}; };  // 2026-11-18
    return c;
}

struct Call {
    std::string method = "GET", path, query, content_type = "application/json",
                authorization = std::string("Bearer ") + kAdminToken, api_key, body;
};

Step run(const Config &cfg, const Call &c) {
    Request r;
    r.method = c.method;
    r.path = c.path;
    r.query = c.query;
    r.content_type = c.content_type;
    r.authorization = c.authorization;
    r.api_key = c.api_key;
    r.body = c.body;
    return handle(cfg, r);
}

Step run(const Config &cfg, std::string method, std::string path, std::string body = "") {
    Call c;
    c.method = std::move(method);
    c.path = std::move(path);
    c.body = std::move(body);
    return run(cfg, c);
}

std::string record_json(const KeyRing &ring, std::string_view key, std::string_view pid,
                        std::string_view provider) {
    KeyRecord r;
    r.sealed = seal(ring, key, key_binding(pid, provider, ""));
    r.key_hint = "sk-...0123";
    r.created_at = "2026-01-01T00:00:00Z";
    r.updated_at = "2026-01-01T00:00:00Z";
    return serialize_key_record(r);
}

// Reply of the read script for a project with the given tier and records.
Reply project_read(const std::string &tier, std::vector<std::pair<std::string, std::string>> keys) {
    return arr({integer(0), hash({{"name", "Acme"}, {"tier", tier}}), hash(std::move(keys))});
}

bool argv_contains(const std::vector<std::string> &argv, std::string_view needle) {
    for (const auto &a : argv)
        if (a.find(needle) != std::string::npos) return true;
    return false;
}

// Gateway-key principal for project `pid`: returns the step after auth.
Step as_project(const Config &cfg, const std::string &pid, Call c) {
    c.authorization = "Bearer byok_gatewaykey123";
    Step s = run(cfg, c);
    const auto &rc = redis_call(s);
    cr_assert_eq(rc.argv.size(), 2u);
    cr_assert_eq(rc.argv[0], "HGETALL");
    cr_assert_eq(rc.argv[1], "byok:apikey:" + sha256_hex("byok_gatewaykey123"));
    return feed(s, hash({{"project", pid}, {"id", "k1"}, {"revoked", "0"}}));
}

}  // namespace

// ---- authentication ----------------------------------------------------------

Test(admin_auth, admin_token_is_accepted) {
    Config cfg = config();
    Step s = run(cfg, "GET", "/providers");
    cr_assert_eq(response(s).status, 200);
    json b = body_of(s);
    cr_assert(b.is_array() && b.size() == catalog().providers().size());
    cr_assert_eq(b[0]["id"], catalog().providers()[0].id);
    cr_assert(b[0].contains("key_prefix") && b[0].contains("auth") && b[0].contains("models"));
}

Test(admin_auth, missing_or_wrong_token_is_401_with_challenge) {
    Config cfg = config();
    for (std::string auth : {"", "Bearer wrong-token", "Basic abc", "Bearer "}) {
        Call c;
        c.path = "/providers";
        c.authorization = auth;
        Step s = run(cfg, c);
        cr_assert_eq(response(s).status, 401, "auth '%s'", auth.c_str());
        cr_assert_eq(error_code(s), "unauthorized");
        bool challenge = false;
        for (const auto &h : response(s).headers)
            challenge = challenge ||
                        (h.name == "WWW-Authenticate" && h.value == "Bearer realm=\"byok-admin\"");
        cr_assert(challenge);
        cr_assert(response(s).body.find("wrong-token") == std::string::npos);
    }
}

Test(admin_auth, unknown_or_revoked_gateway_key_is_401) {
    Config cfg = config();
    Call c;
    c.path = "/projects/acme/keys";
    c.authorization = "";
    c.api_key = "byok_nope";
    Step s = run(cfg, c);
    cr_assert_eq(redis_call(s).argv[1], "byok:apikey:" + sha256_hex("byok_nope"));
    cr_assert_eq(response(feed(s, arr({}))).status, 401);
    Step s2 = run(cfg, c);
    cr_assert_eq(response(feed(s2, hash({{"project", "acme"}, {"revoked", "1"}}))).status, 401);
}

Test(admin_auth, gateway_key_is_scoped_to_its_project) {
    Config cfg = config();
    auto go = [&](std::string method, std::string path, std::string query = "") {
        Call c;
        c.method = std::move(method);
        c.path = std::move(path);
        c.query = std::move(query);
        return as_project(cfg, "acme", c);
    };
    cr_assert_eq(response(go("GET", "/projects/other/keys")).status, 404);
    cr_assert_eq(response(go("GET", "/projects/other")).status, 404);
    cr_assert_eq(response(go("GET", "/projects")).status, 403);
    cr_assert_eq(response(go("POST", "/projects")).status, 403);
    cr_assert_eq(response(go("POST", "/rotate")).status, 403);
    cr_assert_eq(response(go("DELETE", "/projects/acme")).status, 403);
    cr_assert_eq(response(go("GET", "/audit")).status, 403);
    cr_assert_eq(response(go("GET", "/audit", "project=other")).status, 404);
    cr_assert_eq(response(go("GET", "/providers", "project=other")).status, 404);
    // Own project: goes on to Redis.
    Step own = go("GET", "/projects/acme/keys");
    cr_assert_eq(redis_call(own).argv[0], "EVAL");
    Step audit = go("GET", "/audit", "project=acme");
    cr_assert_eq(redis_call(audit).argv[0], "XREVRANGE");
}

Test(admin_auth, gateway_key_cannot_change_tier) {
    Config cfg = config();
    Call c;
    c.method = "PATCH";
    c.path = "/projects/acme";
    c.body = R"({"tier":"enterprise"})";
    cr_assert_eq(response(as_project(cfg, "acme", c)).status, 403);
}

Test(admin_auth, redis_unavailable_is_503) {
    Config cfg = config();
    Call c;
    c.path = "/projects/acme";
    c.authorization = "Bearer byok_x123";
    Step s = run(cfg, c);
    Step r = feed(s, unavailable());
    cr_assert_eq(response(r).status, 503);
    cr_assert_eq(error_code(r), "redis_unavailable");
    Step g = run(cfg, "GET", "/projects/acme");
    cr_assert_eq(response(feed(g, unavailable())).status, 503);
}

// ---- strict input ---------------------------------------------------------

Test(admin_input, strict_classes) {
    Config cfg = config();
    cfg.max_body = 64;
    auto status = [&](std::string method, std::string path, std::string body,
                      std::string ct = "application/json") {
        Call c;
        c.method = std::move(method);
        c.path = std::move(path);
        c.body = std::move(body);
        c.content_type = std::move(ct);
        return response(run(cfg, c)).status;
    };
    cr_assert_eq(status("POST", "/projects", R"({"name":")" + std::string(100, 'a') + "\"}"), 413);
    cr_assert_eq(status("POST", "/projects", R"({"name":"a"})", "text/plain"), 415);
    cr_assert_eq(status("POST", "/projects", R"({"name":"a"})", ""), 415);
    Call ok;
    ok.method = "POST";
    ok.path = "/projects";
    ok.body = R"({"name":"a"})";
    ok.content_type = "Application/JSON; charset=utf-8";
    cr_assert(std::holds_alternative<RedisCall>(run(cfg, ok).action));
    cr_assert_eq(status("POST", "/projects", R"({"name":)"), 400);
    cr_assert_eq(status("POST", "/projects", R"([1,2])"), 400);
    cr_assert_eq(status("POST", "/projects", R"({"name":"a","colour":"red"})"), 422);
    cr_assert_eq(status("POST", "/projects", R"({"name":5})"), 400);
    cr_assert_eq(status("POST", "/projects", R"({"tier":"pro"})"), 422);  // name missing
    cr_assert_eq(status("POST", "/projects", R"({"name":"a","id":"Bad!"})"), 422);
    cr_assert_eq(status("POST", "/projects", R"({"name":"a","tier":"gold"})"), 422);
    cr_assert_eq(status("GET", "/projects/Bad!", ""), 400);
    cr_assert_eq(status("GET", "/nope", ""), 404);
    cr_assert_eq(status("GET", "/projects/acme/keys/nope", ""), 404);  // i11_08: GET one key
    cr_assert_eq(status("PUT", "/projects/acme/keys/nope", R"({"key":"x"})"), 404);
    cr_assert_eq(status("PUT", "/projects/acme/servers", ""), 405);
    cr_assert_eq(status("GET", "/projects/acme/servers/Bad!", ""), 400);
    cr_assert_eq(status("GET", "/projects/acme/servers/s1/test/x", ""), 404);
}

Test(admin_input, errors_name_the_field) {
    Config cfg = config();
    Step s = run(cfg, "POST", "/projects", R"({"name":"a","colour":"red"})");
    cr_assert(body_of(s)["error"]["message"].get<std::string>().find("'colour'") !=
              std::string::npos);
    Step t = run(cfg, "POST", "/projects", R"({"name":true})");
    cr_assert(body_of(t)["error"]["message"].get<std::string>().find("'name'") !=
              std::string::npos);
    Step m = run(cfg, "DELETE", "/rotate");
    cr_assert_eq(response(m).status, 405);
    cr_assert_eq(response(m).headers.at(0).name, "Allow");
    cr_assert_eq(response(m).headers.at(0).value, "POST");
}

// ---- projects ---------------------------------------------------------------

Test(admin_projects, create_is_one_audited_script) {
    Config cfg = config();
    Step s = run(cfg, "POST", "/projects", R"({"id":"acme","name":"Acme","tier":"pro"})");
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[0], "EVAL");
    cr_assert_eq(argv[2], "3");
    cr_assert_eq(argv[3], "byok:audit");
    cr_assert_eq(argv[4], "byok:project:{acme}");
    cr_assert_eq(argv[5], "byok:projects");
    cr_assert_eq(argv[6], "admin:" + sha256_hex(kAdminToken).substr(0, 8));
    cr_assert_eq(argv[8], "byok:invalidate");
    cr_assert_eq(argv[9], "acme");
    cr_assert(argv[1].find("XADD") != std::string::npos);
    cr_assert(argv[1].find("PUBLISH") != std::string::npos);
    Step ok = feed(s, code(1));
    cr_assert_eq(response(ok).status, 201);
    cr_assert_eq(body_of(ok)["tier"], "pro");
    cr_assert_eq(body_of(ok)["fallback"], "auto");
    Step again = run(cfg, "POST", "/projects", R"({"id":"acme","name":"Acme"})");
    cr_assert_eq(response(feed(again, code(3))).status, 409);
}

Test(admin_projects, generated_id_and_custom_prefix) {
    Config cfg = config();
    cfg.layout = Layout("t1:");
    Step s = run(cfg, "POST", "/projects", R"({"name":"Acme"})");
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[3], "t1:audit");
    cr_assert(valid_id(argv[9]));
    cr_assert_eq(argv[4], "t1:project:{" + argv[9] + "}");
}

Test(admin_projects, delete_removes_everything) {
    Config cfg = config();
    Step s = run(cfg, "DELETE", "/projects/acme");
    const auto &argv = redis_call(s).argv;
    for (const char *k :
         {"byok:project:{acme}", "byok:projects", "byok:{acme}:keys", "byok:{acme}:servers",
          "byok:{acme}:apikeys", "byok:apikey:", "byok:{acme}:usage:20261118",
          "byok:{acme}:meter:20261118", "byok:{acme}:usage:20260819"})
        cr_assert(argv_contains(argv, k), "argv lacks %s", k);
    cr_assert_eq(response(feed(s, arr({integer(0), integer(2)}))).status, 200);
    Step gone = run(cfg, "DELETE", "/projects/acme");
    cr_assert_eq(response(feed(gone, code(2))).status, 404);
}

Test(admin_projects, list_reads_every_project) {
    Config cfg = config();
    Step s = run(cfg, "GET", "/projects");
    cr_assert_eq(redis_call(s).argv[0], "SMEMBERS");
    Step s2 = feed(s, arr({str("zeta"), str("acme")}));
    const auto &argv = redis_call(s2).argv;
    cr_assert_eq(argv[3], "byok:project:{acme}");
    cr_assert_eq(argv[4], "byok:project:{zeta}");
    Step done = feed(s2, arr({hash({{"name", "A"}, {"tier", "pro"}}), arr({})}));
    json b = body_of(done);
    cr_assert_eq(b.size(), 1u);
    cr_assert_eq(b[0]["id"], "acme");
    cr_assert_eq(b[0]["tier"], "pro");
}

// ---- gateway keys -----------------------------------------------------------

Test(admin_apikeys, mint_stores_only_the_hash) {
    Config cfg = config();
    Step s = run(cfg, "POST", "/projects/acme/api-keys", R"({"label":"ci"})");
    std::vector<std::string> argv = redis_call(s).argv;
    Step done = feed(s, code(1));
    cr_assert_eq(response(done).status, 201);
    json b = body_of(done);
    std::string key = b["key"];
    cr_assert_eq(key.rfind("byok_", 0), 0u);
    cr_assert_eq(key.size(), 5u + 43u);
    cr_assert_eq(b["prefix"], key.substr(0, 12));
    cr_assert_eq(b["label"], "ci");
    cr_assert(!argv_contains(argv, key));
    cr_assert(argv_contains(argv, "byok:apikey:" + sha256_hex(key)));
    json meta = json::parse(argv[13]);  // … id label meta scopes parent
    cr_assert_eq(meta["hash"], sha256_hex(key));
}

Test(admin_apikeys, list_has_no_secrets_and_revoke_is_audited) {
    Config cfg = config();
    Step s = run(cfg, "GET", "/projects/acme/api-keys");
    json meta{{"prefix", "byok_abcdefg"}, {"label", "ci"}, {"created_at", "x"}, {"hash", "ab12"}};
    Step done = feed(s, arr({integer(0), hash({}), hash({{"k1", meta.dump()}})}));
    json b = body_of(done);
    cr_assert_eq(b[0]["id"], "k1");
    cr_assert(!b[0].contains("hash") && !b[0].contains("key"));
    cr_assert_eq(b[0]["revoked"], false);

    Step r = run(cfg, "DELETE", "/projects/acme/api-keys/k1");
    cr_assert(argv_contains(redis_call(r).argv, "byok:apikey:"));
    cr_assert_eq(response(feed(r, arr({integer(0), str(R"({"revoked_at":"t"})")}))).status, 200);
    Step missing = run(cfg, "DELETE", "/projects/acme/api-keys/k9");
    cr_assert_eq(response(feed(missing, code(4))).status, 404);
}

// ---- provider keys ----------------------------------------------------------

Test(admin_keys, put_on_free_tier_is_403_after_lookup) {
    Config cfg = config();
    Step s = run(cfg, "PUT", "/projects/acme/keys/openai",
                 std::string(R"({"key":")") + kOpenAiKey + "\"}");
    cr_assert_eq(redis_call(s).argv[0], "EVAL");
    Step r = feed(s, project_read("free", {}));
    cr_assert_eq(response(r).status, 403);
    cr_assert_eq(body_of(r)["error"]["message"], "BYOK requires the starter tier or above");
}

Test(admin_keys, put_with_bad_prefix_is_422_without_echo) {
    Config cfg = config();
    Step s = run(cfg, "PUT", "/projects/acme/keys/anthropic", R"({"key":"sk-wrongprefix-123456"})");
    cr_assert_eq(response(s).status, 422);
    cr_assert(response(s).body.find("sk-wrongprefix-123456") == std::string::npos);
}

Test(admin_keys, put_seals_and_never_sends_plaintext) {
    Config cfg = config();
    Step s = run(cfg, "PUT", "/projects/acme/keys/openai",
                 std::string(R"({"key":")") + kOpenAiKey + R"(","label":"prod"})");
    Step w = feed(s, project_read("pro", {}));
    std::vector<std::string> argv = redis_call(w).argv;
    cr_assert_eq(argv[0], "EVAL");
    for (const auto &a : argv) cr_assert(a.find(kOpenAiKey) == std::string::npos);
    cr_assert(!argv_contains(argv, "abcdefghijklmnop"));
    // EVAL script 4 audit project keys key_health | actor at chan pid provider expected new tier
    // action
    cr_assert_eq(argv[11], "openai");
    cr_assert_eq(argv[12], "");
    KeyRecord rec = parse_key_record(argv[13]);
    cr_assert_eq(rec.sealed.kid, "k1");
    cr_assert_eq(rec.label, "prod");
    cr_assert_eq(open_sealed(ring1(), rec.sealed, key_binding("acme", "openai", "")).view(),
                 kOpenAiKey);
    cr_assert_eq(argv[14], "1");
    cr_assert_eq(argv[15], "key.put");
    Step done = feed(w, code(1));
    cr_assert_eq(response(done).status, 201);
    json b = body_of(done);
    cr_assert_eq(b["provider"], "openai");
    cr_assert_eq(b["label"], "prod");
    cr_assert(response(done).body.find(kOpenAiKey) == std::string::npos);
}

Test(admin_keys, replace_keeps_created_at_and_retries_on_conflict) {
    Config cfg = config();
    std::string old = record_json(ring1(), "sk-old-key-0000000000", "acme", "openai");
    Step s = run(cfg, "PUT", "/projects/acme/keys/openai",
                 std::string(R"({"key":")") + kOpenAiKey + "\"}");
    Step w = feed(s, project_read("starter", {{"openai", old}}));
    cr_assert_eq(redis_call(w).argv[12], old);
    cr_assert_eq(parse_key_record(redis_call(w).argv[13]).created_at, "2026-01-01T00:00:00Z");
    Step again = feed(w, code(6));  // changed meanwhile → read again
    cr_assert_eq(redis_call(again).argv[0], "EVAL");
    Step w2 = feed(again, project_read("starter", {{"openai", old}}));
    Step done = feed(w2, code(0));
    cr_assert_eq(response(done).status, 200);
    cr_assert_eq(body_of(done)["created_at"], "2026-01-01T00:00:00Z");
}

Test(admin_keys, patch_changes_metadata_only) {
    Config cfg = config();
    std::string old = record_json(ring1(), kOpenAiKey, "acme", "openai");
    Step s = run(cfg, "PATCH", "/projects/acme/keys/openai", R"({"is_active":false})");
    Step w = feed(s, project_read("free", {{"openai", old}}));
    KeyRecord before = parse_key_record(old), after = parse_key_record(redis_call(w).argv[13]);
    cr_assert_eq(after.is_active, false);
    cr_assert(after.sealed.ct == before.sealed.ct);
    cr_assert_eq(redis_call(w).argv[15], "key.patch");
    cr_assert_eq(response(feed(w, code(0))).status, 200);
    Step none = run(cfg, "PATCH", "/projects/acme/keys/openai", R"({"label":"x"})");
    cr_assert_eq(response(feed(none, project_read("pro", {}))).status, 404);
    cr_assert_eq(response(run(cfg, "PATCH", "/projects/acme/keys/openai", R"({"key":"x"})")).status,
                 422);
}

Test(admin_keys, custom_endpoint_rules) {
    Config cfg = config();
    auto put = [&](const Config &c, std::string provider, std::string endpoint) {
        json b{{"key", "anything-goes-123456"}, {"endpoint", endpoint}};
        return run(c, "PUT", "/projects/acme/keys/" + provider, b.dump());
    };
    for (const char *bad :
         {"http://llm.example.com", "https://10.0.0.1", "https://127.0.0.1:8443", "https://[::1]",
          "https://169.254.169.254", "https://192.168.1.10", "https://172.20.0.1",
          "https://[fe80::1]", "https://[fd00::1]", "https://0.0.0.0", "https://127.1",
          "https://localhost", "https://[::ffff:10.0.0.1]", "ftp://x.example.com"})
        cr_assert_eq(response(put(cfg, "custom", bad)).status, 422, "%s", bad);
    cr_assert_eq(response(put(cfg, "openai", "https://llm.example.com")).status, 422);
    Step ok = put(cfg, "custom", "https://llm.example.com/v1/");
    Step w = feed(ok, project_read("pro", {}));
    cr_assert_eq(parse_key_record(redis_call(w).argv[13]).endpoint, "https://llm.example.com/v1");

    Config allow = config();
    allow.allow_endpoint = {"10.0.0.0/8", "llm.internal"};
    cr_assert(
        std::holds_alternative<RedisCall>(put(allow, "custom", "http://10.1.2.3:8000").action));
    cr_assert(
        std::holds_alternative<RedisCall>(put(allow, "custom", "http://llm.internal").action));
    cr_assert_eq(response(put(allow, "custom", "http://192.168.0.1")).status, 422);
}

Test(admin_keys, list_is_masked) {
    Config cfg = config();
    Step s = run(cfg, "GET", "/projects/acme/keys");
    Step done =
        feed(s, project_read("pro", {{"openai", record_json(ring1(), kOpenAiKey, "acme", "openai")},
                                     {"groq", "{not json"}}));
    json b = body_of(done);
    cr_assert_eq(b.size(), 2u);
    cr_assert(response(done).body.find(kOpenAiKey) == std::string::npos);
    cr_assert(response(done).body.find("\"ct\"") == std::string::npos);
    for (const auto &e : b)
        if (e["provider"] == "openai") {
            for (const char *k : {"provider_name", "key_hint", "label", "endpoint", "is_active",
                                  "created_at", "updated_at", "last_tested", "test_status"})
                cr_assert(e.contains(k), "missing %s", k);
        }
}

// ---- live key test ----------------------------------------------------------

namespace {

Step start_test(const Config &cfg, const std::string &rec) {
    Step s = run(cfg, "POST", "/projects/acme/keys/openai/test");
    return feed(s, project_read("pro", {{"openai", rec}}));
}

json finish_test(const Step &http, int status, std::string body) {
    HttpResult h;
    h.status = status;
    h.body = std::move(body);
    h.latency_ms = 42;
    Step store = http_call(http).next(h);
    const auto &argv = redis_call(store).argv;
    for (const auto &a : argv) cr_assert(a.find(kOpenAiKey) == std::string::npos);
    return body_of(feed(store, code(0)));
}

}  // namespace

Test(admin_keytest, builds_the_call_with_the_shared_header_builder) {
    Config cfg = config();
    Step http = start_test(cfg, record_json(ring1(), kOpenAiKey, "acme", "openai"));
    const auto &call = http_call(http);
    cr_assert_eq(call.method, "GET");
    cr_assert_eq(call.url, "https://api.openai.com/v1/models");
    bool auth = false;
    for (const auto &h : call.headers)
        auth =
            auth || (h.name == "Authorization" && h.value == std::string("Bearer ") + kOpenAiKey);
    cr_assert(auth);
}

Test(admin_keytest, status_mapping) {
    Config cfg = config();
    std::string rec = record_json(ring1(), kOpenAiKey, "acme", "openai");
    struct {
        int http;
        const char *status;
    } cases[] = {{200, "valid"}, {401, "invalid"}, {403, "invalid"}, {500, "error"}, {0, "error"}};
    for (auto &c : cases) {
        json r = finish_test(start_test(cfg, rec), c.http, "{}");
        cr_assert_eq(r["status"], c.status, "http %d", c.http);
        cr_assert_eq(r["http_status"], c.http);
        cr_assert_eq(r["latency_ms"], 42);
        cr_assert_eq(r["provider"], "openai");
    }
}

Test(admin_keytest, message_is_trimmed_and_redacted) {
    Config cfg = config();
    std::string rec = record_json(ring1(), kOpenAiKey, "acme", "openai");
    json err{{"error",
              {{"message", std::string("Incorrect API key provided: ") + kOpenAiKey +
                               std::string(400, 'x')}}}};
    json r = finish_test(start_test(cfg, rec), 401, err.dump());
    cr_assert_eq(r["message"], "the provider refused the key");  // fixed per outcome
    std::string m = r["excerpt"];
    cr_assert(m.find(kOpenAiKey) == std::string::npos);
    cr_assert(m.find("Incorrect API key provided") == 0);
    cr_assert_leq(m.size(), 200u);
    // A body cut inside the key.
    std::string cut = std::string("bad key ") + std::string(kOpenAiKey).substr(0, 20);
    json r2 = finish_test(start_test(cfg, rec), 400, cut);
    cr_assert(r2["excerpt"].get<std::string>().find("abcdefghijkl") == std::string::npos);
}

Test(admin_keytest, undecryptable_record_is_an_error_result) {
    Config cfg = config();
    // Sealed for another project: the AAD does not match.
    std::string rec = record_json(ring1(), kOpenAiKey, "other", "openai");
    Step store = feed(start_test(cfg, rec), project_read("pro", {{"openai", rec}}));
    const auto &argv = redis_call(store).argv;
    cr_assert(argv_contains(argv, "stored key does not decrypt"));
    json r = body_of(feed(store, code(0)));
    cr_assert_eq(r["status"], "error");
    cr_assert_eq(r["message"], "stored key does not decrypt");
}

Test(admin_keytest, missing_key_is_404) {
    Config cfg = config();
    Step s = run(cfg, "POST", "/projects/acme/keys/openai/test");
    cr_assert_eq(response(feed(s, project_read("pro", {}))).status, 404);
}

// ---- rotation ---------------------------------------------------------------

Test(admin_rotate, reseals_under_the_active_kid) {
    Config cfg = config(ring21());
    std::string old_k1 = record_json(ring1(), kOpenAiKey, "acme", "openai");
    std::string cur_k2 = record_json(ring21(), "sk-ant-current-00000000", "acme", "anthropic");
    KeyRecord unknown = parse_key_record(old_k1);
    unknown.sealed.kid = "k9";
    Reply stored = arr({hash({{"openai", old_k1},
                              {"anthropic", cur_k2},
                              {"groq", serialize_key_record(unknown)},
                              {"mistral", "garbage"}}),
                        arr({})});
    // i11_05: the records per kid are counted first ...
    Step b0 = run(cfg, "POST", "/rotate");
    cr_assert_eq(redis_call(b0).argv[0], "SMEMBERS");
    Step s = feed(feed(b0, arr({str("acme")})), stored);
    cr_assert_eq(redis_call(s).argv[0], "SMEMBERS");
    Step h = feed(s, arr({str("acme")}));
    cr_assert_eq(redis_call(h).argv[3], "byok:{acme}:keys");
    cr_assert_eq(redis_call(h).argv[4], "byok:{acme}:servers");
    Step w = feed(h, stored);
    const auto &argv = redis_call(w).argv;
    for (const auto &a : argv) cr_assert(a.find(kOpenAiKey) == std::string::npos);
    // EVAL script 3 audit keys servers | actor at chan pid kid nkeys (provider old new)
    cr_assert_eq(argv[5], "byok:{acme}:servers");
    cr_assert_eq(argv[10], "k2");
    cr_assert_eq(argv[11], "1");
    cr_assert_eq(argv.size(), 15u);
    cr_assert_eq(argv[12], "openai");
    cr_assert_eq(argv[13], old_k1);
    KeyRecord fresh = parse_key_record(argv[14]);
    cr_assert_eq(fresh.sealed.kid, "k2");
    cr_assert_eq(open_sealed(ring21(), fresh.sealed, key_binding("acme", "openai", "")).view(),
                 kOpenAiKey);
    std::string rotated = argv[14];
    // ... and again once the batches are written.
    Step a0 = feed(w, arr({integer(0), integer(1), integer(0)}));
    cr_assert_eq(redis_call(a0).argv[0], "SMEMBERS");
    Step a1 = feed(a0, arr({str("acme")}));
    json b = body_of(feed(a1, arr({hash({{"openai", rotated},
                                         {"anthropic", cur_k2},
                                         {"groq", serialize_key_record(unknown)},
                                         {"mistral", "garbage"}}),
                                   arr({})})));
    cr_assert_eq(b["rotated"], 1);
    cr_assert_eq(b["unchanged"], 1);
    cr_assert_eq(b["failed"], 2);
    cr_assert_eq(b["active_kid"], "k2");
    cr_assert_eq(b["before"]["k1"], json({{"keys", 1}, {"servers", 0}, {"in_ring", true}}));
    cr_assert_eq(b["before"]["k2"]["keys"], 1);
    cr_assert_eq(b["before"]["k9"], json({{"keys", 1}, {"servers", 0}, {"in_ring", false}}));
    cr_assert_eq(b["after"].count("k1"), 0u);
    cr_assert_eq(b["after"]["k2"]["keys"], 2);
}

// ---- stats, providers, audit -----------------------------------------------

Test(admin_stats, sums_usage_and_counts_keys) {
    Config cfg = config();
    Call c;
    c.path = "/projects/acme/stats";
    c.query = "days=2";
    Step s = run(cfg, c);
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[2], "35");  // + 30 days of token/cost counters (issue 13)
    cr_assert_eq(argv[6], "byok:{acme}:usage:" + yyyymmdd_utc(1795000000));
    KeyRecord tested = parse_key_record(record_json(ring1(), kOpenAiKey, "acme", "openai"));
    tested.last_tested = "t";
    tested.test_status = "valid";
    Reply r = arr({integer(0), hash({{"tier", "pro"}}),
                   hash({{"openai", serialize_key_record(tested)},
                         {"groq", record_json(ring1(), "gsk_x", "acme", "groq")}}),
                   hash({}),  // gateway keys (expiry, issue 14)
                   hash({{"openai:byok", "3"}, {"openai:fallback", "1"}}),
                   hash({{"openai:byok", "2"}, {"anthropic:system", "5"}})});
    json b = body_of(feed(s, r));
    cr_assert_eq(b["total_providers"], catalog().providers().size());
    cr_assert_eq(b["configured_providers"], 2);
    cr_assert_eq(b["tested_providers"], 1);
    cr_assert_eq(b["valid_providers"], 1);
    cr_assert_eq(b["tier"], "pro");
    cr_assert_eq(b["usage"]["openai"]["byok"], 5);
    cr_assert_eq(b["usage"]["openai"]["fallback"], 1);
    cr_assert_eq(b["usage"]["anthropic"]["system"], 5);
}

Test(admin_providers, configured_per_project) {
    Config cfg = config();
    Call c;
    c.path = "/providers";
    c.query = "project=acme";
    Step s = run(cfg, c);
    json b = body_of(feed(s, project_read("pro", {{"openai", "{}"}})));
    for (const auto &p : b) cr_assert_eq(p["configured"], p["id"] == "openai");
    Step missing = run(cfg, c);
    cr_assert_eq(response(feed(missing, code(2))).status, 404);
}

Test(admin_audit, filters_and_limits) {
    Config cfg = config();
    Call c;
    c.path = "/audit";
    c.query = "limit=5000";
    Step s = run(cfg, c);
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[1], "byok:audit");
    cr_assert_eq(argv.back(), "1000");
    c.query = "project=acme&limit=2";
    Step f = run(cfg, c);
    auto entry = [](std::string id, std::string pid) {
        return arr({str(id), hash({{"actor", "admin:x"},
                                   {"action", "key.put"},
                                   {"project", pid},
                                   {"target", "openai"},
                                   {"at", "t"}})});
    };
    Step done = feed(f, arr({entry("3-0", "acme"), entry("2-0", "zeta"), entry("1-0", "acme")}));
    json b = body_of(done);
    cr_assert_eq(b.size(), 2u);
    cr_assert_eq(b[0]["id"], "3-0");
    cr_assert_eq(b[1]["id"], "1-0");
    c.query = "limit=abc";
    cr_assert_eq(response(run(cfg, c)).status, 400);
}

// ---- issue 10 ---------------------------------------------------------------

namespace {

// A self-service call authenticated as gateway key "k1" of `pid`.
Step as_key(const Config &cfg, const std::string &pid, Call c, const std::string &scopes = "") {
    c.authorization = "Bearer byok_gatewaykey123";
    return feed(run(cfg, c),
                hash({{"project", pid}, {"id", "k1"}, {"revoked", "0"}, {"scopes", scopes}}));
}

Call call(std::string method, std::string path, std::string body = "") {
    Call c;
    c.method = std::move(method);
    c.path = std::move(path);
    c.body = std::move(body);
    return c;
}

std::string custom_record(const std::string &endpoint) {
    KeyRecord r;
    r.endpoint = endpoint;
    r.sealed =
        seal(ring1(), "sk-custom-secret-0123456789", key_binding("acme", "custom", endpoint));
    r.key_hint = "...6789";
    r.created_at = r.updated_at = "2026-01-01T00:00:00Z";
    return serialize_key_record(r);
}

}  // namespace

Test(admin_keys, i10_02_endpoint_change_by_gateway_key_needs_the_key) {
    Config cfg = config();
    std::string old = custom_record("https://llm.example.com/v1");
    // Self-service, endpoint only: 409 secret_required, nothing written.
    Step s = as_key(
        cfg, "acme",
        call("PATCH", "/projects/acme/keys/custom", R"({"endpoint":"https://attacker.example"})"));
    Step refused = feed(s, project_read("pro", {{"custom", old}}));
    cr_assert_eq(response(refused).status, 409);
    cr_assert_eq(error_code(refused), "secret_required");
    // Same endpoint again, or other metadata: no secret needed.
    Step same = as_key(cfg, "acme",
                       call("PATCH", "/projects/acme/keys/custom",
                            R"({"endpoint":"https://llm.example.com/v1","label":"x"})"));
    cr_assert(std::holds_alternative<RedisCall>(
        feed(same, project_read("pro", {{"custom", old}})).action));
    // With the key again: re-sealed bound to the new endpoint, test result dropped.
    Step with_key =
        as_key(cfg, "acme",
               call("PATCH", "/projects/acme/keys/custom",
                    R"({"endpoint":"https://new.example","key":"sk-new-secret-98765"})"));
    Step w = feed(with_key, project_read("pro", {{"custom", old}}));
    KeyRecord rec = parse_key_record(redis_call(w).argv[13]);
    cr_assert_eq(rec.endpoint, "https://new.example");
    cr_assert_eq(
        open_sealed(ring1(), rec.sealed, key_binding("acme", "custom", rec.endpoint)).view(),
        "sk-new-secret-98765");
    for (const auto &a : redis_call(w).argv)
        cr_assert(a.find("sk-new-secret") == std::string::npos);
    // Admin token: allowed without the key; the stored key is re-sealed.
    Step adm =
        run(cfg, "PATCH", "/projects/acme/keys/custom", R"({"endpoint":"https://b.example"})");
    Step aw = feed(adm, project_read("pro", {{"custom", old}}));
    KeyRecord moved = parse_key_record(redis_call(aw).argv[13]);
    cr_assert_eq(moved.endpoint, "https://b.example");
    cr_assert_eq(
        open_sealed(ring1(), moved.sealed, key_binding("acme", "custom", "https://b.example"))
            .view(),
        "sk-custom-secret-0123456789");
}

Test(admin_rotate, i10_08_upgrades_v1_records_to_v2) {
    Config cfg = config();
    KeyRecord v1;
    v1.sealed = byok::test::seal_v1(ring1(), kOpenAiKey, "acme", "openai");
    v1.key_hint = "sk-...0123";
    v1.created_at = v1.updated_at = "2026-01-01T00:00:00Z";
    std::string old = serialize_key_record(v1);
    Step counted = feed(feed(run(cfg, "POST", "/rotate"), arr({str("acme")})),
                        arr({hash({{"openai", old}}), arr({})}));
    Step h = feed(counted, arr({str("acme")}));
    Step w = feed(h, arr({hash({{"openai", old}}), arr({})}));
    const auto &argv = redis_call(w).argv;
    cr_assert_eq(argv[12], "openai");
    cr_assert_eq(argv[13], old);
    KeyRecord fresh = parse_key_record(argv[14]);
    cr_assert_eq(fresh.sealed.v, 2);
    cr_assert_eq(fresh.sealed.kid, "k1");
    cr_assert_eq(open_sealed(ring1(), fresh.sealed, key_binding("acme", "openai", "")).view(),
                 kOpenAiKey);
}

Test(admin_apikeys, i10_07_minting_and_revoking_need_manage_keys) {
    Config cfg = config();
    Step mint = as_key(cfg, "acme", call("POST", "/projects/acme/api-keys", R"({"label":"x"})"));
    cr_assert_eq(response(mint).status, 403);
    cr_assert_eq(error_code(mint), "scope_required");
    Step revoke = as_key(cfg, "acme", call("DELETE", "/projects/acme/api-keys/k2"));
    cr_assert_eq(response(revoke).status, 403);
    // Listing stays self-service.
    cr_assert(std::holds_alternative<RedisCall>(
        as_key(cfg, "acme", call("GET", "/projects/acme/api-keys")).action));

    // A manage_keys key mints (may grant manage_keys) and is recorded as parent.
    Step m2 = as_key(cfg, "acme",
                     call("POST", "/projects/acme/api-keys", R"({"scopes":["manage_keys"]})"),
                     "manage_keys");
    const auto &argv = redis_call(m2).argv;
    cr_assert_eq(argv[14], "manage_keys");
    cr_assert_eq(argv[15], "k1");
    json meta = json::parse(argv[13]);
    cr_assert_eq(meta["parent"], "k1");
    cr_assert_eq(meta["scopes"], json::array({"manage_keys"}));
    json b = body_of(feed(m2, code(1)));
    cr_assert_eq(b["parent"], "k1");
    cr_assert_eq(b["scopes"], json::array({"manage_keys"}));
    cr_assert_eq(
        error_code(feed(as_key(cfg, "acme", call("POST", "/projects/acme/api-keys"), "manage_keys"),
                        code(6))),
        "parent_revoked");
    // Admin mints with no parent; unknown scopes are refused.
    Step am = run(cfg, "POST", "/projects/acme/api-keys", R"({"scopes":["manage_keys"]})");
    cr_assert_eq(redis_call(am).argv[15], "");
    cr_assert_eq(
        response(run(cfg, "POST", "/projects/acme/api-keys", R"({"scopes":["admin"]})")).status,
        422);
    // Revoke answers with the keys revoked along with it.
    Step rv = run(cfg, "DELETE", "/projects/acme/api-keys/k1");
    json rb =
        body_of(feed(rv, arr({integer(0), str(R"({"revoked_at":"t"})"), str("k2"), str("k3")})));
    cr_assert_eq(rb["also_revoked"], json::array({"k2", "k3"}));
}

Test(admin_audit, i10_18_project_audit_reads_the_project_stream) {
    Config cfg = config();
    Step s = as_key(cfg, "acme", [] {
        Call c;
        c.path = "/audit";
        c.query = "project=acme&limit=5";
        return c;
    }());
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[1], "byok:{acme}:audit");
    cr_assert_eq(argv[1], Layout().project_audit("acme"));
    cr_assert_eq(argv[5], "5");
    // The Lua spelling of the per-project stream (admin_scripts.cpp) matches.
    Layout l("pfx:");
    cr_assert_eq(l.audit().substr(0, l.audit().size() - 5) + "{acme}:audit",
                 l.project_audit("acme"));
    // Without ?project= the admin reads the global stream.
    cr_assert_eq(redis_call(run(cfg, "GET", "/audit")).argv[1], "byok:audit");
}

Test(admin_keys, i10_06_local_provider_is_refused_unless_allowed) {
    Catalog cat = Catalog::builtin();
    Config cfg = config();
    cfg.catalog = &cat;
    cat.allow_local([&](std::string_view h) { return allow_listed(cfg, h); });
    Step put = run(cfg, "PUT", "/projects/acme/keys/ollama", R"({"key":"anything-1234567"})");
    cr_assert_eq(response(put).status, 403);
    cr_assert_eq(error_code(put), "provider_not_allowed");
    cr_assert(error_message(put).find("byok_allow_endpoint") != std::string::npos);
    cr_assert_eq(response(run(cfg, "POST", "/projects/acme/keys/ollama/test")).status, 403);
    cr_assert(
        std::holds_alternative<RedisCall>(run(cfg, "DELETE", "/projects/acme/keys/ollama").action));
    cfg.allow_endpoint = {"127.0.0.1"};
    cat.allow_local([&](std::string_view h) { return allow_listed(cfg, h); });
    cr_assert(std::holds_alternative<RedisCall>(
        run(cfg, "PUT", "/projects/acme/keys/ollama", R"({"key":"anything-1234567"})").action));
}

// ---- GET /me (issue 15: the console asks who it is instead of probing) -------

Test(admin_me, i15_admin_token_is_admin) {
    Config cfg = config();
    Step s = run(cfg, "GET", "/me");
    cr_assert_eq(response(s).status, 200);
    cr_assert_eq(body_of(s), json({{"kind", "admin"}}));
    cr_assert_eq(response(run(cfg, "POST", "/me")).status, 405);
}

Test(admin_me, i15_gateway_key_is_its_project_with_scopes) {
    Config cfg = config();
    Call c;
    c.path = "/me";
    Step plain = as_project(cfg, "acme", c);
    cr_assert_eq(response(plain).status, 200);
    cr_assert_eq(body_of(plain),
                 json({{"kind", "project"}, {"project", "acme"}, {"scopes", json::array()}}));

    c.authorization = "Bearer byok_gatewaykey123";
    Step s = run(cfg, c);
    Step scoped =
        feed(s, hash({{"project", "acme"}, {"id", "k1"}, {"scopes", "manage_keys  other"}}));
    cr_assert_eq(body_of(scoped)["scopes"], json({"manage_keys", "other"}));

    Step bad = run(cfg, c);
    cr_assert_eq(response(feed(bad, hash({{"project", "acme"}, {"revoked", "1"}}))).status, 401);
}

Test(admin_routes, i11_08_index_lists_the_route_table) {
    Config cfg = config();
    Step s = run(cfg, "GET", "/");
    cr_assert_eq(response(s).status, 200);
    json routes = body_of(s);
    auto has = [&](const char *method, const char *path, const char *who) {
        for (const auto &r : routes)
            if (r["method"] == method && r["path"] == path && r["who"] == who) return true;
        return false;
    };
    cr_assert(has("GET", "/projects/{pid}/keys/{provider}", "admin, project key"));
    cr_assert(has("POST", "/rotate", "admin"));
    cr_assert(has("DELETE", "/projects/{pid}", "admin"));
    cr_assert(has("POST", "/projects/{pid}/api-keys", "admin, project key with manage_keys"));
    cr_assert(has("GET", "/", "admin, project key"));
    cr_assert_geq(routes.size(), 25u);
    // Every listed route answers its method (no 404/405 from the dispatcher).
    for (const auto &r : routes) {
        std::string path = r["path"];
        for (auto [from, to] : {std::pair<std::string, std::string>{"{pid}", "acme"},
                                {"{provider}", "openai"},
                                {"{sid}", "s0123456789ab"},
                                {"{id}", "k0123456789ab"}}) {
            size_t at = path.find(from);
            if (at != std::string::npos) path.replace(at, from.size(), to);
        }
        Step x = run(cfg, r["method"].get<std::string>(), path, "{}");
        if (std::holds_alternative<Response>(x.action)) {
            int st = response(x).status;
            cr_assert(st != 404 && st != 405, "%s %s -> %d", r["method"].get<std::string>().c_str(),
                      path.c_str(), st);
        }
    }
    cr_assert_eq(response(run(cfg, "POST", "/", "{}")).status, 405);
}

Test(admin_keys, i11_08_get_one_masked_key_or_404) {
    Config cfg = config();
    Step s = run(cfg, "GET", "/projects/acme/keys/openai");
    cr_assert_eq(redis_call(s).argv[0], "EVAL");
    Step r = feed(
        s, project_read("pro", {{"openai", record_json(ring1(), kOpenAiKey, "acme", "openai")}}));
    cr_assert_eq(response(r).status, 200);
    json k = body_of(r);
    cr_assert_eq(k["provider"], "openai");
    cr_assert_eq(k["key_hint"], "sk-...0123");
    cr_assert(response(r).body.find(kOpenAiKey) == std::string::npos);
    cr_assert_eq(k.count("ct"), 0u);
    Step missing = feed(run(cfg, "GET", "/projects/acme/keys/anthropic"),
                        project_read("pro", {{"openai", "{}"}}));
    cr_assert_eq(response(missing).status, 404);
    cr_assert_eq(error_code(missing), "key_not_found");
    cr_assert_eq(response(run(cfg, "GET", "/projects/acme/keys/nosuch")).status, 404);
}

Test(admin_keyring, i11_05_ring_gap_names_the_kid_and_the_counts) {
    KidCounts counts;
    counts.by_kid["k1"] = {2, 1};
    cr_assert_eq(ring_gap(ring21(), counts), "");
    cr_assert_eq(ring_gap(ring1(), counts), "");
    KeyRing only_k2 = KeyRing::parse("k2 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n", "k2");
    cr_assert_eq(ring_gap(only_k2, counts),
                 "master key 'k1' is still used by 3 records (2 provider keys, 1 server secret): "
                 "keep it in the ring until POST /rotate leaves it unused (GET /keyring shows 0)");
    counts.by_kid["k1"] = {1, 0};
    cr_assert(
        ring_gap(only_k2, counts).find("used by 1 record (1 provider key, 0 server secrets)") !=
        std::string::npos);
}

Test(admin_keyring, i11_05_keyring_shows_kids_and_records_never_key_material) {
    Config cfg = config(ring21());
    Step s = run(cfg, "GET", "/keyring");
    cr_assert_eq(redis_call(s).argv[0], "SMEMBERS");
    Step e = feed(s, arr({str("acme"), str("beta")}));
    cr_assert_eq(redis_call(e).argv[0], "EVAL");
    e = feed(e, arr({hash({{"openai", record_json(ring1(), kOpenAiKey, "acme", "openai")},
                           {"bad", "{not json"}}),
                     hash({})}));
    KeyRecord other;
    other.sealed = seal(ring1(), "sk-other-0000000000000000000", key_binding("beta", "openai", ""));
    other.sealed.kid = "gone";
    other.key_hint = "sk-...0000";
    other.created_at = other.updated_at = "2026-01-01T00:00:00Z";
    Step r = feed(e, arr({hash({{"openai", serialize_key_record(other)}}), hash({})}));
    cr_assert_eq(response(r).status, 200);
    json k = body_of(r);
    cr_assert_eq(k["kids"], json::array({"k2", "k1"}));
    cr_assert_eq(k["active_kid"], "k2");
    cr_assert_eq(k["records"]["k1"], json({{"keys", 1}, {"servers", 0}, {"in_ring", true}}));
    cr_assert_eq(k["records"]["k2"], json({{"keys", 0}, {"servers", 0}, {"in_ring", true}}));
    cr_assert_eq(k["records"]["gone"], json({{"keys", 1}, {"servers", 0}, {"in_ring", false}}));
    cr_assert_eq(k["unreadable"], 1);
    cr_assert_eq(k["missing_kids"], true);
    cr_assert(response(r).body.find("AAECAw") == std::string::npos);
    cr_assert(response(r).body.find("ICEiIy") == std::string::npos);
    // Admin only.
    Call c;
    c.path = "/keyring";
    c.authorization = "";
    c.api_key = "byok_abcdefghijklmnop";
    Step g = feed(run(cfg, c), hash({{"project", "acme"}, {"id", "k1"}}));
    cr_assert_eq(response(g).status, 403);
}

// Issue 12: a route of another project has one answer, the same as for an
// absent project — the path form and the ?project= form alike.
Test(admin_auth, i12_another_project_is_project_not_found) {
    Config cfg = config();
    auto go = [&](std::string path, std::string query = "") {
        Call c;
        c.path = std::move(path);
        c.query = std::move(query);
        return as_project(cfg, "acme", c);
    };
    for (const char *path : {"/projects/other", "/projects/other/keys", "/projects/other/usage"}) {
        Step s = go(path);
        cr_assert_eq(response(s).status, 404, "%s", path);
        cr_assert_eq(error_code(s), "project_not_found", "%s", path);
    }
    Step q = go("/providers", "project=other");
    cr_assert_eq(response(q).status, 404);
    cr_assert_eq(error_code(q), "project_not_found");
}

// The project whose cached entries the answering node drops after a write
// (byok::admin::changed_project): writes under /projects/{pid} only.
Test(admin_cache, changed_project_names_the_project_a_write_changes) {
    using byok::admin::changed_project;
    cr_assert_eq(changed_project("DELETE", "/projects/acme/api-keys/k1"), "acme");
    cr_assert_eq(changed_project("PUT", "/projects/acme/keys/openai"), "acme");
    cr_assert_eq(changed_project("PATCH", "/projects/acme/"), "acme");
    cr_assert_eq(changed_project("POST", "/projects/acme/keys/openai/test"), "acme");
    cr_assert_eq(changed_project("GET", "/projects/acme/keys/openai"), "");
    cr_assert_eq(changed_project("HEAD", "/projects/acme"), "");
    cr_assert_eq(changed_project("POST", "/projects"), "");
    cr_assert_eq(changed_project("POST", "/servers/s1"), "");
    cr_assert_eq(changed_project("DELETE", "/projects/bad id!"), "");
}
