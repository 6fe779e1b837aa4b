#include "lib/limits.h"

#include <nlohmann/json.hpp>

#include "lib/catalog.h"
#include "lib/metering.h"
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
    json j = json::object();
    if (l.requests_per_minute > 0) j["requests_per_minute"] = l.requests_per_minute;
    if (l.tokens_per_day > 0) j["tokens_per_day"] = l.tokens_per_day;
    if (l.cost_per_month_micro > 0) j["cost_per_month_usd"] = format_price(l.cost_per_month_micro);
    j["scope"] = l.scope == ProjectLimits::Scope::All ? "all" : "operator";
    return j.dump();
}

LimitVerdict check_limits(const ProjectLimits &l, const LimitSpend &s, Route route, int64_t now) {
    LimitVerdict v;
    if (!l.any() || !l.counts(route)) return v;
    auto refuse = [&](const char *which, int64_t retry) {
        if (v.refuse) return;
        v.refuse = true;
        v.exceeded = which;
        v.retry_after = retry < 1 ? 1 : retry;
    };
    auto remaining = [](int64_t limit, int64_t spent) {
        return spent >= limit ? int64_t{0} : limit - spent;
    };
    if (l.requests_per_minute > 0) {
        v.headers.push_back(
            {"x-byok-limit-requests-remaining",
             std::to_string(remaining(l.requests_per_minute, s.requests_this_minute))});
        if (s.requests_this_minute >= l.requests_per_minute)
            refuse("requests_per_minute", 60 - now % 60);
    }
    if (l.tokens_per_day > 0) {
        v.headers.push_back({"x-byok-limit-tokens-remaining",
                             std::to_string(remaining(l.tokens_per_day, s.tokens_today))});
        if (s.tokens_today >= l.tokens_per_day) refuse("tokens_per_day", 86400 - now % 86400);
    }
    if (l.cost_per_month_micro > 0) {
        v.headers.push_back(
            {"x-byok-limit-cost-remaining-usd",
             micro_usd_string(remaining(l.cost_per_month_micro, s.cost_this_month_micro))});
        if (s.cost_this_month_micro >= l.cost_per_month_micro)
            refuse("cost_per_month_usd", to_next_month(now));
    }
    if (v.refuse) v.headers.push_back({"x-byok-limit-exceeded", v.exceeded});
    return v;
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

}  // namespace byok
