// Project limits at the edge (issue 13): the rule as data, and the counter
// arithmetic the gateway keeps in shared memory. PATCH /projects/{pid}
// stores the limits (parse_limits), the project snapshot carries them, the
// access path asks check_limits before any upstream call, and the glue
// (ngx_byok_module/ngx_byok_limits.cpp) keeps one LimitCounter per limit
// and project, synced with Redis once a second.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace byok {

class Layout;
struct GatewayError;  // lib/gateway.h
// Defined in lib/routing.h, which includes lib/project.h, which needs
// ProjectLimits: an opaque declaration breaks the include cycle.
enum class Route;

// Trivially copyable: it is copied into the shared-memory counter table.
struct ProjectLimits {
    enum class Scope : uint8_t { Operator, All };
    int64_t requests_per_minute = 0;   // 0 = no limit
    int64_t tokens_per_day = 0;        // input + output tokens, UTC day
    int64_t cost_per_month_micro = 0;  // micro-dollars, UTC calendar month
    Scope scope = Scope::Operator;     // operator: only routes system and fallback count
    bool any() const {
        return requests_per_minute > 0 || tokens_per_day > 0 || cost_per_month_micro > 0;
    }
    // Whether traffic on `r` counts against (and is refused by) the limits.
    bool counts(Route r) const;
    bool operator==(const ProjectLimits &o) const {
        return requests_per_minute == o.requests_per_minute && tokens_per_day == o.tokens_per_day &&
               cost_per_month_micro == o.cost_per_month_micro && scope == o.scope;
    }
};

// `limits` of PATCH /projects/{pid}: a JSON object {requests_per_minute,
// tokens_per_day, cost_per_month_usd, scope: "operator"|"all"}, every field
// optional, numbers >= 0 (0 or null = none), cost with at most 6 decimals.
// Throws Error naming the field.
ProjectLimits parse_limits(std::string_view json_object);
// Compact JSON for the project hash and the API (cost as a JSON number);
// "" when no limit is set (nothing to store).
std::string serialize_limits(const ProjectLimits &l);

// The three limits, in the order of every table indexed by them.
enum class LimitKind : uint8_t { Requests, Tokens, Cost };
constexpr size_t kLimitKinds = 3;
std::string_view limit_name(LimitKind k);  // "requests_per_minute", ...
int64_t limit_value(const ProjectLimits &l, LimitKind k);
// The window `now` falls in: UTC minute, day, or month (yyyymm as a number).
int64_t limit_window(LimitKind k, int64_t now_unix);
// The Redis counter of one project's limit in one window (Layout::limit),
// and how long Redis keeps it (past the window's end).
std::string limit_counter_key(const Layout &layout, std::string_view pid, LimitKind k,
                              int64_t now_unix);
int64_t limit_counter_ttl(LimitKind k);

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
    // x-byok-limit-* headers: which limit refused, what remains. Set for
    // every request of a limited project, counted or not.
    std::vector<std::pair<std::string, std::string>> headers;
};

// Before any upstream call: refuse when a counted limit is already spent.
// `spent` excludes this request; the requests-remaining header counts it
// when it is admitted and counted.
LimitVerdict check_limits(const ProjectLimits &l, const LimitSpend &spent, Route route,
                          int64_t now_unix);
// The refusal: 429 project_limit_exceeded (type rate_limit_error) with
// Retry-After, a message naming the limit (no secret, no project data).
GatewayError limit_refusal(const LimitVerdict &v);

// Budget alert thresholds (80 % and 100 %) crossed between two readings of
// one limit: returns the percents crossed, e.g. {80} or {80, 100}.
std::vector<int> crossed_thresholds(int64_t limit, int64_t before, int64_t after);
// Budgets alert; requests_per_minute is a rate, not a budget (an alert per
// minute would only be noise).
inline bool limit_alerts(LimitKind k) { return k != LimitKind::Requests; }

// One node's view of one limit's counter (shared-memory, plain data).
// spent = the global total at the last sync + what this node counted
// since (pending: not sent yet; inflight: sent, reply not in). A sync
// moves pending to inflight, sends INCRBY of it, and settles with the
// total Redis answers, which includes every node's increments.
struct LimitCounter {
    int64_t window = -1;
    int64_t pending = 0;
    int64_t inflight = 0;
    int64_t global = 0;

    int64_t spent(int64_t w) const { return w == window ? global + pending + inflight : 0; }
    void add(int64_t w, int64_t n);  // a new window starts from zero
    int64_t take(int64_t w);         // pending → inflight; returns the delta to send
    // The reply of a sync of `w` that sent `delta`: Redis's total, or
    // nullopt when the command failed (the delta is sent again next time).
    void settle(int64_t w, int64_t delta, std::optional<int64_t> total);

  private:
    void roll(int64_t w);
};

}  // namespace byok
