#include <criterion/criterion.h>

#include <string>

#include "lib/admin.h"
#include "lib/gateway.h"
#include "lib/layout.h"
#include "lib/limits.h"
#include "lib/project.h"
#include "lib/routing.h"
#include "tests/unit/test_support.h"

using namespace byok;
using byok::test::error_of;

namespace {

std::string header(const LimitVerdict &v, const std::string &name) {
    for (const auto &[k, val] : v.headers)
        if (k == name) return val;
    return "<absent>";
}

constexpr int64_t kNow = 1795000000;  // 2026-11-18T11:06:40Z

}  // namespace

Test(limits, i13_parse_and_serialize) {
    ProjectLimits l = parse_limits(
        R"({"requests_per_minute":60,"tokens_per_day":100000,"cost_per_month_usd":12.5,"scope":"all"})");
    cr_assert_eq(l.requests_per_minute, 60);
    cr_assert_eq(l.tokens_per_day, 100000);
    cr_assert_eq(l.cost_per_month_micro, 12500000);
    cr_assert(l.scope == ProjectLimits::Scope::All);
    ProjectLimits again = parse_limits(serialize_limits(l));
    cr_assert_eq(again.cost_per_month_micro, 12500000);
    cr_assert(parse_limits("{}").scope == ProjectLimits::Scope::Operator);
    cr_assert(!parse_limits(R"({"tokens_per_day":null})").any());
    cr_assert_eq(error_of([] { parse_limits(R"({"rpm":1})"); }), "limits.rpm: unknown field");
    cr_assert_eq(error_of([] { parse_limits(R"({"tokens_per_day":-1})"); }),
                 "limits.tokens_per_day: must be >= 0");
    cr_assert_eq(error_of([] { parse_limits(R"({"requests_per_minute":1.5})"); }),
                 "limits.requests_per_minute: expected a whole number");
    cr_assert_eq(error_of([] { parse_limits(R"({"scope":"some"})"); }),
                 "limits.scope: expected \"operator\" or \"all\"");
}

// The rule, row by row.
Test(limits, i13_decision_table) {
    ProjectLimits l;
    l.requests_per_minute = 2;
    l.tokens_per_day = 1000;
    l.cost_per_month_micro = 5000000;
    struct Row {
        LimitSpend spent;
        Route route;
        bool refuse;
        const char *exceeded;
        int64_t retry_after;
    } rows[] = {
        {{1, 10, 10}, Route::System, false, "", 0},
        {{2, 10, 10}, Route::System, true, "requests_per_minute", 60 - kNow % 60},
        {{0, 1000, 10}, Route::Fallback, true, "tokens_per_day", 86400 - kNow % 86400},
        {{0, 0, 5000000}, Route::System, true, "cost_per_month_usd", 13 * 86400 - kNow % 86400},
        {{9, 9999, 9999999}, Route::Byok, false, "", 0},  // scope operator: own keys never count
    };
    for (const Row &r : rows) {
        LimitVerdict v = check_limits(l, r.spent, r.route, kNow);
        cr_assert_eq(v.refuse, r.refuse, "%s", r.exceeded);
        cr_assert_eq(v.exceeded, r.exceeded);
        cr_assert_eq(v.retry_after, r.retry_after, "%s: %ld", r.exceeded, (long)v.retry_after);
    }
    // Admitted and counted: the remaining requests include this one.
    LimitVerdict v = check_limits(l, {0, 400, 1250000}, Route::System, kNow);
    cr_assert_eq(header(v, "x-byok-limit-requests-remaining"), "1");
    cr_assert_eq(header(v, "x-byok-limit-tokens-remaining"), "600");
    cr_assert_eq(header(v, "x-byok-limit-cost-remaining-usd"), "3.750000");
    cr_assert_eq(header(v, "x-byok-limit-exceeded"), "<absent>");
    // Scope operator: the project's own keys are never refused, but the
    // headers still say what remains of the operator's budget.
    v = check_limits(l, {5, 2000, 0}, Route::Byok, kNow);
    cr_assert(!v.refuse);
    cr_assert_eq(header(v, "x-byok-limit-requests-remaining"), "0");
    cr_assert_eq(header(v, "x-byok-limit-tokens-remaining"), "0");
    cr_assert_eq(header(v, "x-byok-limit-exceeded"), "<absent>");
    v = check_limits(l, {2, 0, 0}, Route::System, kNow);
    cr_assert_eq(header(v, "x-byok-limit-exceeded"), "requests_per_minute");
    cr_assert_eq(header(v, "x-byok-limit-requests-remaining"), "0");
    GatewayError e = limit_refusal(v);
    cr_assert_eq(e.status, 429);
    cr_assert_eq(e.code, "project_limit_exceeded");
    cr_assert_eq(e.type, "rate_limit_error");
    cr_assert_eq(e.retry_after, 60 - kNow % 60);
    cr_assert_eq(e.message, "this project's requests_per_minute limit is reached; retry after " +
                                std::to_string(60 - kNow % 60) + " seconds");
    l.scope = ProjectLimits::Scope::All;
    cr_assert(check_limits(l, {2, 0, 0}, Route::Byok, kNow).refuse);
    // No limits: no headers, never a refusal.
    cr_assert(check_limits(ProjectLimits{}, {99, 99, 99}, Route::System, kNow).headers.empty());
}

Test(limits, i13_01_none_serializes_to_nothing_and_cost_is_a_number) {
    cr_assert_eq(serialize_limits(parse_limits(R"({"scope":"all"})")), "");
    cr_assert_eq(serialize_limits(parse_limits(R"({"tokens_per_day":0})")), "");
    cr_assert_eq(serialize_limits(parse_limits(R"({"cost_per_month_usd":"0.000001"})")),
                 R"({"cost_per_month_usd":1e-06,"scope":"operator"})");
    ProjectLimits l = parse_limits(serialize_limits(parse_limits(R"({"cost_per_month_usd":0.1})")));
    cr_assert_eq(l.cost_per_month_micro, 100000);
    cr_assert_eq(error_of([] { parse_limits("5"); }), "limits: expected an object");
    cr_assert_eq(error_of([] { parse_limits(R"({"cost_per_month_usd":true})"); }),
                 "limits.cost_per_month_usd: expected a number");
}

Test(limits, i13_01_snapshot_carries_limits) {
    FieldMap apikey{{"project", "p1"}, {"id", "k1"}};
    FieldMap project{{"tier", "starter"},
                     {"limits", R"({"requests_per_minute":3,"tokens_per_day":5000000000})"}};
    GatewaySnapshot s = build_snapshot(apikey, project, {});
    cr_assert_eq(s.limits.requests_per_minute, 3);
    cr_assert_eq(s.limits.tokens_per_day, 5000000000LL);
    GatewaySnapshot again = decode_snapshot(encode_snapshot(s));
    cr_assert(again.limits == s.limits);
    cr_assert_eq(again.key_id, "k1");
    // Unlimited projects encode as before (old cache entries stay readable).
    project.erase("limits");
    GatewaySnapshot plain = build_snapshot(apikey, project, {});
    cr_assert(!decode_snapshot(encode_snapshot(plain)).limits.any());
    project["limits"] = "{broken";
    cr_assert(!build_snapshot(apikey, project, {}).limits.any());
}

Test(limits, i13_02_windows_and_counter_keys) {
    Layout layout;
    // kNow = 2026-11-18T11:06:40Z
    cr_assert_eq(limit_counter_key(layout, "p1", LimitKind::Requests, kNow),
                 "byok:{p1}:limit:requests:202611181106");
    cr_assert_eq(limit_counter_key(layout, "p1", LimitKind::Tokens, kNow),
                 "byok:{p1}:limit:tokens:20261118");
    cr_assert_eq(limit_counter_key(layout, "p1", LimitKind::Cost, kNow),
                 "byok:{p1}:limit:cost:202611");
    cr_assert_eq(limit_window(LimitKind::Requests, kNow), kNow / 60);
    cr_assert_eq(limit_window(LimitKind::Tokens, kNow), kNow / 86400);
    cr_assert_eq(limit_window(LimitKind::Cost, kNow), 202611);
    cr_assert_eq(limit_name(LimitKind::Cost), "cost_per_month_usd");
    for (LimitKind k : {LimitKind::Requests, LimitKind::Tokens, LimitKind::Cost})
        cr_assert_gt(limit_counter_ttl(k), 0);
}

// One node's counter across syncs: what it counted, what is in flight, and
// the other nodes' spending learnt from Redis's totals.
Test(limits, i13_02_counter_sync_arithmetic) {
    LimitCounter c;
    c.add(7, 3);
    cr_assert_eq(c.spent(7), 3);
    cr_assert_eq(c.spent(8), 0);  // another window
    int64_t d = c.take(7);
    cr_assert_eq(d, 3);
    c.add(7, 2);  // counted while the sync is in flight
    cr_assert_eq(c.spent(7), 5);
    c.settle(7, d, 10);  // Redis: 10 in all, 7 of them from other nodes
    cr_assert_eq(c.spent(7), 12);
    d = c.take(7);
    cr_assert_eq(d, 2);
    c.settle(7, d, std::nullopt);  // failed: sent again next time
    cr_assert_eq(c.spent(7), 12);
    cr_assert_eq(c.take(7), 2);
    c.settle(7, 2, 9);  // a total older than one seen: ignored
    cr_assert_eq(c.spent(7), 10);
    c.settle(7, 0, 40);
    cr_assert_eq(c.spent(7), 40);
    c.add(8, 1);  // the next window starts from zero
    cr_assert_eq(c.spent(8), 1);
    c.settle(7, 0, 99);  // a late reply for the old window changes nothing
    cr_assert_eq(c.spent(8), 1);
}

Test(limits, i13_03_alert_entry_command) {
    Layout layout;
    auto argv = admin::audit_entry_commands(layout, "gateway", "2026-11-18T08:26:40Z", "p1",
                                            "limit.alert", "tokens_per_day:80")[0];
    cr_assert_eq(argv.size(), 10u);
    cr_assert_eq(argv[0], "EVAL");
    cr_assert_eq(argv[2], "1");
    cr_assert_eq(argv[3], "byok:audit");
    cr_assert_eq(argv[6], "");  // no invalidation
    cr_assert_eq(argv[7], "p1");
    cr_assert_eq(argv[9], "tokens_per_day:80");
}

Test(limits, i13_alert_thresholds) {
    cr_assert(crossed_thresholds(100, 0, 79).empty());
    cr_assert_eq(crossed_thresholds(100, 79, 80), std::vector<int>({80}));
    cr_assert_eq(crossed_thresholds(100, 50, 120), std::vector<int>({80, 100}));
    cr_assert_eq(crossed_thresholds(100, 80, 99).size(), 0u);
    cr_assert(crossed_thresholds(0, 0, 10).empty());
}
