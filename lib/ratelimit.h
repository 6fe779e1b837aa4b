// limit_req-style accounting of unknown-key lookups per client address
// (issue 10 item 14): a leaky bucket in milli-requests, kept by the glue in
// the shared zone, one per address.
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

// Charges one request at `now_ms`. 0 when it may go ahead (charged);
// otherwise the seconds to wait before one would pass (Retry-After, >= 1),
// and the bucket is unchanged — like limit_req, refused requests are free.
int64_t bucket_take(LeakyBucket &b, const RateLimit &lim, int64_t now_ms);
// Gives back one charged request (the key turned out to exist).
void bucket_refund(LeakyBucket &b);

// "10r/s", "600r/m" or "off" (nullopt when malformed or zero).
std::optional<int64_t> parse_rate(std::string_view s);

}  // namespace byok
