#include "lib/ratelimit.h"

namespace byok {

namespace {

// The bucket's excess at `now_ms`, after draining at the rate.
int64_t drained(const LeakyBucket &b, const RateLimit &lim, int64_t now_ms) {
    if (b.last_ms == 0) return 0;
    int64_t elapsed = now_ms > b.last_ms ? now_ms - b.last_ms : 0;  // clock steps back: 0
    if (elapsed >= 3600 * 1000) return 0;
    int64_t excess = b.excess - lim.milli_per_s * elapsed / 1000;
    return excess > 0 ? excess : 0;
}

}  // namespace

int64_t bucket_wait(const LeakyBucket &b, const RateLimit &lim, int64_t now_ms) {
    if (lim.milli_per_s <= 0) return 0;
    int64_t over = drained(b, lim, now_ms) + 1000 - (lim.burst + 1) * 1000;
    return over > 0 ? over * 1000 / lim.milli_per_s / 1000 + 1 : 0;
}

void bucket_charge(LeakyBucket &b, const RateLimit &lim, int64_t now_ms) {
    if (lim.milli_per_s <= 0) return;
    b.excess = drained(b, lim, now_ms) + 1000;
    b.last_ms = now_ms;
}

std::optional<int64_t> parse_rate(std::string_view s) {
    if (s == "off") return 0;
    size_t r = s.find("r/");
    if (r == 0 || r == std::string_view::npos) return std::nullopt;
    int64_t n = 0;
    for (char c : s.substr(0, r)) {
        if (c < '0' || c > '9' || n > 1000000) return std::nullopt;
        n = n * 10 + (c - '0');
    }
    std::string_view unit = s.substr(r + 2);
    if (n == 0 || (unit != "s" && unit != "m")) return std::nullopt;
    return unit == "s" ? n * 1000 : n * 1000 / 60;
}

}  // namespace byok
