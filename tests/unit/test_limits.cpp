#include <criterion/criterion.h>

#include <string>

#include "lib/limits.h"
#include "tests/unit/test_support.h"

using namespace byok;
using byok::test::error_of;

namespace {

std::string header(const LimitVerdict &v, const std::string &name) {
    for (const auto &[k, val] : v.headers)
        if (k == name) return val;
    return "<absent>";
}

constexpr int64_t kNow = 1795000000;  // 2026-11-18T08:26:40Z

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
    LimitVerdict v = check_limits(l, {1, 400, 1250000}, Route::System, kNow);
    cr_assert_eq(header(v, "x-byok-limit-requests-remaining"), "1");
    cr_assert_eq(header(v, "x-byok-limit-tokens-remaining"), "600");
    cr_assert_eq(header(v, "x-byok-limit-cost-remaining-usd"), "3.750000");
    cr_assert_eq(header(v, "x-byok-limit-exceeded"), "<absent>");
    l.scope = ProjectLimits::Scope::All;
    cr_assert(check_limits(l, {2, 0, 0}, Route::Byok, kNow).refuse);
}

Test(limits, i13_alert_thresholds) {
    cr_assert(crossed_thresholds(100, 0, 79).empty());
    cr_assert_eq(crossed_thresholds(100, 79, 80), std::vector<int>({80}));
    cr_assert_eq(crossed_thresholds(100, 50, 120), std::vector<int>({80, 100}));
    cr_assert_eq(crossed_thresholds(100, 80, 99).size(), 0u);
    cr_assert(crossed_thresholds(0, 0, 10).empty());
}
