#include <criterion/criterion.h>

#include "lib/ratelimit.h"

using namespace byok;

namespace {

// A lookup that turns out unknown: checked, then charged.
int64_t unknown_lookup(LeakyBucket &b, const RateLimit &lim, int64_t now) {
    int64_t wait = bucket_wait(b, lim, now);
    if (wait == 0) bucket_charge(b, lim, now);
    return wait;
}

}  // namespace

// Issue 10 item 14: unknown-key lookups per address, limit_req's arithmetic.
Test(ratelimit, i10_14_burst_then_rate) {
    RateLimit lim{10 * 1000, 20};  // 10r/s, burst 20
    LeakyBucket b;
    int64_t t = 1000000;
    for (int i = 0; i < 21; i++) cr_assert_eq(unknown_lookup(b, lim, t), 0, "request %d", i);
    cr_assert_eq(unknown_lookup(b, lim, t), 1);
    cr_assert_eq(unknown_lookup(b, lim, t + 50), 1);   // refused requests cost nothing
    cr_assert_eq(unknown_lookup(b, lim, t + 100), 0);  // 100 ms drain one request at 10r/s
    cr_assert_neq(unknown_lookup(b, lim, t + 100), 0);
    cr_assert_eq(unknown_lookup(b, lim, t + 100 + 2100), 0);  // a quiet period refills
}

Test(ratelimit, i10_14_slow_rates_and_off) {
    RateLimit lim{1000 / 60, 2};  // 1r/m
    LeakyBucket b;
    int64_t t = 5000;
    for (int i = 0; i < 3; i++) cr_assert_eq(unknown_lookup(b, lim, t), 0);
    int64_t wait = unknown_lookup(b, lim, t);
    cr_assert(wait >= 55 && wait <= 64, "retry after %lld", (long long)wait);
    // Known keys are never charged: checking alone changes nothing.
    for (int i = 0; i < 100; i++) bucket_wait(b, lim, t);
    cr_assert_eq(bucket_wait(b, lim, t), wait);
    cr_assert_eq(unknown_lookup(b, RateLimit{}, t), 0);  // off
    LeakyBucket old{5000, 1};
    cr_assert_eq(bucket_wait(old, lim, int64_t{1} << 50), 0);  // no overflow after years
}

Test(ratelimit, i10_14_parse_rate) {
    cr_assert_eq(*parse_rate("10r/s"), 10000);
    cr_assert_eq(*parse_rate("600r/m"), 10000);
    cr_assert_eq(*parse_rate("1r/m"), 16);
    cr_assert_eq(*parse_rate("off"), 0);
    for (const char *bad : {"", "r/s", "0r/s", "10", "10r/h", "-1r/s", "10 r/s", "99999999r/s"})
        cr_assert_not(parse_rate(bad).has_value(), "%s", bad);
}
