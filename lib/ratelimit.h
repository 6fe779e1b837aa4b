// limit_req-style accounting of unknown-key lookups per client address
// (issue 10 item 14): a leaky bucket in milli-requests, kept by the glue in
// the shared zone, one per address. A lookup is checked before Redis is
// asked and charged only once the key turned out unknown, so tenants' own
// keys (a cold cache behind one proxy address) never use up the budget.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace byok {

struct RateLimit {
    int64_t milli_per_s = 0;  // requests per second x 1000; 0 = no limit
    int64_t burst = 0;        // requests allowed above the rate
};

struct LeakyBucket {
    int64_t excess = 0;  // milli-requests above the rate
    int64_t last_ms = 0;
};

// 0 when one more lookup may go ahead at `now_ms`; otherwise the seconds
// until one may (Retry-After, >= 1). Burst + 1 pass at once, as with
// limit_req.
int64_t bucket_wait(const LeakyBucket &b, const RateLimit &lim, int64_t now_ms);
// Counts one lookup of an unknown key.
void bucket_charge(LeakyBucket &b, const RateLimit &lim, int64_t now_ms);

// "10r/s", "600r/m" or "off" (0); nullopt when malformed or zero.
std::optional<int64_t> parse_rate(std::string_view s);

}  // namespace byok
