// Which of a provider's keys serves a request (issue 14): smooth weighted
// round robin over the keys that are active, unexpired and healthy, as
// nginx's ngx_http_upstream_round_robin picks peers. Like nginx without an
// upstream zone, each worker keeps its own weights: every worker's sequence
// follows the weights exactly, so their sum does too.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lib/small_vec.h"

namespace byok {

struct KeyCandidate {
    std::string_view id;
    int weight = 1;  // 1..100
};

// Selection state of one provider's keys, by key id.
class SmoothWeightedRoundRobin {
  public:
    // Index into `keys` of the key to use, -1 when `keys` is empty. New ids
    // start at zero.
    int pick(const std::vector<KeyCandidate> &keys);

  private:
    static constexpr size_t kMaxKeys = 16;
    std::map<std::string, int64_t, std::less<>> current_;
};

// The per-worker table of selection states, one per (project, provider),
// bounded: when full it starts over (a fresh start only costs evenness
// for one round).
class KeySelector {
  public:
    explicit KeySelector(size_t max_groups = 10000) : max_groups_(max_groups) {}
    int pick(std::string_view pid, std::string_view provider,
             const std::vector<KeyCandidate> &keys);

  private:
    size_t max_groups_;
    std::map<std::string, SmoothWeightedRoundRobin, std::less<>> groups_;
};

// One request's use of a provider's keys: the key of the attempt in flight
// and those already tried (a failed attempt is retried once on a sibling).
// Ids are views of the catalog (provider) and of the request's snapshot
// (keys), which outlive the attempts (issue 18: no copy per request).
struct KeyAttempts {
    std::string_view provider;
    std::string_view current;  // key id; "" = the attempt does not use a project key
    SmallVec<std::string_view, 4> tried;
    // Per key of the snapshot (by index): whether it could serve when the
    // route was decided — the key pool reads each key's health once per
    // decision and its pick uses that reading (issue 18). Empty = read the
    // health again (a sibling pick, after an attempt's answer changed it).
    SmallVec<uint8_t, 8> usable;  // 1 = usable (not bool: SmallVec spills to a std::vector)
    bool observed = true;         // the current attempt's answer went into its health
    bool retried = false;         // the one retry on a sibling key has been made
    bool tried_id(std::string_view id) const {
        for (const auto &t : tried)
            if (t == id) return true;
        return false;
    }
};

// An expires_at (unix seconds, 0 = never) that has passed by `now_s`.
inline bool key_expired(int64_t expires_at_s, int64_t now_s) {
    return expires_at_s != 0 && now_s >= expires_at_s;
}

}  // namespace byok
