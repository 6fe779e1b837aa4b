#include "lib/limits.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "lib/catalog.h"
#include "lib/gateway.h"
#include "lib/layout.h"
#include "lib/metering.h"
#include "lib/routing.h"
#include "lib/util.h"

namespace byok {

namespace {

using nlohmann::json;

int64_t count_field(const json &j, const char *name) {
    auto it = j.find(name);
    if (it == j.end() || it->is_null()) return 0;
    if (!it->is_number_integer() && !it->is_number_unsigned())
        throw Error(std::string("limits.") + name + ": expected a whole number");
    int64_t v = it->get<int64_t>();
    if (v < 0) throw Error(std::string("limits.") + name + ": must be >= 0");
    return v;
}

// Seconds from now to the start of the next UTC month.
int64_t to_next_month(int64_t now) {
    int64_t day = now / 86400;
    int64_t t = now;
    // Walk day by day to the 1st of the next month (at most 31 steps).
    for (int i = 0; i < 32; i++) {
        day++;
        std::string d = yyyymmdd_utc(day * 86400);
        if (d.substr(6, 2) == "01") {
            t = day * 86400;
            break;
        }
    }
    return t - now;
}

}  // namespace

bool ProjectLimits::counts(Route r) const { return scope == Scope::All || r != Route::Byok; }

ProjectLimits parse_limits(std::string_view text) {
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error("limits: expected an object");
    for (const auto &[k, v] : j.items()) {
        if (k != "requests_per_minute" && k != "tokens_per_day" && k != "cost_per_month_usd" &&
            k != "scope")
            throw Error("limits." + k + ": unknown field");
    }
    ProjectLimits l;
    l.requests_per_minute = count_field(j, "requests_per_minute");
    l.tokens_per_day = count_field(j, "tokens_per_day");
    auto cost = j.find("cost_per_month_usd");
    if (cost != j.end() && !cost->is_null()) {
        // Exact: the number's own text, through the catalog's price parser.
        std::string s = cost->is_string() ? cost->get<std::string>() : cost->dump();
        if (!cost->is_number() && !cost->is_string())
            throw Error("limits.cost_per_month_usd: expected a number");
        try {
            l.cost_per_month_micro = parse_price(s);
        } catch (const Error &e) {
            throw Error(std::string("limits.cost_per_month_usd: ") + e.what());
        }
    }
    auto scope = j.find("scope");
    if (scope != j.end() && !scope->is_null()) {
        if (!scope->is_string() || (*scope != "operator" && *scope != "all"))
            throw Error("limits.scope: expected \"operator\" or \"all\"");
        l.scope = *scope == "all" ? ProjectLimits::Scope::All : ProjectLimits::Scope::Operator;
    }
    return l;
}

std::string serialize_limits(const ProjectLimits &l) {
    if (!l.any()) return "";
    json j = json::object();
    if (l.requests_per_minute > 0) j["requests_per_minute"] = l.requests_per_minute;
    if (l.tokens_per_day > 0) j["tokens_per_day"] = l.tokens_per_day;
    // The decimal text read back as a JSON number: exact for 6 decimals.
    if (l.cost_per_month_micro > 0)
        j["cost_per_month_usd"] = json::parse(format_price(l.cost_per_month_micro));
    j["scope"] = l.scope == ProjectLimits::Scope::All ? "all" : "operator";
    return j.dump();
}

std::string_view limit_name(LimitKind k) {
    switch (k) {
        case LimitKind::Requests:
            return "requests_per_minute";
        case LimitKind::Tokens:
            return "tokens_per_day";
        case LimitKind::Cost:
            return "cost_per_month_usd";
    }
    return "";
}

int64_t limit_value(const ProjectLimits &l, LimitKind k) {
    switch (k) {
        case LimitKind::Requests:
            return l.requests_per_minute;
        case LimitKind::Tokens:
            return l.tokens_per_day;
        case LimitKind::Cost:
            return l.cost_per_month_micro;
    }
    return 0;
}

int64_t limit_window(LimitKind k, int64_t now) {
    switch (k) {
        case LimitKind::Requests:
            return now / 60;
        case LimitKind::Tokens:
            return now / 86400;
        case LimitKind::Cost:
            return std::stoll(yyyymmdd_utc(now).substr(0, 6));
    }
    return 0;
}

std::string limit_counter_key(const Layout &layout, std::string_view pid, LimitKind k,
                              int64_t now) {
    std::string day = yyyymmdd_utc(now);
    switch (k) {
        case LimitKind::Requests: {
            char hhmm[8];
            std::snprintf(hhmm, sizeof(hhmm), "%02d%02d", static_cast<int>(now % 86400 / 3600),
                          static_cast<int>(now % 3600 / 60));
            return layout.limit(pid, "requests", day + hhmm);
        }
        case LimitKind::Tokens:
            return layout.limit(pid, "tokens", day);
        case LimitKind::Cost:
            return layout.limit(pid, "cost", day.substr(0, 6));
    }
    return "";
}

int64_t limit_counter_ttl(LimitKind k) {
    switch (k) {
        case LimitKind::Requests:
            return 120;
        case LimitKind::Tokens:
            return 2 * 86400;
        case LimitKind::Cost:
            return 32 * 86400;
    }
    return 86400;
}

LimitVerdict check_limits(const ProjectLimits &l, const LimitSpend &s, Route route, int64_t now) {
    LimitVerdict v;
    if (!l.any()) return v;
    const bool counted = l.counts(route);
    auto refuse = [&](const char *which, int64_t retry) {
        if (!counted || v.refuse) return;
        v.refuse = true;
        v.exceeded = which;
        v.retry_after = retry < 1 ? 1 : retry;
    };
    auto remaining = [](int64_t limit, int64_t spent) {
        return spent >= limit ? int64_t{0} : limit - spent;
    };
    if (l.requests_per_minute > 0 && s.requests_this_minute >= l.requests_per_minute)
        refuse("requests_per_minute", 60 - now % 60);
    if (l.tokens_per_day > 0 && s.tokens_today >= l.tokens_per_day)
        refuse("tokens_per_day", 86400 - now % 86400);
    if (l.cost_per_month_micro > 0 && s.cost_this_month_micro >= l.cost_per_month_micro)
        refuse("cost_per_month_usd", to_next_month(now));
    if (l.requests_per_minute > 0) {
        // An admitted, counted request is part of this minute already.
        int64_t spent = s.requests_this_minute + (counted && !v.refuse ? 1 : 0);
        v.headers.push_back({"x-byok-limit-requests-remaining",
                             std::to_string(remaining(l.requests_per_minute, spent))});
    }
    if (l.tokens_per_day > 0)
        v.headers.push_back({"x-byok-limit-tokens-remaining",
                             std::to_string(remaining(l.tokens_per_day, s.tokens_today))});
    if (l.cost_per_month_micro > 0)
        v.headers.push_back(
            {"x-byok-limit-cost-remaining-usd",
             micro_usd_string(remaining(l.cost_per_month_micro, s.cost_this_month_micro))});
    if (v.refuse) v.headers.push_back({"x-byok-limit-exceeded", v.exceeded});
    return v;
}

GatewayError limit_refusal(const LimitVerdict &v) {
    GatewayError e =
        gateway_error(429, "project_limit_exceeded",
                      "this project's " + v.exceeded + " limit is reached; retry after " +
                          std::to_string(v.retry_after) + " seconds");
    e.retry_after = v.retry_after;
    return e;
}

std::vector<int> crossed_thresholds(int64_t limit, int64_t before, int64_t after) {
    std::vector<int> out;
    if (limit <= 0) return out;
    for (int pct : {80, 100}) {
        // spent * 100 >= limit * pct, in integers.
        bool was = before * 100 >= limit * pct, is = after * 100 >= limit * pct;
        if (!was && is) out.push_back(pct);
    }
    return out;
}

void LimitCounter::roll(int64_t w) {
    if (w == window) return;
    // The counts of an earlier window are dropped, also those still
    // waiting to be sent: that window is over, nothing is enforced on it
    // any more (billing has its own counters, lib/metering.h).
    window = w;
    pending = inflight = global = 0;
}

void LimitCounter::add(int64_t w, int64_t n) {
    roll(w);
    pending += n;
}

int64_t LimitCounter::take(int64_t w) {
    roll(w);
    int64_t d = pending;
    pending = 0;
    inflight += d;
    return d;
}

void LimitCounter::settle(int64_t w, int64_t delta, std::optional<int64_t> total) {
    if (w != window) return;  // a reply for a window that is over
    inflight = inflight > delta ? inflight - delta : 0;
    if (!total) {
        pending += delta;
        return;
    }
    // Replies of one node arrive in order, but another worker's sync may
    // have answered with a later total already: the larger one is newer.
    if (*total > global) global = *total;
}

}  // namespace byok
