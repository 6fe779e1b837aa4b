// Usage reports of the admin API (issue 13): token and cost counters
// (lib/metering.h) read back and grouped. Reads only; the counters are
// written by the gateway's log phase.
#include <algorithm>
#include <cstdlib>

#include "lib/admin_internal.h"
#include "lib/layout.h"
#include "lib/metering.h"

namespace byok::admin::detail {

namespace {

constexpr int kMaxDays = 366;

// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// "YYYY-MM-DD" → day number; nullopt when malformed.
std::optional<int64_t> parse_day(std::string_view s) {
    if (s.size() != 10 || s[4] != '-' || s[7] != '-') return std::nullopt;
    for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9})
        if (s[i] < '0' || s[i] > '9') return std::nullopt;
    int y = std::atoi(std::string(s.substr(0, 4)).c_str());
    unsigned m = static_cast<unsigned>(std::atoi(std::string(s.substr(5, 2)).c_str()));
    unsigned d = static_cast<unsigned>(std::atoi(std::string(s.substr(8, 2)).c_str()));
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > 31) return std::nullopt;
    int64_t n = days_from_civil(y, m, d);
    // Round trip refuses 2026-02-31 and the like.
    if (yyyymmdd_utc(n * 86400) !=
        std::string(s.substr(0, 4)) + std::string(s.substr(5, 2)) + std::string(s.substr(8, 2)))
        return std::nullopt;
    return n;
}

std::string dashed(const std::string &yyyymmdd) {
    return yyyymmdd.substr(0, 4) + "-" + yyyymmdd.substr(4, 2) + "-" + yyyymmdd.substr(6, 2);
}

struct Range {
    int64_t from = 0, to = 0;       // day numbers, inclusive
    std::vector<std::string> days;  // yyyymmdd, from..to
};

// from/to query parameters; default: the last 30 days up to today (UTC).
std::optional<Step> parse_range(const Ctx &c, Range *out) {
    int64_t today = c.now / 86400;
    out->to = today;
    if (has_query(c, "to")) {
        auto t = parse_day(fetch_query(c, "to"));
        if (!t) return fail(400, "invalid_value", "query parameter 'to' must be YYYY-MM-DD");
        out->to = *t;
    }
    out->from = out->to - 29;
    if (has_query(c, "from")) {
        auto f = parse_day(fetch_query(c, "from"));
        if (!f) return fail(400, "invalid_value", "query parameter 'from' must be YYYY-MM-DD");
        out->from = *f;
    }
    if (out->from > out->to) return fail(400, "invalid_value", "'from' is after 'to'");
    if (out->to - out->from + 1 > kMaxDays)
        return fail(400, "invalid_value", "at most 366 days per query");
    for (int64_t d = out->from; d <= out->to; d++) out->days.push_back(yyyymmdd_utc(d * 86400));
    return std::nullopt;
}

}  // namespace

void UsageTotals::add(Metric m, int64_t n) {
    switch (m) {
        case Metric::Requests:
            requests += n;
            break;
        case Metric::Input:
            input += n;
            break;
        case Metric::Output:
            output += n;
            break;
        case Metric::Cached:
            cached += n;
            break;
        case Metric::Cost:
            cost_micro += n;
            break;
        case Metric::Unknown:
            unknown += n;
            break;
    }
}

json UsageTotals::to_json() const {
    return json{{"requests", requests},
                {"input_tokens", input},
                {"output_tokens", output},
                {"cached_tokens", cached},
                {"tokens_unknown", unknown},
                {"cost_micro_usd", cost_micro},
                {"cost_usd", static_cast<double>(cost_micro) / 1e6}};
}

std::vector<std::string> meter_keys(const Ctx &c, const std::string &pid, int days) {
    std::vector<std::string> keys;
    for (int d = 0; d < days; d++)
        keys.push_back(c.cfg->layout.meter(pid, yyyymmdd_utc(c.now - d * 86400LL)));
    return keys;
}

void summarize_30d(const std::vector<const Reply *> &days, json *usage, json *savings) {
    UsageTotals all, byok, op;
    for (const Reply *r : days) {
        for (const auto &[field, value] : to_fields(*r)) {
            auto f = parse_meter_field(field, false);
            if (!f || f->kind != MeterField::Kind::Detail) continue;
            int64_t n = std::strtoll(value.c_str(), nullptr, 10);
            all.add(f->metric, n);
            (f->route == "byok" ? byok : op).add(f->metric, n);
        }
    }
    *usage = all.to_json();
    // The seeds' cost comparison: what the project's own keys carried
    // versus what the operator's keys (routes system and fallback) carried.
    *savings = json{{"byok_cost_usd", static_cast<double>(byok.cost_micro) / 1e6},
                    {"byok_cost_micro_usd", byok.cost_micro},
                    {"operator_cost_usd", static_cast<double>(op.cost_micro) / 1e6},
                    {"operator_cost_micro_usd", op.cost_micro},
                    {"byok_requests", byok.requests},
                    {"operator_requests", op.requests}};
}

Step project_usage(const CtxPtr &c, const std::string &pid) {
    Range range;
    if (auto err = parse_range(*c, &range)) return *err;
    std::string group = has_query(*c, "group_by") ? fetch_query(*c, "group_by") : "day";
    static const char *kGroups[] = {"day", "provider", "model", "route", "key"};
    if (std::find(std::begin(kGroups), std::end(kGroups), group) == std::end(kGroups))
        return fail(400, "invalid_value",
                    "query parameter 'group_by' must be day, provider, model, route or key");
    const Layout &l = c->cfg->layout;
    std::vector<std::string> keys{l.project(pid)};
    for (const auto &d : range.days) keys.push_back(l.meter(pid, d));
    return redis(eval(kScriptReadProject, std::move(keys), {}), [c, range, group](const Reply &r) {
        if (script_code(r) == kNoProject) return project_not_found();
        std::map<std::string, UsageTotals> rows;
        UsageTotals totals;
        for (size_t i = 0; i < range.days.size(); i++) {
            for (const auto &[field, value] : to_fields(script_item(r, 2 + i))) {
                auto f = parse_meter_field(field, false);
                if (!f) continue;
                int64_t n = std::strtoll(value.c_str(), nullptr, 10);
                bool by_key = group == "key";
                if ((f->kind == MeterField::Kind::GatewayKey) != by_key) {
                    if (f->kind == MeterField::Kind::Detail) totals.add(f->metric, n);
                    continue;
                }
                if (f->kind == MeterField::Kind::Detail) totals.add(f->metric, n);
                std::string k = group == "day"        ? dashed(range.days[i])
                                : group == "provider" ? f->provider
                                : group == "model"    ? f->model
                                : group == "route"    ? f->route
                                                      : f->key_id;
                rows[k].add(f->metric, n);
            }
        }
        json out = json::array();
        for (const auto &[k, t] : rows) {
            json row = t.to_json();
            row[group] = k;
            out.push_back(std::move(row));
        }
        return respond(200, json{{"from", dashed(range.days.front())},
                                 {"to", dashed(range.days.back())},
                                 {"group_by", group},
                                 {"rows", out},
                                 {"totals", totals.to_json()}});
    });
}

Step usage_all(const CtxPtr &c) {
    Range range;
    if (auto err = parse_range(*c, &range)) return *err;
    long top = 20;
    if (has_query(*c, "top")) {
        std::string v = fetch_query(*c, "top");
        bool digits = !v.empty() && v.size() <= 4 && std::all_of(v.begin(), v.end(), ::isdigit);
        top = digits ? std::atol(v.c_str()) : 0;
        if (top < 1 || top > 1000)
            return fail(400, "invalid_value", "query parameter 'top' must be 1..1000");
    }
    std::vector<std::string> keys;
    for (const auto &d : range.days) keys.push_back(c->cfg->layout.meter_all(d));
    bool cluster = c->cfg->layout.cluster();  // the day keys are in different slots
    return read_hashes(std::move(keys), cluster, [range, top](const Reply &r) {
        std::map<std::string, UsageTotals> projects;
        UsageTotals totals;
        for (size_t i = 0; i < range.days.size(); i++) {
            for (const auto &[field, value] : to_fields(script_item(r, i))) {
                auto f = parse_meter_field(field, true);
                if (!f) continue;
                int64_t n = std::strtoll(value.c_str(), nullptr, 10);
                projects[f->project].add(f->metric, n);
                totals.add(f->metric, n);
            }
        }
        std::vector<std::pair<std::string, UsageTotals>> ranked(projects.begin(), projects.end());
        std::stable_sort(ranked.begin(), ranked.end(), [](const auto &a, const auto &b) {
            return a.second.cost_micro != b.second.cost_micro
                       ? a.second.cost_micro > b.second.cost_micro
                       : a.second.requests > b.second.requests;
        });
        if (ranked.size() > static_cast<size_t>(top)) ranked.resize(static_cast<size_t>(top));
        json out = json::array();
        for (const auto &[pid, t] : ranked) {
            json row = t.to_json();
            row["project"] = pid;
            out.push_back(std::move(row));
        }
        return respond(200, json{{"from", dashed(range.days.front())},
                                 {"to", dashed(range.days.back())},
                                 {"projects", out},
                                 {"totals", totals.to_json()}});
    });
}

}  // namespace byok::admin::detail
