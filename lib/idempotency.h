// Idempotency-Key (issue 17 item 7): a request carrying a key the gateway
// saw from the same gateway key within the last minute is the client's own
// retry, so the gateway adds no fallback retry on top (as for
// x-stainless-retry-count > 0). The keys seen live in a small fixed table
// per node (nginx shared memory, never Redis): set-associative, the oldest
// entry of a set replaced, only 64-bit hashes stored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace byok {

struct SeenKey {
    uint64_t tag = 0;  // 0 = empty
    int64_t at_ms = 0;
};

constexpr int64_t kIdempotencyWindowMs = 60 * 1000;
constexpr size_t kSeenKeyWays = 8;

// Slots for a table of about `bytes`: a multiple of kSeenKeyWays, at least
// one set.
size_t seen_key_slots(size_t bytes);

// The table tag of (gateway key, Idempotency-Key): 64 bits of SHA-256 over
// both, never 0. An empty Idempotency-Key has no tag (returns 0).
uint64_t idempotency_tag(const uint8_t gateway_key_sha[32], std::string_view idempotency_key);

// Records `tag` as seen at `now_ms` in `slots` (n = seen_key_slots(...));
// true when it had been seen less than kIdempotencyWindowMs before. Tag 0
// is never recorded.
bool seen_before(SeenKey *slots, size_t n, uint64_t tag, int64_t now_ms);

}  // namespace byok
