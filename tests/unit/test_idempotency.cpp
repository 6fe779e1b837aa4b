// Issue 17 item 7: the per-node table of Idempotency-Keys seen in the last
// minute (lib/idempotency.h). Time is a parameter, so the window is tested
// without waiting.
#include <criterion/criterion.h>

#include <cstdint>
#include <set>
#include <vector>

#include "lib/idempotency.h"

using namespace byok;

namespace {

const uint8_t kKeyA[32] = {1, 2, 3};
const uint8_t kKeyB[32] = {9, 9, 9};

}  // namespace

Test(idempotency, i17_07_tag_binds_gateway_key_and_idempotency_key) {
    uint64_t a = idempotency_tag(kKeyA, "stainless-node-retry-1");
    cr_assert_neq(a, 0u);
    cr_assert_eq(a, idempotency_tag(kKeyA, "stainless-node-retry-1"));
    cr_assert_neq(a, idempotency_tag(kKeyB, "stainless-node-retry-1"));
    cr_assert_neq(a, idempotency_tag(kKeyA, "stainless-node-retry-2"));
    cr_assert_eq(idempotency_tag(kKeyA, ""), 0u);
}

Test(idempotency, i17_07_seen_again_within_a_minute) {
    std::vector<SeenKey> t(seen_key_slots(4096));
    uint64_t tag = idempotency_tag(kKeyA, "k");
    cr_assert_not(seen_before(t.data(), t.size(), tag, 1000));      // first attempt
    cr_assert(seen_before(t.data(), t.size(), tag, 1000 + 59999));  // retry
    // The window runs from the latest attempt.
    cr_assert(seen_before(t.data(), t.size(), tag, 1000 + 59999 + 59999));
    cr_assert_not(seen_before(t.data(), t.size(), tag, 1000 + 59999 * 2 + 60000));
    cr_assert(seen_before(t.data(), t.size(), tag, 1000 + 59999 * 2 + 60001));
    // Other keys are first attempts; tag 0 (no key) is never recorded.
    cr_assert_not(seen_before(t.data(), t.size(), idempotency_tag(kKeyB, "k"), 5000));
    cr_assert_not(seen_before(t.data(), t.size(), 0, 5000));
    cr_assert_not(seen_before(t.data(), t.size(), 0, 5001));
}

Test(idempotency, i17_07_table_is_bounded_and_forgets_the_oldest) {
    size_t n = seen_key_slots(sizeof(SeenKey) * 16);
    cr_assert_eq(n, 16u);
    cr_assert_eq(seen_key_slots(1), kSeenKeyWays);
    // Guard slots around the table stay untouched.
    std::vector<SeenKey> mem(n + 2);
    mem.front().tag = mem.back().tag = 0xabcdef;
    SeenKey *t = mem.data() + 1;
    std::set<uint64_t> tags;
    for (uint64_t i = 1; tags.size() < 1000; i++) tags.insert(i * 2);  // all in set 0
    int64_t now = 0;
    for (uint64_t tag : tags) cr_assert_not(seen_before(t, n, tag, now++));
    cr_assert_eq(mem.front().tag, 0xabcdefu);
    cr_assert_eq(mem.back().tag, 0xabcdefu);
    // Set 0 holds the 8 newest of its tags; older ones were replaced.
    std::vector<uint64_t> all(tags.begin(), tags.end());
    for (size_t i = all.size() - kSeenKeyWays; i < all.size(); i++)
        cr_assert(seen_before(t, n, all[i], now), "recent tag %zu", i);
    cr_assert_not(seen_before(t, n, all[0], now));
}
