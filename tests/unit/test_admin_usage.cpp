#include <criterion/criterion.h>

#include <string>

#include "lib/metering.h"
#include "tests/unit/admin_support.h"

using namespace byok;
using namespace byok::admin;
using namespace byok::admin::test;

namespace {

Config usage_config() {
    Config c;
    c.catalog = &catalog();
    c.ring = &ring1();
    c.admin_tokens = {kAdminToken};
    c.clock.now = [] { return int64_t{1795000000}; };  // 2026-11-18
    return c;
}

Step get(const Config &cfg, std::string path, std::string query) {
    Request r;
    r.method = "GET";
    r.path = path;
    r.query = query;
    std::string auth = std::string("Bearer ") + kAdminToken;
    r.authorization = auth;
    return handle(cfg, r);
}

// Counter hash of one day, as the gateway writes it.
Reply day(std::vector<std::pair<MeterRecord, int>> recs, bool global = false) {
    std::map<std::string, long long> sums;
    Layout l;
    for (auto &[rec, times] : recs)
        for (int i = 0; i < times; i++)
            for (const auto &inc : meter_increments(l, rec))
                if ((inc.key == l.meter_all(rec.day)) == global) sums[inc.field] += inc.by;
    std::vector<std::pair<std::string, std::string>> kv;
    for (auto &[f, n] : sums) kv.emplace_back(f, std::to_string(n));
    return hash(kv);
}

MeterRecord rec(const char *provider, const char *route, const char *model, const char *key,
                uint64_t in, uint64_t out, uint64_t cached, int64_t cost, bool known = true) {
    MeterRecord r;
    r.project = "acme";
    r.provider = provider;
    r.route = route;
    r.model = model;
    r.key_id = key;
    r.day = "20261118";
    r.usage.known = known;
    r.usage.input = in;
    r.usage.output = out;
    r.usage.cached = cached;
    r.cost_micro = cost;
    return r;
}

}  // namespace

Test(admin_usage, i13_project_usage_groups_and_totals_exactly) {
    Config cfg = usage_config();
    Step s = get(cfg, "/projects/acme/usage", "from=2026-11-17&to=2026-11-18&group_by=provider");
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[2], "3");
    cr_assert_eq(argv[3], "byok:project:{acme}");
    cr_assert_eq(argv[4], "byok:{acme}:meter:20261117");
    cr_assert_eq(argv[5], "byok:{acme}:meter:20261118");
    Reply r = arr({integer(0), hash({{"name", "Acme"}}),
                   day({{rec("openai", "byok", "gpt-4o", "k1", 12, 7, 4, 24000), 2}}),
                   day({{rec("anthropic", "system", "claude-x", "k2", 30, 15, 5, 100), 1},
                        {rec("openai", "fallback", "gpt-4o", "k1", 0, 0, 0, 0, false), 1}})});
    nlohmann::json b = body_of(feed(s, r));
    cr_assert_eq(b["from"], "2026-11-17");
    cr_assert_eq(b["to"], "2026-11-18");
    cr_assert_eq(b["rows"].size(), 2u);
    cr_assert_eq(b["rows"][0]["provider"], "anthropic");
    cr_assert_eq(b["rows"][0]["input_tokens"], 30);
    cr_assert_eq(b["rows"][1]["provider"], "openai");
    cr_assert_eq(b["rows"][1]["requests"], 3);
    cr_assert_eq(b["rows"][1]["input_tokens"], 24);
    cr_assert_eq(b["rows"][1]["cached_tokens"], 8);
    cr_assert_eq(b["rows"][1]["tokens_unknown"], 1);
    cr_assert_eq(b["rows"][1]["cost_micro_usd"], 48000);
    cr_assert_eq(b["totals"]["requests"], 4);
    cr_assert_eq(b["totals"]["output_tokens"], 29);
    cr_assert_eq(b["totals"]["cost_micro_usd"], 48100);

    s = get(cfg, "/projects/acme/usage", "from=2026-11-17&to=2026-11-18&group_by=key");
    b = body_of(feed(s, r));
    cr_assert_eq(b["rows"].size(), 2u);
    cr_assert_eq(b["rows"][0]["key"], "k1");
    cr_assert_eq(b["rows"][0]["requests"], 3);
    cr_assert_eq(b["totals"]["requests"], 4);  // totals never double count key rows

    s = get(cfg, "/projects/acme/usage", "from=2026-11-17&to=2026-11-18");
    b = body_of(feed(s, r));
    cr_assert_eq(b["group_by"], "day");
    cr_assert_eq(b["rows"][1]["day"], "2026-11-18");
    cr_assert_eq(b["rows"][1]["requests"], 2);
}

Test(admin_usage, i13_default_range_is_the_last_30_days_and_bad_queries_are_400) {
    Config cfg = usage_config();
    Step s = get(cfg, "/projects/acme/usage", "");
    cr_assert_eq(redis_call(s).argv[2], "31");
    cr_assert_eq(redis_call(s).argv.back(), "byok:{acme}:meter:20261118");
    for (const char *q : {"group_by=week", "from=2026-02-31", "from=2026-11-18&to=2026-11-01",
                          "from=2024-01-01&to=2026-01-01", "to=yesterday"}) {
        Step bad = get(cfg, "/projects/acme/usage", q);
        cr_assert_eq(response(bad).status, 400, "%s", q);
    }
    Reply none = arr({integer(2)});
    cr_assert_eq(response(feed(get(cfg, "/projects/acme/usage", ""), none)).status, 404);
}

Test(admin_usage, i13_admin_usage_ranks_projects_by_cost) {
    Config cfg = usage_config();
    Step s = get(cfg, "/usage", "from=2026-11-18&to=2026-11-18&top=1");
    cr_assert_eq(redis_call(s).argv[3], "byok:meter:20261118");
    MeterRecord cheap = rec("openai", "byok", "gpt-4o", "k1", 1, 1, 0, 10);
    MeterRecord dear = rec("openai", "system", "gpt-4o", "k9", 1, 1, 0, 500);
    dear.project = "beta";
    Reply r = arr({day({{cheap, 5}, {dear, 1}}, true)});
    nlohmann::json b = body_of(feed(s, r));
    cr_assert_eq(b["projects"].size(), 1u);
    cr_assert_eq(b["projects"][0]["project"], "beta");
    cr_assert_eq(b["totals"]["requests"], 6);
    cr_assert_eq(b["totals"]["cost_micro_usd"], 550);
    cr_assert_eq(response(get(cfg, "/usage", "top=0")).status, 400);
}

Test(admin_usage, i13_stats_gain_usage_30d_and_savings_30d) {
    Config cfg = usage_config();
    Step s = get(cfg, "/projects/acme/stats", "");
    const auto &argv = redis_call(s).argv;
    cr_assert_eq(argv[2], "34");  // + gateway keys (expiry, issue 14)
    std::vector<Reply> items{integer(0), hash({{"tier", "pro"}}), hash({}), hash({}), hash({})};
    items.push_back(day({{rec("openai", "byok", "gpt-4o", "k1", 10, 5, 0, 700), 2},
                         {rec("openai", "fallback", "gpt-4o", "k1", 10, 5, 0, 300), 1}}));
    for (int i = 1; i < 30; i++) items.push_back(hash({}));
    nlohmann::json b = body_of(feed(s, arr(items)));
    cr_assert_eq(b["usage_30d"]["requests"], 3);
    cr_assert_eq(b["usage_30d"]["input_tokens"], 30);
    cr_assert_eq(b["savings_30d"]["byok_cost_micro_usd"], 1400);
    cr_assert_eq(b["savings_30d"]["operator_cost_micro_usd"], 300);
}
