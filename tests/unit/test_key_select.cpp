// Issue 14: smooth weighted round robin over a provider's keys.
#include <criterion/criterion.h>

#include <map>
#include <string>
#include <vector>

#include "lib/key_select.h"

using namespace byok;

namespace {

std::map<std::string, int> run(SmoothWeightedRoundRobin &rr, const std::vector<KeyCandidate> &c,
                               int n, std::string *sequence = nullptr) {
    std::map<std::string, int> count;
    for (int i = 0; i < n; ++i) {
        int k = rr.pick(c);
        count[std::string(c[k].id)]++;
        if (sequence) *sequence += std::string(c[k].id);
    }
    return count;
}

}  // namespace

Test(key_select, i14_02_weights_are_exact_over_each_round) {
    SmoothWeightedRoundRobin rr;
    std::vector<KeyCandidate> c{{"a", 5}, {"b", 1}, {"c", 1}};
    std::string seq;
    auto count = run(rr, c, 7, &seq);
    // nginx's example: {a, a, b, a, c, a, a} for weights 5, 1, 1: smooth, not bursty.
    cr_assert_eq(seq, "aabacaa");
    cr_assert_eq(count["a"], 5);
    count = run(rr, c, 700);
    cr_assert_eq(count["a"], 500);
    cr_assert_eq(count["b"], 100);
    cr_assert_eq(count["c"], 100);
}

Test(key_select, i14_02_a_key_left_out_keeps_its_place) {
    SmoothWeightedRoundRobin rr;
    std::vector<KeyCandidate> both{{"a", 1}, {"b", 1}};
    std::vector<KeyCandidate> only_b{{"b", 1}};
    cr_assert_eq(rr.pick(both), 0);
    cr_assert_eq(rr.pick(only_b), 0);  // a is cooling
    auto count = run(rr, both, 100);
    cr_assert(count["a"] >= 49 && count["a"] <= 51);
    cr_assert_eq(rr.pick({}), -1);
}

Test(key_select, i14_02_selector_keeps_one_state_per_project_and_provider) {
    KeySelector sel(2);
    std::vector<KeyCandidate> c{{"a", 1}, {"b", 1}};
    cr_assert_eq(sel.pick("p1", "openai", c), 0);
    cr_assert_eq(sel.pick("p2", "openai", c), 0);  // its own state
    cr_assert_eq(sel.pick("p1", "openai", c), 1);
    cr_assert_eq(sel.pick("p1", "anthropic", c), 0);  // table full: starts over, still valid
}

Test(key_select, i14_02_expiry) {
    cr_assert_not(key_expired(0, 2000000000));
    cr_assert(key_expired(100, 100));
    cr_assert_not(key_expired(101, 100));
}

Test(key_select, i14_03_attempts_remember_tried_keys) {
    KeyAttempts a;
    a.tried = {"k_1"};
    cr_assert(a.tried_id("k_1"));
    cr_assert_not(a.tried_id("k_2"));
}
