// Issue 14: the key-health state machine.
#include <criterion/criterion.h>

#include "lib/key_health.h"
#include "lib/layout.h"
#include "lib/util.h"

using namespace byok;

namespace {
const HealthPolicy policy;
}

Test(key_health, i14_03_upstream_status_classification) {
    cr_assert(classify_upstream(200, false) == Outcome::Success);
    cr_assert(classify_upstream(401, false) == Outcome::Unauthorized);
    cr_assert(classify_upstream(403, false) == Outcome::Unauthorized);
    cr_assert(classify_upstream(402, false) == Outcome::Exhausted);
    cr_assert(classify_upstream(429, true) == Outcome::Exhausted);
    cr_assert(classify_upstream(429, false) == Outcome::RateLimited);
    cr_assert(classify_upstream(503, false) == Outcome::Failure);
    cr_assert(classify_upstream(0, false) == Outcome::Failure);
    cr_assert(classify_upstream(400, false) == Outcome::Neutral);
    cr_assert(classify_upstream(404, false) == Outcome::Neutral);
}

Test(key_health, i14_03_401_is_invalid_until_a_success) {
    KeyHealth h;
    cr_assert(apply_outcome(h, Outcome::Unauthorized, 1000, 0, policy));
    cr_assert(effective_state(h, 1000 + 86400000LL * 365) == HealthState::Invalid);
    cr_assert_not(apply_outcome(h, Outcome::Unauthorized, 2000, 0, policy));  // once
    cr_assert_not(apply_outcome(h, Outcome::RateLimited, 2000, 9000, policy));
    cr_assert(apply_outcome(h, Outcome::Success, 3000, 0, policy));
    cr_assert(usable(h, 3000));
}

Test(key_health, i14_03_402_exhausts_for_an_hour) {
    KeyHealth h;
    cr_assert(apply_outcome(h, Outcome::Exhausted, 0, 0, policy));
    cr_assert(effective_state(h, 3599999) == HealthState::Exhausted);
    cr_assert(usable(h, 3600000));
}

Test(key_health, i14_03_429_cools_until_retry_after_or_reset) {
    cr_assert_eq(cooling_until(1000, "2", {}, policy), 3000);
    cr_assert_eq(cooling_until(1000, "", {"6m0s", "1.5s"}, policy), 2500);
    cr_assert_eq(cooling_until(1000, "", {"20ms"}, policy), 2000);            // at least 1 s
    cr_assert_eq(cooling_until(1000, "", {}, policy), 31000);                 // default 30 s
    cr_assert_eq(cooling_until(1000, "999999", {}, policy), 1000 + 3600000);  // capped
    cr_assert_eq(cooling_until(0, "", {"1970-01-01T00:00:05Z"}, policy), 5000);
    cr_assert_eq(cooling_until(0, "soon", {"x"}, policy), 30000);
    KeyHealth h;
    cr_assert(apply_outcome(h, Outcome::RateLimited, 1000, 3000, policy));
    cr_assert(effective_state(h, 2999) == HealthState::Cooling);
    cr_assert(usable(h, 3000));
}

Test(key_health, i14_03_three_failures_in_ten_seconds_open_the_breaker) {
    KeyHealth h;
    cr_assert_not(apply_outcome(h, Outcome::Failure, 0, 0, policy));
    cr_assert_not(apply_outcome(h, Outcome::Failure, 5000, 0, policy));
    cr_assert(apply_outcome(h, Outcome::Failure, 9000, 0, policy));
    cr_assert(effective_state(h, 38999) == HealthState::Breaker);
    cr_assert(usable(h, 39000));
    KeyHealth spread;  // failures further apart than the window never open it
    for (int i = 0; i < 10; ++i)
        cr_assert_not(apply_outcome(spread, Outcome::Failure, i * 11000LL, 0, policy));
    KeyHealth reset;  // a success in between starts the count over
    apply_outcome(reset, Outcome::Failure, 0, 0, policy);
    apply_outcome(reset, Outcome::Failure, 1, 0, policy);
    apply_outcome(reset, Outcome::Success, 2, 0, policy);
    cr_assert_not(apply_outcome(reset, Outcome::Failure, 3, 0, policy));
}

Test(key_health, i14_03_wire_form_and_message_round_trip) {
    KeyHealth h;
    h.state = HealthState::Cooling;
    h.until_ms = 1764500000123;
    cr_assert_eq(encode_health(h), "cooling 1764500000123");
    auto back = decode_health(encode_health(h));
    cr_assert(back && back->state == HealthState::Cooling && back->until_ms == h.until_ms);
    cr_assert_not(decode_health("sick 1").has_value());
    cr_assert_not(decode_health("cooling x").has_value());
    std::string m = health_message("acme", "k_0123456789ab", h);
    cr_assert_eq(m, "~health acme k_0123456789ab cooling 1764500000123");
    auto pm = parse_health_message(m);
    cr_assert(pm && pm->pid == "acme" && pm->key_id == "k_0123456789ab");
    cr_assert_not(parse_health_message("acme").has_value());  // a plain invalidation
    cr_assert_not(parse_health_message("~health acme bad-id cooling 1").has_value());
}

Test(key_health, i14_03_the_write_names_no_secret_and_audits_invalid_only) {
    Layout l;
    KeyHealth h;
    h.state = HealthState::Invalid;
    auto argv = health_write_commands(l, "acme", "openai", "k_0123456789ab", h, "t")[0];
    cr_assert_eq(argv[0], "EVAL");
    cr_assert_eq(argv[4], "byok:{acme}:key_health");
    cr_assert_eq(argv.back(), "1");
    h.state = HealthState::Healthy;
    argv = health_write_commands(l, "acme", "openai", "k_0123456789ab", h, "t")[0];
    cr_assert_eq(argv[10], "");  // healthy: the field is removed
    cr_assert_eq(argv.back(), "0");
}

Test(key_health, i14_03_policy_from_the_directive) {
    HealthPolicy d;
    HealthPolicy p = parse_health_policy(
        {"exhausted=2h", "cooling=45s", "max_fails=5", "fail_timeout=1m", "breaker=500ms"});
    cr_assert_eq(p.exhausted_ms, 2 * 3600 * 1000);
    cr_assert_eq(p.cooling_ms, 45 * 1000);
    cr_assert_eq(p.max_fails, 5u);
    cr_assert_eq(p.fail_window_ms, 60 * 1000);
    cr_assert_eq(p.breaker_ms, 500);
    HealthPolicy q = parse_health_policy({"breaker=10s"});
    cr_assert_eq(q.exhausted_ms, d.exhausted_ms);  // unnamed: the default
    cr_assert_eq(q.breaker_ms, 10 * 1000);
    for (const char *bad : {"exhausted=", "exhausted=soon", "max_fails=0", "max_fails=3x",
                            "cooling=-1s", "colling=30s", "breaker"})
        cr_assert_throw(parse_health_policy({bad}), byok::Error, "%s", bad);
}
