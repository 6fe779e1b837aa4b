#include "lib/metering.h"

#include <algorithm>
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
    std::string detail = "|";
    detail.append(rec.provider).append("|").append(rec.route).append("|");
    detail.append(rec.model.substr(0, kMaxModel));
    for (const auto &[m, n] : values) {
        if (n == 0) continue;
        std::string name(metric_name(m));
        out.push_back({key, "m|" + name + detail, n});
        if (!rec.key_id.empty())
            out.push_back({key, "k|" + name + "|" + std::string(rec.key_id), n});
        out.push_back({all, std::string(rec.project) + "|" + name, n});
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

// The usage event: its field names in order, the one place that defines it
// (README "Usage metering" documents them).
constexpr std::string_view kEventNames[kEventFields] = {
    "request_id",   "ts_ms",         "project",       "provider",       "model",
    "route",        "key_id",        "status",        "latency_ms",     "tokens_known",
    "input_tokens", "output_tokens", "cached_tokens", "cost_micro_usd", "fallback_reason"};

// The decimal digits of v, written backwards ending at `end`; returns
// where they begin.
char *decimal_backwards(char *end, uint64_t v) {
    static const char kPairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    while (v >= 100) {  // two digits per division
        const char *d = kPairs + 2 * (v % 100);
        v /= 100;
        *--end = d[1];
        *--end = d[0];
    }
    if (v >= 10) {
        *--end = kPairs[2 * v + 1];
        *--end = kPairs[2 * v];
    } else {
        *--end = static_cast<char>('0' + v);
    }
    return end;
}

// rec's event values in kEventNames' order; numbers are formatted into
// `digits` (one 24-byte slot each), strings are views of rec.
void event_values(const MeterRecord &rec, std::string_view (&v)[kEventFields],
                  char (&digits)[kEventFields][24]) {
    const TokenUsage &u = rec.usage;
    auto num = [&](size_t i, uint64_t n, bool negative) {
        char *end = digits[i] + sizeof digits[i];
        char *p = decimal_backwards(end, n);
        if (negative) *--p = '-';
        v[i] = std::string_view(p, static_cast<size_t>(end - p));
    };
    auto snum = [&](size_t i, int64_t n) {
        num(i, n < 0 ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n), n < 0);
    };
    v[0] = rec.request_id;
    snum(1, rec.at_ms);
    v[2] = rec.project;
    v[3] = rec.provider;
    v[4] = rec.model.substr(0, kMaxModel);
    v[5] = rec.route;
    v[6] = rec.key_id;
    num(7, rec.status, false);
    num(8, rec.latency_ms, false);
    v[9] = u.known ? "1" : "0";
    num(10, u.input, false);
    num(11, u.output, false);
    num(12, u.cached, false);
    snum(13, rec.cost_micro);
    v[14] = rec.fallback_reason;
}

void append_bulk(std::string &out, std::string_view s) {
    out.append("$").append(std::to_string(s.size())).append("\r\n").append(s).append("\r\n");
}

}  // namespace

std::vector<std::string> usage_event_fields(const MeterRecord &rec) {
    std::string_view v[kEventFields];
    char digits[kEventFields][24];
    event_values(rec, v, digits);
    std::vector<std::string> out;
    out.reserve(2 * kEventFields);
    for (size_t i = 0; i < kEventFields; i++) {
        out.emplace_back(kEventNames[i]);
        out.emplace_back(v[i]);
    }
    return out;
}

// The values only (the batch script names the fields): one resize of `out`
// by a bound (values, 20 digits per length, slack for the fixed-size copies
// of the lengths), cut back at the end (issue 18: integers formatted in
// place, no snprintf, no per-value append).
void append_usage_event_args(std::string &out, const MeterRecord &rec) {
    std::string_view v[kEventFields];
    char digits[kEventFields][24];
    event_values(rec, v, digits);
    size_t size = 0;
    for (size_t i = 0; i < kEventFields; i++) size += 1 + 20 + 2 + v[i].size() + 2;
    size_t at = out.size();
    out.resize(at + size + 24);
    char *const start = &out[at];
    char *p = start;
    for (size_t i = 0; i < kEventFields; i++) {
        *p++ = '$';
        const size_t n = v[i].size();
        if (n < 100) {  // most values: one or two digits, written directly
            if (n >= 10) *p++ = static_cast<char>('0' + n / 10);
            *p++ = static_cast<char>('0' + n % 10);
        } else {
            // The length's digits end at len + 24; a fixed 24-byte copy from
            // their first stays inside len and inside out's slack.
            char len[48];
            char *l = decimal_backwards(len + 24, n);
            std::memcpy(p, l, 24);
            p += len + 24 - l;
        }
        *p++ = '\r';
        *p++ = '\n';
        if (!v[i].empty()) std::memcpy(p, v[i].data(), v[i].size());
        p += v[i].size();
        *p++ = '\r';
        *p++ = '\n';
    }
    out.resize(at + static_cast<size_t>(p - start));
}

// The batch script, made once from kEventNames: each XADD names the fields
// itself, so an event carries only its values (issue 18: ~15 % less Redis
// CPU per event than a script that unpacks name/value pairs, and half the
// bytes the worker formats). ARGV[1] is MAXLEN, then the events' values.
// The cap is applied once per batch by one XTRIM after the XADDs, not by
// MAXLEN ~ on each XADD: the same entries and the same ~cap, 3 arguments
// fewer per event and one trim check per batch instead of 100 (issue 18,
// s6: 2.67 against 2.87 us of Redis CPU per event, bench/redis_event_cost.py).
const std::string &usage_events_script() {
    static const std::string script = [] {
        std::string call = "redis.call('XADD', KEYS[1], '*'";
        for (size_t i = 0; i < kEventFields; i++)
            call += ", '" + std::string(kEventNames[i]) + "', ARGV[i + " + std::to_string(i) + "]";
        return "for i = 2, #ARGV, " + std::to_string(kEventFields) + " do\n  " + call +
               ")\nend\nredis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])\nreturn 0";
    }();
    return script;
}

std::string usage_events_batch_head(std::string_view stream, size_t events) {
    std::string out = "*" + std::to_string(5 + kEventFields * events) + "\r\n";
    append_bulk(out, "EVAL");
    append_bulk(out, usage_events_script());
    append_bulk(out, "1");
    append_bulk(out, stream);
    append_bulk(out, std::to_string(kUsageEventsMaxLen));
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
