// Health of one provider key (issue 14): what an upstream answer says about
// the key, and how long the gateway leaves it alone. The glue keeps one
// KeyHealth per key in the shared-memory zone and publishes transitions
// through Redis; this file decides, it never waits or talks to anything.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace byok {

enum class HealthState : uint8_t { Healthy, Invalid, Exhausted, Cooling, Breaker };
std::string_view health_name(HealthState s);  // healthy invalid exhausted cooling breaker
std::optional<HealthState> parse_health_name(std::string_view s);

struct KeyHealth {
    HealthState state = HealthState::Healthy;
    int64_t until_ms = 0;  // end of exhausted/cooling/breaker; invalid has none
    // Passive circuit breaker (nginx's max_fails/fail_timeout): failures
    // counted within a window that starts at the first one.
    uint32_t fails = 0;
    int64_t window_start_ms = 0;
};

struct HealthPolicy {
    int64_t exhausted_ms = 3600 * 1000;  // 402 / quota exhausted
    int64_t cooling_ms = 30 * 1000;      // 429 without a usable reset header
    int64_t max_cooling_ms = 3600 * 1000;
    uint32_t max_fails = 3;  // 5xx, connect error, timeout ...
    int64_t fail_window_ms = 10 * 1000;
    int64_t breaker_ms = 30 * 1000;  // ... this often within the window: open
};

// The arguments of `byok_key_health` (README, Selection and health):
// exhausted=<time> cooling=<time> max_fails=<n> fail_timeout=<time>
// breaker=<time>, times as nginx writes them (500ms, 30s, 5m, 1h). Unnamed
// fields keep their defaults. Throws Error naming the bad argument.
HealthPolicy parse_health_policy(const std::vector<std::string_view> &args);

// What one upstream answer says about the key that was used.
enum class Outcome { Success, Unauthorized, Exhausted, RateLimited, Failure, Neutral };

// status 0 = no answer (connect error, timeout). 401/403 unauthorized, 402
// exhausted, 429 rate limited (or exhausted when the provider says the quota
// is used up), 5xx and 0 failures, 2xx success, anything else neutral (a
// 400 or 404 is the client's doing, not the key's).
Outcome classify_upstream(int status, bool quota_exhausted);

// When a 429'd key may be used again: Retry-After (seconds) if present,
// else the soonest x-ratelimit-reset-* ("1s", "6m0s", "20ms", "1.5", or an
// RFC 3339 time), else the policy's default; capped at max_cooling_ms.
int64_t cooling_until(int64_t now_ms, std::string_view retry_after,
                      const std::vector<std::string_view> &reset_headers,
                      const HealthPolicy &policy);

// Applies an outcome (until_ms: the cooling end for RateLimited). Returns
// true when the state changed: other workers and nodes must learn it.
bool apply_outcome(KeyHealth &h, Outcome o, int64_t now_ms, int64_t until_ms,
                   const HealthPolicy &policy);

// The state as of now: a cooldown that has run out reads healthy.
HealthState effective_state(const KeyHealth &h, int64_t now_ms);
inline bool usable(const KeyHealth &h, int64_t now_ms) {
    return effective_state(h, now_ms) == HealthState::Healthy;
}

// Wire form, stored in byok:{<pid>}:key_health and published: "<state> <until_ms>".
std::string encode_health(const KeyHealth &h);
std::optional<KeyHealth> decode_health(std::string_view s);

// The message published on the invalidation channel so every node learns a
// transition: "~health <pid> <key_id> <state> <until_ms>". Project ids
// cannot contain '~' or spaces, so nodes that predate it treat it as the
// invalidation of a project that does not exist.
struct HealthMessage {
    std::string pid, key_id;
    KeyHealth health;
};
std::string health_message(std::string_view pid, std::string_view key_id, const KeyHealth &h);
std::optional<HealthMessage> parse_health_message(std::string_view s);

// The Redis commands that record a transition, sent in order without
// reading replies: the key's field in byok:{<pid>}:key_health (removed when
// healthy), the message above on the invalidation channel, and for `invalid`
// one audit entry (no secret) — in cluster mode copied to the global stream
// by a second command.
class Layout;
std::vector<std::vector<std::string>> health_write_commands(const Layout &l, std::string_view pid,
                                                            std::string_view provider,
                                                            std::string_view key_id,
                                                            const KeyHealth &h,
                                                            std::string_view at);

}  // namespace byok
