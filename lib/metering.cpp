#include "lib/metering.h"

#include <algorithm>

namespace byok {

namespace {

const Metric kMetrics[] = {Metric::Requests, Metric::Input, Metric::Output,
                           Metric::Cached,   Metric::Cost,  Metric::Unknown};

std::optional<Metric> parse_metric(std::string_view s) {
    for (Metric m : kMetrics)
        if (metric_name(m) == s) return m;
    return std::nullopt;
}

// Splits at the first `n` '|' separators; the last part keeps the rest.
std::vector<std::string_view> split_bar(std::string_view s, size_t n) {
    std::vector<std::string_view> out;
    while (out.size() < n) {
        size_t bar = s.find('|');
        if (bar == std::string_view::npos) break;
        out.push_back(s.substr(0, bar));
        s.remove_prefix(bar + 1);
    }
    out.push_back(s);
    return out;
}

}  // namespace

int64_t cost_micro_usd(const ModelPrice *price, const TokenUsage &u) {
    if (price == nullptr || !u.known) return 0;
    uint64_t cached = std::min(u.cached, u.input);
    // Units are millionths of a micro-dollar per token; 128-bit keeps huge
    // counts exact.
    unsigned __int128 units = static_cast<unsigned __int128>(u.input - cached) * price->input +
                              static_cast<unsigned __int128>(cached) * price->cached_input +
                              static_cast<unsigned __int128>(u.output) * price->output;
    return static_cast<int64_t>((units + 500000) / 1000000);
}

std::string micro_usd_string(int64_t micro) {
    std::string sign = micro < 0 ? "-" : "";
    uint64_t v = micro < 0 ? static_cast<uint64_t>(-micro) : static_cast<uint64_t>(micro);
    std::string frac = std::to_string(1000000 + v % 1000000).substr(1);
    return sign + std::to_string(v / 1000000) + "." + frac;
}

std::string_view metric_name(Metric m) {
    switch (m) {
        case Metric::Requests:
            return "requests";
        case Metric::Input:
            return "input_tokens";
        case Metric::Output:
            return "output_tokens";
        case Metric::Cached:
            return "cached_tokens";
        case Metric::Cost:
            return "cost_micro_usd";
        case Metric::Unknown:
            return "tokens_unknown";
    }
    return "requests";
}

std::vector<Increment> meter_increments(const Layout &layout, const MeterRecord &rec) {
    std::vector<Increment> out;
    if (rec.project.empty() || rec.provider.empty()) return out;
    const TokenUsage &u = rec.usage;
    std::pair<Metric, int64_t> values[] = {
        {Metric::Requests, 1},
        {Metric::Input, static_cast<int64_t>(u.input)},
        {Metric::Output, static_cast<int64_t>(u.output)},
        {Metric::Cached, static_cast<int64_t>(u.cached)},
        {Metric::Cost, rec.cost_micro},
        {Metric::Unknown, u.known ? 0 : 1},
    };
    std::string key = layout.meter(rec.project, rec.day);
    std::string all = layout.meter_all(rec.day);
    std::string model = rec.model.substr(0, kMaxModel);
    std::string detail = "|" + rec.provider + "|" + rec.route + "|" + model;
    for (const auto &[m, n] : values) {
        if (n == 0) continue;
        std::string name(metric_name(m));
        out.push_back({key, "m|" + name + detail, n});
        if (!rec.key_id.empty()) out.push_back({key, "k|" + name + "|" + rec.key_id, n});
        out.push_back({all, rec.project + "|" + name, n});
    }
    return out;
}

std::optional<MeterField> parse_meter_field(std::string_view field, bool global_hash) {
    MeterField f;
    if (global_hash) {
        auto parts = split_bar(field, 1);
        auto m = parts.size() == 2 ? parse_metric(parts[1]) : std::nullopt;
        if (!m || !valid_id(parts[0])) return std::nullopt;
        f.kind = MeterField::Kind::Project;
        f.metric = *m;
        f.project = std::string(parts[0]);
        return f;
    }
    if (field.substr(0, 2) == "m|") {
        auto parts = split_bar(field.substr(2), 3);
        if (parts.size() != 4) return std::nullopt;
        auto m = parse_metric(parts[0]);
        if (!m) return std::nullopt;
        f.metric = *m;
        f.provider = std::string(parts[1]);
        f.route = std::string(parts[2]);
        f.model = std::string(parts[3]);
        return f;
    }
    if (field.substr(0, 2) == "k|") {
        auto parts = split_bar(field.substr(2), 1);
        auto m = parts.size() == 2 ? parse_metric(parts[0]) : std::nullopt;
        if (!m) return std::nullopt;
        f.kind = MeterField::Kind::GatewayKey;
        f.metric = *m;
        f.key_id = std::string(parts[1]);
        return f;
    }
    return std::nullopt;
}

std::vector<std::string> usage_event_fields(const MeterRecord &rec) {
    const TokenUsage &u = rec.usage;
    return {"request_id",      rec.request_id,
            "ts_ms",           std::to_string(rec.at_ms),
            "project",         rec.project,
            "provider",        rec.provider,
            "model",           rec.model.substr(0, kMaxModel),
            "route",           rec.route,
            "key_id",          rec.key_id,
            "status",          std::to_string(rec.status),
            "latency_ms",      std::to_string(rec.latency_ms),
            "tokens_known",    u.known ? "1" : "0",
            "input_tokens",    std::to_string(u.input),
            "output_tokens",   std::to_string(u.output),
            "cached_tokens",   std::to_string(u.cached),
            "cost_micro_usd",  std::to_string(rec.cost_micro),
            "fallback_reason", rec.fallback_reason};
}

bool include_usage_applies(bool unified, std::string_view path) {
    path = path.substr(0, path.find('?'));
    return unified && (path == "/chat/completions" || path == "/completions");
}

std::optional<BodyInsert> plan_include_usage(bool unified, std::string_view path,
                                             const StreamFacts &facts) {
    if (!include_usage_applies(unified, path)) return std::nullopt;
    if (!facts.stream || facts.stream_options || facts.object_start == 0) return std::nullopt;
    return BodyInsert{facts.object_start, "\"stream_options\":{\"include_usage\":true},"};
}

std::optional<BodyInsert> plan_include_usage(bool unified, std::string_view path,
                                             std::string_view body) {
    if (!include_usage_applies(unified, path)) return std::nullopt;
    ModelScanner scanner;
    try {
        scanner.feed(body);
        scanner.finish();
    } catch (const Error &) {
        return std::nullopt;
    }
    return plan_include_usage(unified, path, scanner.stream_facts());
}

}  // namespace byok
