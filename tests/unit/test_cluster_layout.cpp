// Issue 16, Cluster: in cluster mode (Layout::cluster()) every command lib/
// builds names keys of one hash slot only, scripts build no key from ARGV,
// and what a standalone script did with global keys happens in ordered
// single-key steps around the project's script.
#include <criterion/criterion.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "lib/admin.h"
#include "lib/admin_internal.h"
#include "lib/cluster_slot.h"
#include "lib/gateway.h"
#include "lib/key_health.h"
#include "tests/unit/admin_support.h"

using namespace byok;
using namespace byok::admin;
using namespace byok::admin::test;
using nlohmann::json;

namespace {

const char *kGatewayKey = "byok_gatewaykey123";

Config cluster_config() {
    Config c;
    c.catalog = &catalog();
    c.ring = &ring1();
    c.admin_tokens = {kAdminToken};
    c.clock.now = [] { return int64_t{1795000000}; };  // 2026-11-18
    c.layout.set_cluster(true);
    return c;
}

// The keys a command names: EVAL's declared KEYS, else its first argument
// (DEL and EXISTS: every argument); none for commands without keys.
std::vector<std::string> keys_of(const std::vector<std::string> &argv) {
    const std::string &cmd = argv.at(0);
    if (cmd == "EVAL" || cmd == "EVALSHA") {
        size_t n = std::stoul(argv.at(2));
        return {argv.begin() + 3, argv.begin() + 3 + static_cast<long>(n)};
    }
    if (cmd == "PUBLISH" || cmd == "SUBSCRIBE") return {};
    if (cmd == "DEL" || cmd == "EXISTS") return {argv.begin() + 1, argv.end()};
    return {argv.at(1)};
}

void assert_one_slot(const std::vector<std::string> &argv) {
    std::set<uint16_t> slots;
    for (const auto &k : keys_of(argv)) slots.insert(key_slot(k));
    cr_assert(slots.size() <= 1, "%s names keys of %zu slots", argv[0].c_str(), slots.size());
    if (argv[0] == "EVAL") {
        // The script text in cluster mode builds no key name from ARGV: the
        // standalone-only spellings are behind `if CLUSTER` / `not CLUSTER`.
        const std::string &script = argv[1];
        bool mutation = script.find("local CLUSTER = true") != std::string::npos;
        bool standalone_branch = script.find("local CLUSTER = false") != std::string::npos;
        cr_assert_not(standalone_branch, "a standalone script in cluster mode");
        if (!mutation)
            cr_assert(script.find("ARGV[1] ..") == std::string::npos &&
                          script.find(".. ARGV") == std::string::npos,
                      "a cluster script builds a key from ARGV");
    }
}

Reply fields_reply(const std::vector<std::string> &f) {
    std::vector<Reply> e;
    for (const auto &x : f) e.push_back(str(x));
    return arr(std::move(e));
}

// A cluster-mode mutation reply: {reply, audited, pointers}.
Reply cluster_reply(Reply own, std::vector<std::vector<std::string>> audited,
                    std::vector<std::string> pointers) {
    std::vector<Reply> a;
    for (auto &e : audited) a.push_back(fields_reply(e));
    return arr({std::move(own), arr(std::move(a)), fields_reply(pointers)});
}

std::vector<std::string> entry(const std::string &id, const std::string &action) {
    return {id, "actor", "admin:x", "action", action, "project", "acme", "target", "t", "at", "a"};
}

// Runs a step chain: every Redis command is checked and answered by `reply`.
struct Driven {
    Step last;
    std::vector<std::vector<std::string>> argvs;
};
Driven drive(Step s, const std::function<Reply(const std::vector<std::string> &)> &reply) {
    Driven d;
    for (int i = 0; i < 400 && std::holds_alternative<RedisCall>(s.action); ++i) {
        const auto &argv = std::get<RedisCall>(s.action).argv;
        assert_one_slot(argv);
        d.argvs.push_back(argv);
        s = feed(s, reply(argv));
    }
    d.last = std::move(s);
    return d;
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

bool is(const std::vector<std::string> &argv, const std::string &cmd, const std::string &key) {
    return argv[0] == cmd && argv.size() > 1 && argv[1] == key;
}

}  // namespace

// ---- slots ----------------------------------------------------------------------

Test(cluster_slot, i16_crc16_and_hash_tags_as_redis_computes_them) {
    cr_assert_eq(crc16_xmodem("123456789"), 0x31C3);
    cr_assert_eq(key_slot("foo"), 12182);  // CLUSTER KEYSLOT foo
    cr_assert_eq(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
    cr_assert_eq(key_slot("foo{}{bar}"), crc16_xmodem("foo{}{bar}") % 16384);  // empty tag
    cr_assert_eq(key_slot("foo{{bar}}zap"), crc16_xmodem("{bar") % 16384);
    cr_assert_eq(key_slot("foo{bar}{zap}"), crc16_xmodem("bar") % 16384);
    Layout l;
    for (const std::string &k :
         {l.project("acme"), l.keys("acme"), l.apikeys("acme"), l.project_audit("acme"),
          l.usage("acme", "20261118"), l.meter("acme", "20261118"), l.key_health("acme")})
        cr_assert_eq(key_slot(k), key_slot("{acme}"), "%s", k.c_str());
}

// ---- admin writes ---------------------------------------------------------------

Test(cluster_layout, i16_project_create_adds_the_id_first_then_one_project_script) {
    Config cfg = cluster_config();
    auto d = drive(run(cfg, "POST", "/projects", R"({"id":"acme","name":"Acme"})"),
                   [](const std::vector<std::string> &argv) {
                       if (argv[0] == "EVAL")
                           return cluster_reply(code(1), {entry("5-1", "project.create")}, {});
                       return integer(1);
                   });
    cr_assert_eq(response(d.last).status, 201);
    cr_assert(is(d.argvs.at(0), "SADD", "byok:projects"));
    cr_assert_eq(d.argvs.at(1)[3], "byok:{acme}:audit");  // KEYS[1]: the project's stream
    const auto &copy = d.argvs.at(2);
    cr_assert(is(copy, "XADD", "byok:audit"));
    cr_assert_eq(copy.end()[-2], "project_entry");
    cr_assert_eq(copy.back(), "5-1");
    cr_assert_eq(d.argvs.size(), 3u);
}

Test(cluster_layout, i16_gateway_key_mint_writes_its_hash_first) {
    Config cfg = cluster_config();
    std::string pointer;
    auto d = drive(run(cfg, "POST", "/projects/acme/api-keys", R"({"label":"x"})"),
                   [&](const std::vector<std::string> &argv) {
                       if (argv[0] == "EVAL" && argv[3].rfind("byok:apikey:", 0) == 0) {
                           pointer = argv[3];
                           return code(1);
                       }
                       if (argv[0] == "EVAL") return cluster_reply(code(1), {}, {});
                       return integer(1);
                   });
    cr_assert_eq(response(d.last).status, 201);
    std::string key = body_of(d.last)["key"];
    cr_assert_eq(pointer, "byok:apikey:" + sha256_hex(key));
    cr_assert_eq(d.argvs.at(0)[3], pointer);  // first
    cr_assert_eq(d.argvs.at(1)[3], "byok:{acme}:audit");
    for (const auto &k : keys_of(d.argvs.at(1))) cr_assert(k.find("apikey:") == std::string::npos);
}

Test(cluster_layout, i16_a_refused_mint_removes_its_hash_again) {
    Config cfg = cluster_config();
    auto d = drive(run(cfg, "POST", "/projects/acme/api-keys", "{}"),
                   [&](const std::vector<std::string> &argv) {
                       if (argv[0] == "EVAL" && argv[3].rfind("byok:apikey:", 0) == 0)
                           return argv[4] == "drop" ? integer(1) : code(1);
                       return cluster_reply(code(2), {}, {});  // no such project
                   });
    cr_assert_eq(response(d.last).status, 404);
    cr_assert_eq(d.argvs.size(), 3u);
    cr_assert_eq(d.argvs[2][3], d.argvs[0][3]);
    cr_assert_eq(d.argvs[2][4], "drop");
    cr_assert_eq(d.argvs[2][5], "acme");
}

Test(cluster_layout, i16_revoke_marks_the_metadata_then_each_key_hash) {
    Config cfg = cluster_config();
    std::string h1(64, 'a'), h2(64, 'b');
    auto d =
        drive(run(cfg, "DELETE", "/projects/acme/api-keys/k1"),
              [&](const std::vector<std::string> &argv) {
                  if (argv[0] == "EVAL" && argv[3] == "byok:{acme}:audit")
                      return cluster_reply(
                          arr({integer(0), str(R"({"revoked":true,"revoked_at":"t"})"), str("k2")}),
                          {entry("7-1", "apikey.revoke"), entry("7-2", "apikey.revoke")},
                          {"revoke", h1, "t", "revoke", h2, "t0", "revoke", "../x", ""});
                  return integer(1);
              });
    cr_assert_eq(response(d.last).status, 200);
    cr_assert_eq(body_of(d.last)["also_revoked"], json::array({"k2"}));
    cr_assert_eq(d.argvs.size(), 5u);  // script, 2 hashes (not the malformed one), 2 copies
    cr_assert_eq(d.argvs[1][3], "byok:apikey:" + h1);
    cr_assert_eq(std::vector<std::string>(d.argvs[2].begin() + 4, d.argvs[2].end()),
                 (std::vector<std::string>{"revoke", "acme", "t0"}));
    cr_assert(is(d.argvs[3], "XADD", "byok:audit") && is(d.argvs[4], "XADD", "byok:audit"));
}

Test(cluster_layout, i16_a_lost_follow_up_does_not_change_the_answer) {
    Config cfg = cluster_config();
    auto d = drive(run(cfg, "DELETE", "/projects/acme/api-keys/k1"),
                   [&](const std::vector<std::string> &argv) {
                       if (argv[3] == "byok:{acme}:audit")
                           return cluster_reply(arr({integer(0), str("{}")}),
                                                {entry("7-1", "apikey.revoke")},
                                                {"revoke", std::string(64, 'c'), "t"});
                       return unavailable();
                   });
    cr_assert_eq(response(d.last).status, 200);
    cr_assert_eq(d.argvs.size(), 3u);
}

Test(cluster_layout, i16_project_delete_names_its_day_keys_and_follows_up) {
    Config cfg = cluster_config();
    auto d = drive(run(cfg, "DELETE", "/projects/acme"), [&](const std::vector<std::string> &argv) {
        if (argv[0] == "EVAL" && argv[3] == "byok:{acme}:audit")
            return cluster_reply(arr({integer(0), integer(1)}), {entry("", "project.delete")},
                                 {"drop", std::string(64, 'd'), ""});
        return integer(1);
    });
    cr_assert_eq(response(d.last).status, 200);
    const auto &script = d.argvs.at(0);
    cr_assert(script[1].find("SCAN") == std::string::npos);
    auto keys = keys_of(script);
    for (const char *k :
         {"byok:project:{acme}", "byok:{acme}:apikeys", "byok:{acme}:keys", "byok:{acme}:servers",
          "byok:{acme}:key_health", "byok:{acme}:last_used", "byok:{acme}:usage:20261119",
          "byok:{acme}:usage:20261118", "byok:{acme}:meter:20260819"})
        cr_assert(std::find(keys.begin(), keys.end(), k) != keys.end(), "lacks %s", k);
    cr_assert_eq(d.argvs.size(), 4u);
    cr_assert_eq(d.argvs[1][3], "byok:apikey:" + std::string(64, 'd'));
    cr_assert_eq(d.argvs[1][4], "drop");
    cr_assert(is(d.argvs[2], "XADD", "byok:audit"));
    cr_assert_eq(d.argvs[2].back(), "a");  // no project_entry: the project's stream is gone
    cr_assert(is(d.argvs[3], "SREM", "byok:projects"));
}

Test(cluster_layout, i16_standalone_delete_names_the_same_keys_in_one_script) {
    Config cfg = cluster_config();
    cfg.layout.set_cluster(false);
    Step s = run(cfg, "DELETE", "/projects/acme");
    const auto &argv = redis_call(s).argv;
    cr_assert(argv[1].find("local CLUSTER = false") != std::string::npos);
    cr_assert(argv[1].find("SCAN") == std::string::npos);
    cr_assert_eq(argv[3], "byok:audit");
    auto keys = keys_of(argv);
    cr_assert_eq(keys.back(), "byok:projects");
    cr_assert_eq(response(feed(s, arr({integer(0), integer(0)}))).status, 200);
}

Test(cluster_layout, i16_every_other_write_stays_in_the_project_slot) {
    Config cfg = cluster_config();
    auto reply = [&](const std::vector<std::string> &argv) -> Reply {
        if (argv[0] == "EVAL" && argv[1].find("local CLUSTER = true") != std::string::npos)
            return cluster_reply(arr({integer(0), hash({{"name", "A"}})}), {entry("1-1", "x")}, {});
        if (argv[0] == "EVAL")  // the read scripts
            return arr({integer(0), hash({{"name", "Acme"}, {"tier", "starter"}}), hash({})});
        return arr({});
    };
    struct W {
        const char *method, *path, *body;
    } writes[] = {
        {"PATCH", "/projects/acme", R"({"name":"B"})"},
        {"PUT", "/projects/acme/keys/openai",
         R"({"key":"sk-test-abcdefghijklmnopqrstuvwxyz0123"})"},
        {"DELETE", "/projects/acme/keys/openai", ""},
        {"POST", "/projects/acme/servers",
         R"({"name":"s","type":"local","connection_config":{"workspace_path":"/tmp"}})"},
        {"GET", "/projects/acme/stats", ""},
        {"GET", "/projects/acme/usage", ""},
        {"GET", "/usage", ""},
        {"GET", "/audit?project=acme", ""},
        {"GET", "/keyring", ""},
    };
    for (const auto &w : writes) {
        auto d = drive(run(cfg, w.method, w.path, w.body), reply);
        cr_assert(std::holds_alternative<Response>(d.last.action), "%s %s", w.method, w.path);
        for (const auto &argv : d.argvs)
            if (argv[0] == "EVAL" && argv[1].find("local CLUSTER") != std::string::npos)
                cr_assert_eq(argv[3], "byok:{acme}:audit", "%s %s", w.method, w.path);
    }
}

Test(cluster_layout, i16_project_list_reads_each_hash_and_skips_the_missing) {
    Config cfg = cluster_config();
    auto d = drive(run(cfg, "GET", "/projects"), [&](const std::vector<std::string> &argv) {
        if (argv[0] == "SMEMBERS") return arr({str("acme"), str("ghost")});
        if (argv[1] == "byok:project:{acme}") return hash({{"name", "Acme"}});
        return arr({});
    });
    cr_assert_eq(d.argvs.size(), 3u);
    json b = body_of(d.last);
    cr_assert_eq(b.size(), 1u);
    cr_assert_eq(b[0]["id"], "acme");
}

Test(cluster_layout, i16_admin_auth_checks_the_key_metadata) {
    Config cfg = cluster_config();
    std::string sha = sha256_hex(kGatewayKey);
    for (auto [meta, status] : std::vector<std::pair<std::string, int>>{
             {R"({"hash":")" + sha + R"("})", 200},
             {R"({"hash":")" + sha + R"(","revoked":true})", 401},
             {R"({"hash":"00"})", 401},
             {"", 401}}) {
        auto d = drive(run(cfg, "GET", "/projects/acme", "", std::string("Bearer ") + kGatewayKey),
                       [&](const std::vector<std::string> &argv) -> Reply {
                           if (is(argv, "HGETALL", "byok:apikey:" + sha))
                               return hash({{"project", "acme"}, {"id", "k1"}, {"revoked", "0"}});
                           if (is(argv, "HGET", "byok:{acme}:apikeys")) {
                               cr_assert_eq(argv[2], "k1");
                               if (meta.empty()) return Reply{};  // nil
                               return str(meta);
                           }
                           return hash({{"name", "Acme"}});
                       });
        cr_assert_eq(response(d.last).status, status, "%s", meta.c_str());
    }
}

// ---- gateway ---------------------------------------------------------------------

Test(cluster_layout, i16_gateway_lookup_is_two_steps_checked_by_the_metadata) {
    Layout l;
    l.set_cluster(true);
    std::string sha = sha256_hex(kGatewayKey);
    auto first = gateway_lookup_command(l, sha);
    cr_assert_eq(first, (std::vector<std::string>{"HGETALL", "byok:apikey:" + sha}));

    LookupOutcome unknown = read_lookup_reply(l, sha, arr({}));
    cr_assert(unknown.kind == LookupOutcome::Kind::Unknown);

    Reply pointer = hash({{"project", "acme"}, {"id", "k1"}, {"revoked", "0"}});
    LookupOutcome step = read_lookup_reply(l, sha, pointer);
    cr_assert(step.kind == LookupOutcome::Kind::Next);
    assert_one_slot(step.next);
    cr_assert_eq(keys_of(step.next),
                 (std::vector<std::string>{"byok:project:{acme}", "byok:{acme}:keys",
                                           "byok:{acme}:key_health", "byok:{acme}:apikeys"}));
    cr_assert_eq(step.next.back(), "k1");

    auto second = [&](Reply meta) {
        return read_lookup_reply(l, sha,
                                 arr({hash({{"name", "Acme"}, {"tier", "starter"}}), hash({}),
                                      hash({{"k_0123456789ab", "invalid 0"}}), std::move(meta)}),
                                 &step);
    };
    LookupOutcome ok = second(str(R"({"hash":")" + sha + R"("})"));
    cr_assert(ok.kind == LookupOutcome::Kind::Found);
    cr_assert(ok.snap.status == GatewaySnapshot::Status::Ok);
    cr_assert_eq(ok.project, "acme");
    cr_assert_eq(ok.health.size(), 1u);  // the stored verdict, for a node that starts fresh
    cr_assert_eq(ok.health[0].first, "k_0123456789ab");
    cr_assert(ok.health[0].second.state == HealthState::Invalid);
    LookupOutcome revoked = second(str(R"({"hash":")" + sha + R"(","revoked":true})"));
    cr_assert(revoked.snap.status == GatewaySnapshot::Status::Revoked);
    cr_assert(second(Reply{}).kind == LookupOutcome::Kind::Unknown);  // minting, or left over
    cr_assert(second(str(R"({"hash":"ff"})")).kind == LookupOutcome::Kind::Unknown);
    cr_assert(second(integer(1)).kind == LookupOutcome::Kind::Failed);

    Layout standalone;
    cr_assert_eq(gateway_lookup_command(standalone, sha)[0], "EVAL");
}

Test(cluster_layout, i16_opt_the_lookup_returns_the_stored_key_health) {
    // Standalone too: {apikey, project, keys, key_health}; bad entries skipped.
    Layout l;
    auto argv = gateway_lookup_command(l, "ab");
    cr_assert_eq(std::vector<std::string>(argv.end() - 2, argv.end()),
                 (std::vector<std::string>{"byok:{", "}:key_health"}));
    LookupOutcome got = read_lookup_reply(
        arr({hash({{"project", "acme"}, {"id", "k1"}}), hash({{"tier", "pro"}}), hash({}),
             hash({{"k_0123456789ab", "cooling 1795000000000"},
                   {"k_bad id", "invalid 0"},
                   {"k_aaaaaaaaaaaa", "nonsense"}})}));
    cr_assert(got.kind == LookupOutcome::Kind::Found);
    cr_assert_eq(got.health.size(), 1u);
    cr_assert(got.health[0].second.state == HealthState::Cooling);
    cr_assert_eq(got.health[0].second.until_ms, 1795000000000);
}

Test(cluster_layout, i16_gateway_writes_stay_in_the_project_slot) {
    Layout l;
    l.set_cluster(true);
    KeyHealth h;
    h.state = HealthState::Invalid;
    auto health = health_write_commands(l, "acme", "openai", "k_0123456789ab", h, "t");
    cr_assert_eq(health.size(), 2u);
    for (const auto &argv : health) assert_one_slot(argv);
    cr_assert_eq(health[0][3], "byok:{acme}:audit");
    cr_assert(is(health[1], "XADD", "byok:audit"));
    h.state = HealthState::Healthy;
    cr_assert_eq(health_write_commands(l, "acme", "openai", "k_0123456789ab", h, "t").size(), 1u);

    auto alert = audit_entry_commands(l, "gateway", "t", "acme", "limit.alert", "tokens:80");
    cr_assert_eq(alert.size(), 2u);
    for (const auto &argv : alert) assert_one_slot(argv);
    // The global copy has the fields the script's audit() writes.
    cr_assert_eq(std::vector<std::string>(alert[1].begin() + 6, alert[1].end()),
                 detail::audit_fields("gateway", "limit.alert", "acme", "tokens:80", "t"));
    cr_assert(
        alert[0][1].find("local f = {'actor', ARGV[1], 'action', action, 'project', ARGV[4],\n"
                         "             'target', target, 'at', ARGV[2]}") != std::string::npos);
}
