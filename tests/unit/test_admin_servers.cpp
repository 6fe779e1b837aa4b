// Admin API, execution servers (SPEC §8): drive admin::handle() and feed it
// Redis replies, probe and HTTP results the way the nginx glue does.
#include <criterion/criterion.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lib/admin.h"
#include "lib/admin_internal.h"
#include "lib/record.h"
#include "tests/unit/admin_support.h"

using namespace byok;
using namespace byok::admin;
using nlohmann::json;
using namespace byok::admin::test;

namespace {

// Distinctive secret bodies: any occurrence in an argv or a response is a leak.
const char *kKeyBody = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";
const std::string kPrivateKey = std::string("-----BEGIN OPENSSH PRIVATE KEY-----\n") + kKeyBody +
                                "\nQyNTUxOQAAACDcanaryprivatekeymaterial0123456789\n"
                                "-----END OPENSSH PRIVATE KEY-----\n";
const char *kKeyCanary = "canaryprivatekeymaterial0123456789";
const char *kPassword = "pw-canary-Secr3t!";
const char *kToken = "k8s-token-canary-0123456789";
const char *kFingerprint = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
const char *kOtherFingerprint = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

Config config(const KeyRing &ring = ring1()) {
    Config c;
    c.catalog = &catalog();
    c.ring = &ring;
    c.admin_tokens = {kAdminToken};
    c.server_test_timeout_ms = 4321;
    c.clock.now = [] { return int64_t{1795000000}; };  // 2026-11-18
    return c;
}

Step run(const Config &cfg, std::string method, std::string path, std::string body = "",
         std::string auth = std::string("Bearer ") + kAdminToken) {
    Request r;
    r.method = method;
    r.path = path;
    r.content_type = "application/json";
    r.authorization = auth;
    r.body = body;
    return handle(cfg, r);
}

// Reply of the read script: project hash + servers hash.
Reply project_read(std::vector<std::pair<std::string, std::string>> servers,
                   std::string default_server = "") {
    std::vector<std::pair<std::string, std::string>> p{{"name", "Acme"}, {"tier", "pro"}};
    if (!default_server.empty()) p.push_back({"default_server", default_server});
    return arr({integer(0), hash(std::move(p)), hash(std::move(servers))});
}

bool contains(std::string_view hay, std::string_view needle) {
    return hay.find(needle) != std::string_view::npos;
}

// No secret, or a recognisable part of one, anywhere in the text.
void assert_clean(std::string_view text) {
    for (std::string_view s :
         {std::string_view(kPrivateKey), std::string_view(kKeyBody), std::string_view(kKeyCanary),
          std::string_view(kPassword), std::string_view(kToken)})
        cr_assert(!contains(text, s), "secret leaked into: %.*s", (int)text.size(), text.data());
}
void assert_clean(const std::vector<std::string> &argv) {
    for (const auto &a : argv) assert_clean(a);
}

json ssh_body(std::string auth = "key") {
    json cc{{"host", "10.0.0.5"},
            {"username", "deploy"},
            {"auth_method", auth},
            {"host_key_fingerprint", kFingerprint}};
    if (auth == "key")
        cc["private_key"] = kPrivateKey;
    else
        cc["password"] = kPassword;
    return json{{"id", "s1"},
                {"name", "build box"},
                {"server_type", "ssh"},
                {"workspace_path", "/srv/work"},
                {"connection_config", cc}};
}

// POSTs `body`, checks the create script and returns the stored record.
std::string create_record(const Config &cfg, const json &body, bool is_default = false) {
    Step s = run(cfg, "POST", "/projects/acme/servers", body.dump());
    const auto &argv = redis_call(s).argv;
    assert_clean(argv);
    cr_assert_eq(argv[0], "EVAL");
    cr_assert_eq(argv[2], "3");
    cr_assert_eq(argv[3], "byok:audit");
    cr_assert_eq(argv[4], "byok:project:{acme}");
    cr_assert_eq(argv[5], "byok:{acme}:servers");
    cr_assert_eq(argv[9], "acme");
    cr_assert_eq(argv[11], "");  // must be absent
    cr_assert_eq(argv[13], is_default ? "1" : "0");
    cr_assert_eq(argv[14], "server.create");
    std::string record = argv[12];
    Step done = feed(s, code(1));
    cr_assert_eq(response(done).status, 201, "%s", response(done).body.c_str());
    assert_clean(response(done).body);
    return record;
}

// A stored record as the create route writes it.
std::string stored(const json &body, const KeyRing &ring = ring1()) {
    Config cfg = config(ring);
    return create_record(cfg, body);
}

json sealed_plain(const KeyRing &ring, const json &record, const std::string &sid) {
    SecretString plain = detail::open_server_record(ring, "acme", sid, record.dump());
    return json::parse(plain.view());
}

}  // namespace

// ---- create / validation ----------------------------------------------------

Test(admin_servers, create_ssh_seals_the_secrets) {
    Config cfg = config();
    Step s = run(cfg, "POST", "/projects/acme/servers", ssh_body().dump());
    const auto &argv = redis_call(s).argv;
    assert_clean(argv);
    cr_assert_eq(argv[10], "s1");
    json rec = json::parse(argv[12]);
    cr_assert_eq(rec["connection_config"]["host"], "10.0.0.5");
    cr_assert_eq(rec["connection_config"]["port"], 22);
    cr_assert_eq(rec["connection_config"]["host_key_fingerprint"], kFingerprint);
    cr_assert(!rec["connection_config"].contains("private_key"));
    cr_assert_eq(rec["secrets"]["kid"], "k1");
    cr_assert_eq(rec["secrets"]["fields"], json::array({"private_key"}));
    cr_assert_eq(sealed_plain(ring1(), rec, "s1")["private_key"], kPrivateKey);
    // AAD binds the sid: the blob does not open as another server's.
    cr_assert_throw(sealed_plain(ring1(), rec, "s2"), Error);
    cr_assert(!rec["config_rev"].get<std::string>().empty());

    Step done = feed(s, code(1));
    cr_assert_eq(response(done).status, 201);
    json b = body_of(done);
    assert_clean(response(done).body);
    cr_assert_eq(b["id"], "s1");
    cr_assert_eq(b["server_type"], "ssh");
    cr_assert_eq(b["connection_config"]["secrets_set"], json::array({"private_key"}));
    cr_assert_eq(b["connection_config"]["username"], "deploy");
    cr_assert_eq(b["is_default"], false);
    cr_assert_eq(b["is_active"], true);
    cr_assert(b["last_tested_at"].is_null());
    cr_assert(!b.contains("secrets"));
    cr_assert(!b.contains("config_rev"));

    Step again = run(cfg, "POST", "/projects/acme/servers", ssh_body().dump());
    cr_assert_eq(response(feed(again, code(3))).status, 409);
    Step none = run(cfg, "POST", "/projects/acme/servers", ssh_body().dump());
    cr_assert_eq(response(feed(none, code(2))).status, 404);
}

Test(admin_servers, create_password_local_docker_kubernetes) {
    Config cfg = config();
    json pw = json::parse(create_record(cfg, ssh_body("password")));
    cr_assert_eq(pw["secrets"]["fields"], json::array({"password"}));
    cr_assert_eq(sealed_plain(ring1(), pw, "s1")["password"], kPassword);

    json local = json::parse(create_record(
        cfg, json{{"name", "here"}, {"server_type", "local"}, {"workspace_path", "/tmp/ws"}}));
    cr_assert(valid_id(local["id"].get<std::string>()));
    cr_assert(!local.contains("secrets"));
    cr_assert(local["connection_config"].is_object() && local["connection_config"].empty());

    json docker = json::parse(
        create_record(cfg, json{{"name", "d"},
                                {"server_type", "docker"},
                                {"connection_config", {{"endpoint", "http://10.1.2.3:2375/"}}}}));
    cr_assert_eq(docker["connection_config"]["endpoint"], "http://10.1.2.3:2375");

    json k8s = json::parse(create_record(
        cfg,
        json{{"id", "k"},
             {"name", "k"},
             {"server_type", "kubernetes"},
             {"connection_config", {{"api_url", "https://k8s.example:6443"}, {"token", kToken}}},
             {"is_default", true}},
        true));
    cr_assert_eq(k8s["secrets"]["fields"], json::array({"token"}));
    cr_assert_eq(k8s["is_default"], true);
}

Test(admin_servers, validation_classes_name_the_field) {
    Config cfg = config();
    cfg.allow_endpoint = {"k8s.internal"};
    auto with_cc = [](json cc, std::string type = "ssh") {
        json b = ssh_body();
        b["server_type"] = type;
        b["connection_config"] = std::move(cc);
        return b;
    };
    json base = ssh_body()["connection_config"];
    auto ssh_cc = [&](std::string field, json value) {
        json cc = base;
        if (value.is_null())
            cc.erase(field);
        else
            cc[field] = std::move(value);
        return with_cc(cc);
    };
    struct Case {
        json body;
        int status;
        const char *field;
    };
    std::vector<Case> cases{
        {json{{"name", "x"}, {"server_type", "telnet"}}, 422, "'server_type'"},
        {json{{"name", "x"}, {"server_type", "local"}, {"bogus", 1}}, 422, "'bogus'"},
        {json{{"name", 5}, {"server_type", "local"}}, 400, "'name'"},
        {json{{"server_type", "local"}, {"workspace_path", "/w"}}, 422, "'name'"},
        {json{{"name", "x"}, {"server_type", "local"}, {"connection_config", "x"}}, 400,
         "'connection_config'"},
        {json{{"name", "x"}, {"server_type", "local"}, {"is_default", "yes"}}, 400, "'is_default'"},
        {json{{"id", "Bad!"}, {"name", "x"}, {"server_type", "local"}, {"workspace_path", "/w"}},
         422, "'id'"},
        {json{{"id", "default"}, {"name", "x"}, {"server_type", "local"}, {"workspace_path", "/w"}},
         422, "'id'"},
        {ssh_cc("host", nullptr), 422, "'connection_config.host'"},
        {ssh_cc("host", "bad host"), 422, "'connection_config.host'"},
        {ssh_cc("host", "-oProxyCommand=x"), 422, "'connection_config.host'"},
        {ssh_cc("host", 7), 400, "'connection_config.host'"},
        {ssh_cc("port", 0), 422, "'connection_config.port'"},
        {ssh_cc("port", 70000), 422, "'connection_config.port'"},
        {ssh_cc("port", "22"), 400, "'connection_config.port'"},
        {ssh_cc("port", 22.5), 400, "'connection_config.port'"},
        {ssh_cc("username", nullptr), 422, "'connection_config.username'"},
        {ssh_cc("username", "a b"), 422, "'connection_config.username'"},
        {ssh_cc("auth_method", "kerberos"), 422, "'connection_config.auth_method'"},
        {ssh_cc("auth_method", nullptr), 422, "'connection_config.auth_method'"},
        {ssh_cc("private_key", nullptr), 422, "'connection_config.private_key'"},
        {ssh_cc("private_key", "not a key at all"), 422, "'connection_config.private_key'"},
        {ssh_cc("private_key", 12), 400, "'connection_config.private_key'"},
        {ssh_cc("password", kPassword), 422, "'connection_config.password'"},
        {ssh_cc("host_key_fingerprint", "MD5:aa:bb"), 422,
         "'connection_config.host_key_fingerprint'"},
        {ssh_cc("colour", "red"), 422, "'connection_config.colour'"},
        {ssh_cc("token", kToken), 422, "'connection_config.token'"},
        {with_cc(json{{"host", "h"}, {"username", "u"}, {"auth_method", "password"}}), 422,
         "'connection_config.password'"},
        {json{{"name", "x"}, {"server_type", "ssh"}, {"connection_config", base}}, 422,
         "'workspace_path'"},
        {json{{"name", "x"}, {"server_type", "local"}}, 422, "'workspace_path'"},
        {json{{"name", "x"}, {"server_type", "local"}, {"workspace_path", "rel/path"}}, 422,
         "'workspace_path'"},
        {json{{"name", "x"}, {"server_type", "local"}, {"workspace_path", "/a\nb"}}, 422,
         "'workspace_path'"},
        {json{{"name", "x"},
              {"server_type", "local"},
              {"workspace_path", "/w"},
              {"connection_config", {{"host", "h"}}}},
         422, "'connection_config.host'"},
        {with_cc(json::object(), "docker"), 422, "'connection_config.endpoint'"},
        {with_cc(json{{"endpoint", "ftp://x"}}, "docker"), 422, "'connection_config.endpoint'"},
        {with_cc(json{{"endpoint", "http://x"}, {"token", kToken}}, "docker"), 422,
         "'connection_config.token'"},
        {with_cc(json{{"api_url", "https://k8s.example"}}, "kubernetes"), 422,
         "'connection_config.token'"},
        {with_cc(json{{"api_url", "http://k8s.example"}, {"token", kToken}}, "kubernetes"), 422,
         "'connection_config.api_url'"},
        {with_cc(json{{"api_url", "https://k8s.example"}, {"token", "a\nb"}}, "kubernetes"), 422,
         "'connection_config.token'"},
    };
    for (const auto &c : cases) {
        Step s = run(cfg, "POST", "/projects/acme/servers", c.body.dump());
        cr_assert_eq(response(s).status, c.status, "%s → %d: %s", c.body.dump().c_str(),
                     response(s).status, response(s).body.c_str());
        cr_assert(contains(error_message(s), c.field), "%s: %s", c.field, error_message(s).c_str());
        assert_clean(response(s).body);
        cr_assert(!contains(response(s).body, "not a key at all"));
    }
    // http allowed for a listed host; the fingerprint is normalised.
    Step k =
        run(cfg, "POST", "/projects/acme/servers",
            with_cc(json{{"api_url", "http://k8s.internal:8080"}, {"kubeconfig", "apiVersion: v1"}},
                    "kubernetes")
                .dump());
    cr_assert(std::holds_alternative<RedisCall>(k.action), "%s",
              std::holds_alternative<Response>(k.action) ? response(k).body.c_str() : "");
    Step f = run(cfg, "POST", "/projects/acme/servers",
                 ssh_cc("host_key_fingerprint", std::string(kFingerprint) + "=").dump());
    cr_assert_eq(json::parse(redis_call(f).argv[12])["connection_config"]["host_key_fingerprint"],
                 kFingerprint);
    Step v6 = run(cfg, "POST", "/projects/acme/servers", ssh_cc("host", "fd00::1").dump());
    cr_assert(std::holds_alternative<RedisCall>(v6.action));
}

// ---- reads ----------------------------------------------------------------------

Test(admin_servers, list_get_and_default_never_show_secrets) {
    Config cfg = config();
    std::string key_rec = stored(ssh_body());
    json pwb = ssh_body("password");
    pwb["id"] = "s2";
    std::string pw_rec = stored(pwb);
    auto servers = std::vector<std::pair<std::string, std::string>>{
        {"s1", key_rec}, {"s2", pw_rec}, {"s3", "garbage"}};

    Step l = run(cfg, "GET", "/projects/acme/servers");
    cr_assert_eq(redis_call(l).argv[3], "byok:project:{acme}");
    cr_assert_eq(redis_call(l).argv[4], "byok:{acme}:servers");
    Step ls = feed(l, project_read(servers));
    assert_clean(response(ls).body);
    json items = body_of(ls);
    cr_assert_eq(items.size(), 3u);
    cr_assert_eq(items[0]["connection_config"]["secrets_set"], json::array({"private_key"}));
    cr_assert_eq(items[1]["connection_config"]["secrets_set"], json::array({"password"}));
    cr_assert(items[2].contains("error"));

    Step g = feed(run(cfg, "GET", "/projects/acme/servers/s2"), project_read(servers));
    cr_assert_eq(body_of(g)["id"], "s2");
    assert_clean(response(g).body);
    cr_assert_eq(
        response(feed(run(cfg, "GET", "/projects/acme/servers/s9"), project_read(servers))).status,
        404);
    cr_assert_eq(response(feed(run(cfg, "GET", "/projects/acme/servers/s1"), code(2))).status, 404);

    Step d = feed(run(cfg, "GET", "/projects/acme/servers/default"), project_read(servers, "s2"));
    cr_assert_eq(body_of(d)["id"], "s2");
    Step nd = feed(run(cfg, "GET", "/projects/acme/servers/default"), project_read(servers));
    cr_assert_eq(response(nd).status, 404);
    cr_assert_eq(error_code(nd), "no_default_server");
    cr_assert_eq(response(run(cfg, "DELETE", "/projects/acme/servers/default")).status, 405);
}

Test(admin_servers, gateway_key_is_scoped) {
    Config cfg = config();
    auto as_project = [&](std::string method, std::string path) {
        Step s = run(cfg, method, path, "", "Bearer byok_gatewaykey123");
        return feed(s, hash({{"project", "acme"}, {"id", "k1"}, {"revoked", "0"}}));
    };
    cr_assert_eq(response(as_project("GET", "/projects/other/servers")).status, 404);
    cr_assert_eq(response(as_project("POST", "/projects/other/servers/s1/test")).status, 404);
    cr_assert_eq(redis_call(as_project("GET", "/projects/acme/servers")).argv[0], "EVAL");
}

// ---- default switching ------------------------------------------------------------

Test(admin_servers, default_switch_is_one_atomic_script) {
    Config cfg = config();
    json b = ssh_body();
    b["is_default"] = true;
    Step s = run(cfg, "POST", "/projects/acme/servers", b.dump());
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[13], "1");
    // The same script clears the other defaults and maintains default_server.
    for (const char *needle : {"is_default = false", "default_server", "HDEL", "XADD", "PUBLISH"})
        cr_assert(contains(argv[1], needle), "script lacks %s", needle);
    cr_assert_eq(body_of(feed(s, code(1)))["is_default"], true);

    // PATCH is_default: one read, then one script.
    std::string rec = stored(ssh_body());
    Step p = run(cfg, "PATCH", "/projects/acme/servers/s1", R"({"is_default":true})");
    Step w = feed(p, project_read({{"s1", rec}}));
    const auto &wargv = redis_call(w).argv;
    cr_assert_eq(wargv[1], argv[1]);
    cr_assert_eq(wargv[11], rec);  // compare-and-set on the record read
    cr_assert_eq(wargv[13], "1");
    cr_assert_eq(wargv[14], "server.patch");
    json after = json::parse(wargv[12]);
    cr_assert_eq(after["is_default"], true);
    // Only the flag changed: the sealed secrets and config_rev stay.
    json before = json::parse(rec);
    cr_assert_eq(after["secrets"], before["secrets"]);
    cr_assert_eq(after["config_rev"], before["config_rev"]);
    cr_assert_eq(body_of(feed(w, code(0)))["is_default"], true);

    // Un-defaulting goes through the same script with "0" (it drops default_server).
    Step u = feed(run(cfg, "PATCH", "/projects/acme/servers/s1", R"({"is_default":false})"),
                  project_read({{"s1", wargv[12]}}));
    cr_assert_eq(redis_call(u).argv[13], "0");
}

Test(admin_servers, delete_clears_default_in_the_same_script) {
    Config cfg = config();
    Step s = run(cfg, "DELETE", "/projects/acme/servers/s1");
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[4], "byok:project:{acme}");
    cr_assert_eq(argv[5], "byok:{acme}:servers");
    cr_assert_eq(argv[10], "s1");
    cr_assert(contains(argv[1], "default_server") && contains(argv[1], "server.delete"));
    json b = body_of(feed(s, arr({integer(0), integer(1)})));
    cr_assert_eq(b["deleted"], true);
    cr_assert_eq(b["was_default"], true);
    cr_assert_eq(response(feed(run(cfg, "DELETE", "/projects/acme/servers/s1"), code(4))).status,
                 404);
    cr_assert_eq(response(feed(run(cfg, "DELETE", "/projects/acme/servers/s1"), code(2))).status,
                 404);
}

// ---- PUT / PATCH ------------------------------------------------------------------------

Test(admin_servers, put_replaces_and_retries_on_conflict) {
    Config cfg = config();
    json old = json::parse(stored(ssh_body()));
    old["created_at"] = "2020-01-01T00:00:00Z";
    old["is_default"] = true;
    old["test_status"] = "ok";
    std::string old_s = old.dump();
    json nb = ssh_body("password");
    nb.erase("id");
    nb["name"] = "renamed";
    Step s = run(cfg, "PUT", "/projects/acme/servers/s1", nb.dump());
    Step w = feed(s, project_read({{"s1", old_s}}));
    const auto &argv = redis_call(w).argv;
    assert_clean(argv);
    cr_assert_eq(argv[11], old_s);
    cr_assert_eq(argv[14], "server.put");
    json rec = json::parse(argv[12]);
    cr_assert_eq(rec["created_at"], "2020-01-01T00:00:00Z");
    cr_assert_eq(rec["is_default"], true);  // kept: the body did not say
    cr_assert_eq(argv[13], "1");
    cr_assert_eq(rec["test_status"], "");
    cr_assert_eq(rec["secrets"]["fields"], json::array({"password"}));
    cr_assert_neq(rec["config_rev"], old["config_rev"]);
    // Conflict: re-read and retry, then 409 after the last attempt.
    Step r2 = feed(w, code(6));
    Step w2 = feed(r2, project_read({{"s1", old_s}}));
    Step r3 = feed(w2, code(6));
    Step w3 = feed(r3, project_read({{"s1", old_s}}));
    cr_assert_eq(response(feed(w3, code(6))).status, 409);
    // Missing record → 404; PUT must carry the secrets; mismatched id → 422.
    Step m = run(cfg, "PUT", "/projects/acme/servers/s1", nb.dump());
    cr_assert_eq(response(feed(m, project_read({}))).status, 404);
    json nokey = nb;
    nokey["connection_config"].erase("password");
    cr_assert_eq(response(run(cfg, "PUT", "/projects/acme/servers/s1", nokey.dump())).status, 422);
    json wrong = nb;
    wrong["id"] = "s2";
    cr_assert_eq(response(run(cfg, "PUT", "/projects/acme/servers/s1", wrong.dump())).status, 422);
}

Test(admin_servers, patch_merges_and_reseals) {
    Config cfg = config();
    std::string rec = stored(ssh_body());
    json before = json::parse(rec);
    auto patch = [&](json body) {
        return feed(run(cfg, "PATCH", "/projects/acme/servers/s1", body.dump()),
                    project_read({{"s1", rec}}));
    };
    // Non-secret config change: merged, the kept secrets re-sealed bound to
    // the new target (the port is bound into their AAD), test result dropped.
    Step p = patch(json{{"connection_config", {{"port", 2222}}}});
    json after = json::parse(redis_call(p).argv[12]);
    cr_assert_eq(after["connection_config"]["port"], 2222);
    cr_assert_eq(after["connection_config"]["host"], "10.0.0.5");
    cr_assert_neq(after["secrets"]["ct"], before["secrets"]["ct"]);
    cr_assert_eq(sealed_plain(ring1(), after, "s1"), sealed_plain(ring1(), before, "s1"));
    cr_assert_neq(after["config_rev"], before["config_rev"]);

    // Switching to password auth needs the password…
    Step need = patch(json{{"connection_config", {{"auth_method", "password"}}}});
    cr_assert_eq(response(need).status, 422);
    cr_assert(contains(error_message(need), "'connection_config.password'"));
    // …and drops the now unused private key.
    Step sw =
        patch(json{{"connection_config", {{"auth_method", "password"}, {"password", kPassword}}}});
    const auto &argv = redis_call(sw).argv;
    assert_clean(argv);
    json pw = json::parse(argv[12]);
    cr_assert_eq(pw["secrets"]["fields"], json::array({"password"}));
    json plain = sealed_plain(ring1(), pw, "s1");
    cr_assert_eq(plain.size(), 1u);
    cr_assert_eq(plain["password"], kPassword);
    Step done = feed(sw, code(0));
    assert_clean(response(done).body);
    cr_assert_eq(body_of(done)["connection_config"]["secrets_set"], json::array({"password"}));

    // A new private key re-seals.
    std::string other_key = kPrivateKey;
    other_key.replace(other_key.find("canary"), 6, "CANARY");
    Step nk = patch(json{{"connection_config", {{"private_key", other_key}}}});
    json rk = json::parse(redis_call(nk).argv[12]);
    cr_assert_neq(rk["secrets"]["ct"], before["secrets"]["ct"]);
    cr_assert_eq(sealed_plain(ring1(), rk, "s1")["private_key"], other_key);

    // Type changes need PUT; the wrong secret for the method is refused.
    cr_assert_eq(response(patch(json{{"server_type", "local"}})).status, 422);
    cr_assert(std::holds_alternative<RedisCall>(patch(json{{"server_type", "ssh"}}).action));
    cr_assert_eq(response(patch(json{{"connection_config", {{"password", kPassword}}}})).status,
                 422);
    cr_assert_eq(response(patch(json{{"connection_config", {{"endpoint", "http://x"}}}})).status,
                 422);
    cr_assert_eq(response(patch(json{{"workspace_path", "relative"}})).status, 422);
    cr_assert_eq(response(run(cfg, "PATCH", "/projects/acme/servers/s1", R"({"name":""})")).status,
                 422);
    // Unpin the host key with "".
    Step up = patch(json{{"connection_config", {{"host_key_fingerprint", ""}}}});
    cr_assert_eq(json::parse(redis_call(up).argv[12])["connection_config"]["host_key_fingerprint"],
                 "");
    Step m = run(cfg, "PATCH", "/projects/acme/servers/s1", R"({"name":"n"})");
    cr_assert_eq(response(feed(m, project_read({}))).status, 404);
}

// ---- connection tests ----------------------------------------------------------------

Test(admin_servertest, ssh_probe_call_and_result_mapping) {
    Config cfg = config();
    json b = ssh_body();
    b["connection_config"]["port"] = 2200;
    std::string rec = stored(b);
    Step s = run(cfg, "POST", "/projects/acme/servers/s1/test");
    Step pr = feed(s, project_read({{"s1", rec}}));
    const ProbeCall &pc = probe_call(pr);
    cr_assert_eq(pc.kind, "ssh");
    cr_assert_eq(pc.host, "10.0.0.5");
    cr_assert_eq(pc.port, 2200);
    cr_assert_eq(pc.username, "deploy");
    cr_assert_eq(pc.auth_method, "key");
    cr_assert_eq(pc.secret->view(), kPrivateKey);
    cr_assert_eq(pc.host_key_fingerprint, kFingerprint);
    cr_assert_eq(pc.workspace_path, "/srv/work");
    cr_assert_eq(pc.timeout_ms, 4321);

    ProbeResult bad;
    bad.stage = "host_key";
    bad.message = std::string("host key changed\n") + kKeyBody;  // a whole line of the key
    bad.host_key_fingerprint = kOtherFingerprint;
    bad.latency_ms = 12;
    Step st = pc.next(bad);
    const auto &argv = redis_call(st).argv;
    assert_clean(argv);
    cr_assert_eq(argv[3], "byok:audit");
    cr_assert_eq(argv[4], "byok:{acme}:servers");
    cr_assert_eq(argv[9], "s1");
    cr_assert_eq(argv[10], json::parse(rec)["config_rev"]);
    cr_assert_eq(argv[11], "2026-11-18T11:06:40Z");
    cr_assert_eq(argv[12], "failed");
    cr_assert_eq(argv[14], "");  // pinned: nothing to record
    cr_assert(contains(argv[1], "server.test"));
    Step done = feed(st, arr({integer(0), integer(0)}));
    json r = body_of(done);
    assert_clean(response(done).body);
    cr_assert_eq(r["status"], "failed");
    cr_assert_eq(r["stage"], "host_key");
    cr_assert_eq(r["latency_ms"], 12);
    cr_assert_eq(r["host_key_fingerprint"], kOtherFingerprint);
    cr_assert_eq(r["trusted_on_first_use"], false);
    cr_assert(!contains(r["message"].get<std::string>(), "\n"));

    for (auto [stage, want] :
         std::vector<std::pair<std::string, std::string>>{{"connect", "connect"},
                                                          {"auth", "auth"},
                                                          {"workspace", "workspace"},
                                                          {"", "connect"},
                                                          {"weird", "connect"}}) {
        ProbeResult f;
        f.stage = stage;
        f.message = "m";
        Step x = feed(pc.next(f), arr({integer(0), integer(0)}));
        cr_assert_eq(body_of(x)["stage"], want, "stage %s", stage.c_str());
    }
    ProbeResult ok;
    ok.ok = true;
    ok.stage = "done";
    ok.message = "connected";
    ok.host_key_fingerprint = kFingerprint;
    Step okst = pc.next(ok);
    cr_assert_eq(redis_call(okst).argv[12], "ok");
    json okb = body_of(feed(okst, arr({integer(0), integer(0)})));
    cr_assert_eq(okb["status"], "ok");
    cr_assert_eq(okb["stage"], "done");
}

Test(admin_servertest, trust_on_first_use_records_the_fingerprint) {
    Config cfg = config();
    json b = ssh_body("password");
    b["connection_config"].erase("host_key_fingerprint");
    std::string rec = stored(b);
    cr_assert_eq(json::parse(rec)["connection_config"]["host_key_fingerprint"], "");
    Step pr = feed(run(cfg, "POST", "/projects/acme/servers/s1/test"), project_read({{"s1", rec}}));
    const ProbeCall &pc = probe_call(pr);
    cr_assert_eq(pc.host_key_fingerprint, "");
    cr_assert_eq(pc.auth_method, "password");
    cr_assert_eq(pc.secret->view(), kPassword);
    ProbeResult ok;
    ok.ok = true;
    ok.stage = "done";
    ok.message = std::string("logged in with ") + kPassword;
    ok.host_key_fingerprint = kFingerprint;
    ok.trusted_on_first_use = true;
    Step st = pc.next(ok);
    const auto &argv = redis_call(st).argv;
    assert_clean(argv);
    cr_assert_eq(argv[14], kFingerprint);
    // The script pins only while nothing is pinned.
    cr_assert(contains(argv[1], "host_key_fingerprint"));
    json r = body_of(feed(st, arr({integer(0), integer(1)})));
    cr_assert_eq(r["trusted_on_first_use"], true);
    cr_assert_eq(r["host_key_recorded"], true);
    cr_assert_eq(r["host_key_fingerprint"], kFingerprint);
    cr_assert_eq(r["message"], "connected, authenticated and found the workspace");
    cr_assert(contains(r["excerpt"].get<std::string>(), "[redacted]"));
    // A record changed meanwhile: the result is still answered.
    Step again = pc.next(ok);
    json r2 = body_of(feed(again, code(6)));
    cr_assert_eq(r2["status"], "ok");
    cr_assert_eq(r2["host_key_recorded"], false);
}

Test(admin_servertest, local_docker_kubernetes) {
    Config cfg = config();
    std::string local = stored(
        json{{"id", "l1"}, {"name", "l"}, {"server_type", "local"}, {"workspace_path", "/tmp/ws"}});
    Step lp =
        feed(run(cfg, "POST", "/projects/acme/servers/l1/test"), project_read({{"l1", local}}));
    cr_assert_eq(probe_call(lp).kind, "local");
    cr_assert_eq(probe_call(lp).workspace_path, "/tmp/ws");
    cr_assert(!probe_call(lp).secret);
    ProbeResult nd;
    nd.stage = "workspace";
    nd.message = "the path does not exist or is not a directory";
    json lr = body_of(feed(probe_call(lp).next(nd), arr({integer(0), integer(0)})));
    cr_assert_eq(lr["status"], "failed");
    cr_assert_eq(lr["stage"], "workspace");
    cr_assert(!lr.contains("trusted_on_first_use"));

    std::string docker =
        stored(json{{"id", "d1"},
                    {"name", "d"},
                    {"server_type", "docker"},
                    {"connection_config", {{"endpoint", "http://10.1.2.3:2375"}}}});
    Step dp =
        feed(run(cfg, "POST", "/projects/acme/servers/d1/test"), project_read({{"d1", docker}}));
    const HttpCall &dc = http_call(dp);
    cr_assert_eq(dc.method, "GET");
    cr_assert_eq(dc.url, "http://10.1.2.3:2375/_ping");
    cr_assert_eq(dc.timeout_ms, 4321);
    struct Map {
        int status;
        const char *st, *stage;
    };
    for (auto m : {Map{0, "failed", "connect"}, Map{200, "ok", "done"}, Map{204, "ok", "done"},
                   Map{401, "failed", "auth"}, Map{403, "failed", "auth"},
                   Map{500, "failed", "connect"}, Map{404, "failed", "connect"}}) {
        HttpResult h;
        h.status = m.status;
        h.latency_ms = 7;
        Step st = dc.next(h);
        cr_assert_eq(redis_call(st).argv[12], m.st);
        json r = body_of(feed(st, arr({integer(0), integer(0)})));
        cr_assert_eq(r["status"], m.st, "HTTP %d", m.status);
        cr_assert_eq(r["stage"], m.stage, "HTTP %d", m.status);
        cr_assert_eq(r["latency_ms"], 7);
        cr_assert_eq(r["http_status"], m.status);
    }

    std::string k8s = stored(
        json{{"id", "k1"},
             {"name", "k"},
             {"server_type", "kubernetes"},
             {"connection_config", {{"api_url", "https://k8s.example:6443/"}, {"token", kToken}}}});
    Step kp = feed(run(cfg, "POST", "/projects/acme/servers/k1/test"), project_read({{"k1", k8s}}));
    const HttpCall &kc = http_call(kp);
    cr_assert_eq(kc.url, "https://k8s.example:6443/version");
    bool bearer = false;
    for (const auto &h : kc.headers)
        bearer =
            bearer || (h.name == "Authorization" && h.value == std::string("Bearer ") + kToken);
    cr_assert(bearer);
    HttpResult h;
    h.status = 200;
    h.body = R"({"major":"1","minor":"29","gitVersion":"v1.29.3"})";
    Step ks = kc.next(h);
    assert_clean(redis_call(ks).argv);
    json kr = body_of(feed(ks, arr({integer(0), integer(0)})));
    cr_assert_eq(kr["status"], "ok");
    cr_assert(contains(kr["excerpt"].get<std::string>(), "v1.29.3"));

    std::string kcfg = stored(json{
        {"id", "k2"},
        {"name", "k"},
        {"server_type", "kubernetes"},
        {"connection_config",
         {{"api_url", "https://k8s.example"}, {"kubeconfig", "apiVersion: v1\nkind: Config\n"}}}});
    Step kk =
        feed(run(cfg, "POST", "/projects/acme/servers/k2/test"), project_read({{"k2", kcfg}}));
    const auto &kargv = redis_call(kk).argv;  // stored without any call
    cr_assert_eq(kargv[12], "failed");
    cr_assert_eq(kargv[13], "kubeconfig-based tests are not supported; store a token");
    json kkr = body_of(feed(kk, arr({integer(0), integer(0)})));
    cr_assert_eq(kkr["stage"], "auth");
}

Test(admin_servertest, undecryptable_and_missing) {
    Config cfg = config();
    // Sealed under another project's AAD: does not open here.
    json rec = json::parse(stored(ssh_body()));
    json moved = rec;
    Sealed other = seal(ring1(), "{\"private_key\":\"x\"}", Binding{"other", server_subject("s1")});
    moved["secrets"]["ct"] = base64_encode(other.ct);
    moved["secrets"]["salt"] = base64_encode(other.salt);
    moved["secrets"]["nonce"] = base64_encode(other.nonce);
    Step s = feed(run(cfg, "POST", "/projects/acme/servers/s1/test"),
                  project_read({{"s1", moved.dump()}}));
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[12], "failed");
    json r = body_of(feed(s, arr({integer(0), integer(0)})));
    cr_assert_eq(r["stage"], "auth");
    cr_assert_eq(response(feed(run(cfg, "POST", "/projects/acme/servers/s9/test"),
                               project_read({{"s1", rec.dump()}})))
                     .status,
                 404);
    cr_assert_eq(response(run(cfg, "POST", "/projects/acme/servers/s1/test", R"({"x":1})")).status,
                 422);
    Step bad = feed(run(cfg, "POST", "/projects/acme/servers/s1/test"),
                    project_read({{"s1", "not json"}}));
    cr_assert_eq(body_of(bad)["status"], "failed");
}

// ---- rotation ----------------------------------------------------------------------

Test(admin_servers, rotate_reseals_server_secrets) {
    Config cfg = config(ring21());
    std::string old_k1 = stored(ssh_body(), ring1());
    json tok = json{{"id", "k"},
                    {"name", "k"},
                    {"server_type", "kubernetes"},
                    {"connection_config", {{"api_url", "https://k8s.example"}, {"token", kToken}}}};
    std::string cur_k2 = stored(tok, ring21());
    std::string local = stored(
        json{{"id", "l"}, {"name", "l"}, {"server_type", "local"}, {"workspace_path", "/w"}});
    Reply servers =
        arr({arr({}), hash({{"s1", old_k1}, {"k", cur_k2}, {"l", local}, {"x", "bad"}})});
    // The records per kid are counted before (i11_05).
    Step s = feed(feed(run(cfg, "POST", "/rotate"), arr({str("acme")})), servers);
    Step h = feed(s, arr({str("acme")}));
    Step w = feed(h, servers);
    const auto &argv = redis_call(w).argv;
    assert_clean(argv);
    cr_assert_eq(argv[10], "k2");
    cr_assert_eq(argv[11], "0");  // no provider-key triples
    cr_assert_eq(argv.size(), 15u);
    cr_assert_eq(argv[12], "s1");
    cr_assert_eq(argv[13], old_k1);
    json fresh = json::parse(argv[14]);
    cr_assert_eq(fresh["secrets"]["kid"], "k2");
    cr_assert_eq(sealed_plain(ring21(), fresh, "s1")["private_key"], kPrivateKey);
    json prev = json::parse(old_k1);
    fresh.erase("secrets");
    prev.erase("secrets");
    cr_assert_eq(fresh, prev);
    Step a = feed(feed(w, arr({integer(0), integer(1), integer(0)})), arr({str("acme")}));
    json b = body_of(feed(a, arr({arr({}), hash({{"s1", argv[14]}, {"k", cur_k2}})})));
    cr_assert_eq(b["rotated"], 1);
    cr_assert_eq(b["unchanged"], 2);
    cr_assert_eq(b["failed"], 1);
    cr_assert_eq(b["before"]["k1"], json({{"keys", 0}, {"servers", 1}, {"in_ring", true}}));
    cr_assert_eq(b["before"]["k2"]["servers"], 1);
    cr_assert_eq(b["after"], json({{"k2", {{"keys", 0}, {"servers", 2}, {"in_ring", true}}}}));
}

// ---- issue 10 ------------------------------------------------------------------------

namespace {

const char *kGatewayAuth = "Bearer byok_gatewaykey123";

// A request with the project's own gateway key (after its lookup).
Step as_project(const Config &cfg, std::string method, std::string path, std::string body = "") {
    Step s = run(cfg, method, path, body, kGatewayAuth);
    return feed(s, hash({{"project", "acme"}, {"id", "k1"}, {"revoked", "0"}}));
}

json k8s_body() {
    return json{
        {"id", "k1"},
        {"name", "k"},
        {"server_type", "kubernetes"},
        {"connection_config", {{"api_url", "https://k8s.example:6443"}, {"token", kToken}}}};
}

}  // namespace

Test(admin_servers, i10_02_retarget_needs_the_secret_again) {
    Config cfg = config();
    std::string ssh = stored(ssh_body());
    std::string k8s = stored(k8s_body());
    std::string docker = stored(json{{"id", "d1"},
                                     {"name", "d"},
                                     {"server_type", "docker"},
                                     {"connection_config", {{"endpoint", "https://d.example"}}}});
    auto patch = [&](const std::string &sid, const std::string &rec, json body, bool admin) {
        Step s = admin ? run(cfg, "PATCH", "/projects/acme/servers/" + sid, body.dump())
                       : as_project(cfg, "PATCH", "/projects/acme/servers/" + sid, body.dump());
        return feed(s, project_read({{sid, rec}}));
    };
    auto cc = [](json fields) { return json{{"connection_config", fields}}; };
    // Every change of where the ssh secret goes, with a gateway key and no secret: 409.
    for (json moved :
         {cc({{"host", "attacker.example"}}), cc({{"port", 2222}}), cc({{"username", "other"}}),
          cc({{"host_key_fingerprint", ""}}), cc({{"host_key_fingerprint", kOtherFingerprint}})}) {
        Step s = patch("s1", ssh, moved, false);
        cr_assert_eq(response(s).status, 409, "%s", moved.dump().c_str());
        cr_assert_eq(error_code(s), "secret_required");
        // The same change with the secret in the request, or by the operator, is written.
        cr_assert(std::holds_alternative<RedisCall>(patch("s1", ssh, moved, true).action));
        json with_key = moved;
        with_key["connection_config"]["private_key"] = kPrivateKey;
        cr_assert(std::holds_alternative<RedisCall>(patch("s1", ssh, with_key, false).action));
    }
    // Unchanged targets and other fields need no secret.
    for (json same : {cc({{"host", "10.0.0.5"}, {"port", 22}}), json{{"name", "renamed"}},
                      json{{"workspace_path", "/srv/other"}}})
        cr_assert(std::holds_alternative<RedisCall>(patch("s1", ssh, same, false).action), "%s",
                  same.dump().c_str());
    // Kubernetes: the token follows api_url only when given again.
    Step k = patch("k1", k8s, cc({{"api_url", "https://attacker.example"}}), false);
    cr_assert_eq(error_code(k), "secret_required");
    cr_assert(std::holds_alternative<RedisCall>(
        patch("k1", k8s, cc({{"api_url", "https://attacker.example"}, {"token", kToken}}), false)
            .action));
    // Docker stores no secret: nothing to protect.
    cr_assert(std::holds_alternative<RedisCall>(
        patch("d1", docker, cc({{"endpoint", "https://other.example"}}), false).action));
    // PUT replaces the secrets with the request's own: without one it is refused.
    json put = ssh_body();
    put.erase("id");
    put["connection_config"]["host"] = "attacker.example";
    put["connection_config"].erase("private_key");
    Step p = as_project(cfg, "PUT", "/projects/acme/servers/s1", put.dump());
    cr_assert_eq(response(p).status, 422);
}

Test(admin_servers, i10_16_servers_need_the_starter_tier) {
    Config cfg = config();
    Step c = run(cfg, "POST", "/projects/acme/servers", ssh_body().dump());
    const auto &argv = redis_call(c).argv;
    cr_assert_eq(argv[15], "1");  // the script checks the tier atomically
    cr_assert(contains(argv[1], "tier"));
    Step refused = feed(c, code(5));
    cr_assert_eq(response(refused).status, 403);
    cr_assert_eq(error_code(refused), "tier_required");
    cr_assert_eq(error_message(refused), "BYOK requires the starter tier or above");

    std::string rec = stored(ssh_body());
    json put = ssh_body();
    put.erase("id");
    Step w =
        feed(run(cfg, "PUT", "/projects/acme/servers/s1", put.dump()), project_read({{"s1", rec}}));
    cr_assert_eq(redis_call(w).argv[15], "1");
    cr_assert_eq(error_code(feed(w, code(5))), "tier_required");
    // PATCH keeps an existing server manageable (as for provider keys).
    Step pa = feed(run(cfg, "PATCH", "/projects/acme/servers/s1", R"({"name":"n"})"),
                   project_read({{"s1", rec}}));
    cr_assert_eq(redis_call(pa).argv[15], "0");
}

Test(admin_servertest, i10_01_self_service_ssh_is_resolved_and_answers_alike) {
    Config cfg = config();
    json b = ssh_body();
    b["connection_config"]["host"] = "build.internal";
    std::string rec = stored(b);
    std::string literal = stored(ssh_body());  // host 10.0.0.5
    std::vector<json> answers;
    for (const auto &[stored_rec, detail] : std::vector<std::pair<std::string, std::string>>{
             {rec, "the target was refused: the host resolves to a loopback address"},
             {rec, "Connection refused"},
             {rec, "Timeout connecting to 203.0.113.9"},
             {literal, "the target was refused: the host resolves to a private address"}}) {
        Step pr = feed(as_project(cfg, "POST", "/projects/acme/servers/s1/test"),
                       project_read({{"s1", stored_rec}}));
        const ProbeCall &pc = probe_call(pr);  // no 403 before resolution
        cr_assert(pc.check_resolved_address);
        ProbeResult r;
        r.stage = "connect";
        r.message = detail;
        r.latency_ms = 1234;
        json a = body_of(feed(pc.next(r), arr({integer(0), integer(0)})));
        cr_assert_eq(a["status"], "failed");
        a.erase("id");
        answers.push_back(a);
    }
    for (const auto &a : answers) cr_assert_eq(a, answers[0], "%s", a.dump().c_str());
    cr_assert_eq(answers[0]["latency_ms"], 0);
    cr_assert_eq(answers[0]["excerpt"], "");
    // The operator keeps the detail and connects wherever the name leads.
    Step pr = feed(run(cfg, "POST", "/projects/acme/servers/s1/test"), project_read({{"s1", rec}}));
    cr_assert(!probe_call(pr).check_resolved_address);
    ProbeResult r;
    r.stage = "connect";
    r.message = "Connection refused";
    json a = body_of(feed(probe_call(pr).next(r), arr({integer(0), integer(0)})));
    cr_assert_eq(a["message"], "cannot connect to the server");
    cr_assert_eq(a["excerpt"], "Connection refused");
}

Test(admin_servertest, i10_12_echoed_token_is_redacted_in_every_form) {
    Config cfg = config();
    std::string k8s = stored(k8s_body());
    std::string upper = kToken;
    for (auto &ch : upper) ch = static_cast<char>(toupper(static_cast<unsigned char>(ch)));
    std::string b64 = base64_encode(reinterpret_cast<const uint8_t *>(kToken), strlen(kToken));
    struct Row {
        int status;
        std::string body;
    };
    for (const Row &row : {Row{200, std::string(R"({"gitVersion":"v1.29.3-)") + kToken + "\"}"},
                           Row{500, "token " + upper + " refused"}, Row{401, "Bearer " + b64}}) {
        Step kp =
            feed(run(cfg, "POST", "/projects/acme/servers/k1/test"), project_read({{"k1", k8s}}));
        HttpResult h;
        h.status = row.status;
        h.body = row.body;
        Step st = http_call(kp).next(h);
        const auto &argv = redis_call(st).argv;
        for (const auto &arg : argv) {
            cr_assert(!contains(arg, kToken) && !contains(arg, upper) && !contains(arg, b64),
                      "stored: %s", arg.c_str());
        }
        Step done = feed(st, arr({integer(0), integer(0)}));
        const std::string &text = response(done).body;
        cr_assert(!contains(text, kToken) && !contains(text, upper) && !contains(text, b64), "%s",
                  text.c_str());
        json r = body_of(done);
        cr_assert_eq(r["http_status"], row.status);
        cr_assert(contains(r["excerpt"].get<std::string>(), "[redacted]"), "%s", text.c_str());
    }
}

Test(admin_servertest, i10_17_workspace_check_method_is_reported) {
    Config cfg = config();
    std::string rec = stored(ssh_body());
    for (const char *method : {"sftp", "exec"}) {
        Step pr =
            feed(run(cfg, "POST", "/projects/acme/servers/s1/test"), project_read({{"s1", rec}}));
        ProbeResult ok;
        ok.ok = true;
        ok.stage = "done";
        ok.host_key_fingerprint = kFingerprint;
        ok.workspace_check = method;
        json r = body_of(feed(probe_call(pr).next(ok), arr({integer(0), integer(0)})));
        cr_assert_eq(r["workspace_check"], method);
        cr_assert_eq(r["status"], "ok");
    }  // The exec fallback gets the path as one shell word, whatever it holds.
    json b = ssh_body();
    b["workspace_path"] = "/srv/it's here; rm -rf $HOME `x`";
    std::string odd = stored(b);
    Step pr = feed(run(cfg, "POST", "/projects/acme/servers/s1/test"), project_read({{"s1", odd}}));
    cr_assert_eq(probe_call(pr).workspace_exec, "test -d '/srv/it'\\''s here; rm -rf $HOME `x`'");
}
