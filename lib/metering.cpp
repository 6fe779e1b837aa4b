#include "lib/metering.h"

#include <algorithm>
#include <charconv>
#include <cstring>

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

MeterTotals meter_totals(const MeterRecord &rec) {
    const TokenUsage &u = rec.usage;
    MeterTotals t;
    t.requests = 1;
    t.input = static_cast<int64_t>(u.input);
    t.output = static_cast<int64_t>(u.output);
    t.cached = static_cast<int64_t>(u.cached);
    t.cost = rec.cost_micro;
    t.unknown = u.known ? 0 : 1;
    return t;
}

void add_totals(MeterTotals &into, const MeterTotals &t) {
    into.requests += t.requests;
    into.input += t.input;
    into.output += t.output;
    into.cached += t.cached;
    into.cost += t.cost;
    into.unknown += t.unknown;
}

std::vector<Increment> meter_increments(const Layout &layout, const MeterRecord &rec) {
    return meter_increments(layout, rec, meter_totals(rec));
}

std::vector<Increment> meter_increments(const Layout &layout, const MeterRecord &rec,
                                        const MeterTotals &t) {
    std::vector<Increment> out;
    if (rec.project.empty() || rec.provider.empty()) return out;
    std::pair<Metric, int64_t> values[] = {
        {Metric::Requests, t.requests}, {Metric::Input, t.input}, {Metric::Output, t.output},
        {Metric::Cached, t.cached},     {Metric::Cost, t.cost},   {Metric::Unknown, t.unknown},
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

namespace {

constexpr size_t kEventFields = 15;

// Calls f(name, value) for each field of the usage event, in order: the one
// place that defines the event. Numbers are formatted on the stack. A new
// string field also goes into append_usage_event_args's size bound.
template <typename F>
void each_event_field(const MeterRecord &rec, F &&f) {
    const TokenUsage &u = rec.usage;
    auto num = [&](std::string_view name, auto v) {
        char buf[24];
        auto res = std::to_chars(buf, buf + sizeof buf, v);
        f(name, std::string_view(buf, static_cast<size_t>(res.ptr - buf)));
    };
    f("request_id", rec.request_id);
    num("ts_ms", rec.at_ms);
    f("project", rec.project);
    f("provider", rec.provider);
    f("model", std::string_view(rec.model).substr(0, kMaxModel));
    f("route", rec.route);
    f("key_id", rec.key_id);
    num("status", rec.status);
    num("latency_ms", rec.latency_ms);
    f("tokens_known", u.known ? "1" : "0");
    num("input_tokens", u.input);
    num("output_tokens", u.output);
    num("cached_tokens", u.cached);
    num("cost_micro_usd", rec.cost_micro);
    f("fallback_reason", rec.fallback_reason);
}

void append_bulk(std::string &out, std::string_view s) {
    char buf[24];
    auto res = std::to_chars(buf, buf + sizeof buf, s.size());
    out.push_back('$');
    out.append(buf, static_cast<size_t>(res.ptr - buf));
    out.append("\r\n");
    out.append(s);
    out.append("\r\n");
}

// The decimal digits of n, written at p; returns the end. Bulk lengths are
// mostly one to three digits: those skip the general conversion.
char *put_len(char *p, size_t n) {
    if (n < 10) {
        *p++ = static_cast<char>('0' + n);
    } else if (n < 100) {
        *p++ = static_cast<char>('0' + n / 10);
        *p++ = static_cast<char>('0' + n % 10);
    } else {
        p = std::to_chars(p, p + 20, n).ptr;
    }
    return p;
}

// "$<len>\r\n<s>\r\n" written at p; returns the end.
char *put_bulk(char *p, std::string_view s) {
    *p++ = '$';
    p = put_len(p, s.size());
    *p++ = '\r';
    *p++ = '\n';
    std::memcpy(p, s.data(), s.size());
    p += s.size();
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

// At least the bytes put_bulk(s) writes: "$", 20 digits, two CRLFs.
constexpr size_t kBulkOverhead = 25;

}  // namespace

std::vector<std::string> usage_event_fields(const MeterRecord &rec) {
    std::vector<std::string> out;
    out.reserve(2 * kEventFields);
    each_event_field(rec, [&](std::string_view name, std::string_view value) {
        out.emplace_back(name);
        out.emplace_back(value);
    });
    return out;
}

// One pass (issue 18): `out` grows once by a bound on the event's size (its
// strings plus a fixed overhead per bulk; numbers have at most 20 digits),
// the bulks are written in place and the unused tail is cut off again.
void append_usage_event_args(std::string &out, const MeterRecord &rec) {
    size_t bound = 0;
    for (const std::string *s : {&rec.request_id, &rec.project, &rec.provider, &rec.model,
                                 &rec.route, &rec.key_id, &rec.fallback_reason})
        bound += s->size();
    // Every field: its name (under 20 bytes) and a value of at most 20 digits
    // when it is not one of the strings counted above.
    bound += kEventFields * (2 * kBulkOverhead + 20 + 20);
    size_t at = out.size();
    out.resize(at + bound);
    char *const start = &out[at];
    char *p = start;
    each_event_field(rec, [&](std::string_view name, std::string_view value) {
        p = put_bulk(p, name);
        p = put_bulk(p, value);
    });
    out.resize(at + static_cast<size_t>(p - start));
}

std::string usage_events_batch_head(std::string_view stream, size_t events) {
    static const char kScript[] =
        "local w = tonumber(ARGV[2])\n"
        "for i = 3, #ARGV, w do\n"
        "  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i, i + w - 1))\n"
        "end\n"
        "return 0";
    std::string out = "*" + std::to_string(6 + 2 * kEventFields * events) + "\r\n";
    append_bulk(out, "EVAL");
    append_bulk(out, kScript);
    append_bulk(out, "1");
    append_bulk(out, stream);
    append_bulk(out, std::to_string(kUsageEventsMaxLen));
    append_bulk(out, std::to_string(2 * kEventFields));
    return out;
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
