#include "lib/idempotency.h"

#include <cstring>
#include <string>

#include "lib/crypto.h"

namespace byok {

size_t seen_key_slots(size_t bytes) {
    size_t sets = bytes / (sizeof(SeenKey) * kSeenKeyWays);
    return (sets == 0 ? 1 : sets) * kSeenKeyWays;
}

uint64_t idempotency_tag(const uint8_t gateway_key_sha[32], std::string_view idempotency_key) {
    if (idempotency_key.empty()) return 0;
    std::string in(reinterpret_cast<const char *>(gateway_key_sha), 32);
    in.append(idempotency_key);
    uint8_t digest[32];
    sha256(in, digest);
    uint64_t tag;
    std::memcpy(&tag, digest, sizeof(tag));
    return tag == 0 ? 1 : tag;
}

bool seen_before(SeenKey *slots, size_t n, uint64_t tag, int64_t now_ms) {
    if (tag == 0 || n < kSeenKeyWays) return false;
    SeenKey *set = slots + (tag % (n / kSeenKeyWays)) * kSeenKeyWays;
    SeenKey *oldest = set;
    for (size_t i = 0; i < kSeenKeyWays; i++) {
        SeenKey &s = set[i];
        if (s.tag == tag) {
            bool recent = now_ms - s.at_ms < kIdempotencyWindowMs;
            s.at_ms = now_ms;  // each retry extends the window
            return recent;
        }
        if (s.tag == 0 || s.at_ms < oldest->at_ms) oldest = &s;
        if (s.tag == 0) break;
    }
    oldest->tag = tag;
    oldest->at_ms = now_ms;
    return false;
}

}  // namespace byok
