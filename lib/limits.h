// Project limits at the edge (issue 13): the rule, as data. NOT WIRED YET:
// the admin API does not accept `limits` and the gateway does not enforce
// them; this is the decision the access path and PATCH /projects/{pid} are
// meant to call (see the README's "Usage metering", "Not done yet").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/routing.h"

namespace byok {

struct ProjectLimits {
    enum class Scope { Operator, All };
    int64_t requests_per_minute = 0;   // 0 = no limit
    int64_t tokens_per_day = 0;        // input + output tokens, UTC day
    int64_t cost_per_month_micro = 0;  // micro-dollars, UTC calendar month
    Scope scope = Scope::Operator;     // operator: only routes system and fallback count
    bool any() const {
        return requests_per_minute > 0 || tokens_per_day > 0 || cost_per_month_micro > 0;
    }
    bool counts(Route r) const { return scope == Scope::All || r != Route::Byok; }
};

// `limits` of PATCH /projects/{pid}: a JSON object {requests_per_minute,
// tokens_per_day, cost_per_month_usd, scope: "operator"|"all"}, every field
// optional, numbers >= 0 (0 or null = none), cost with at most 6 decimals.
// Throws Error naming the field.
ProjectLimits parse_limits(std::string_view json_object);
// Compact JSON for the project hash and the API (cost as a decimal string).
std::string serialize_limits(const ProjectLimits &l);

// What the project has spent in the current windows (as counted by scope).
struct LimitSpend {
    int64_t requests_this_minute = 0;
    int64_t tokens_today = 0;
    int64_t cost_this_month_micro = 0;
};

struct LimitVerdict {
    bool refuse = false;
    std::string exceeded;     // "requests_per_minute" | "tokens_per_day" | "cost_per_month_usd"
    int64_t retry_after = 0;  // seconds until that window resets
    // x-byok-limit-* headers: which limits apply and what remains.
    std::vector<std::pair<std::string, std::string>> headers;
};

// Before any upstream call: refuse when a counted limit is already spent.
LimitVerdict check_limits(const ProjectLimits &l, const LimitSpend &spent, Route route,
                          int64_t now_unix);

// Budget alert thresholds (80 % and 100 %) crossed between two readings of
// one limit: returns the percents crossed, e.g. {80} or {80, 100}.
std::vector<int> crossed_thresholds(int64_t limit, int64_t before, int64_t after);

}  // namespace byok
