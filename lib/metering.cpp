#include "lib/metering.h"

#include <algorithm>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

struct Pow10 {
    uint64_t of[20];
    constexpr Pow10() : of() {
        uint64_t p = 1;
        for (uint64_t &v : of) {
            v = p;
            p *= 10;  // wraps after 10^19, unused
        }
    }
};
constexpr Pow10 kPow10;

// How many decimal digits v has (1..20), without a loop: the bit length
// gives it to within one (x 1233 / 4096 ~ log10(2)), a power of ten
// settles it. v | 1 has as many digits as v and makes 0 count as 1.
size_t decimal_size(uint64_t v) {
    const uint64_t x = v | 1;
    const unsigned t = static_cast<unsigned>(64 - __builtin_clzll(x)) * 1233 >> 12;
    return t + 1 - (x < kPow10.of[t] ? 1 : 0);
}

// An integer's magnitude and sign, whatever its type.
struct Integer {
    uint64_t magnitude;
    bool negative;
};
Integer integer(int64_t v) {
    return {v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v), v < 0};
}
Integer integer(uint64_t v) { return {v, false}; }
Integer integer(unsigned v) { return {v, false}; }

// rec's event values in kEventNames' order, each handed to `out` as a
// string (out.str) or an integer (out.num): the one place that maps a
// record to its event; both forms below are made by it.
template <class Out>
void each_event_value(const MeterRecord &rec, Out &out) {
    const TokenUsage &u = rec.usage;
    out.str(rec.request_id);
    out.num(integer(rec.at_ms));
    out.str(rec.project);
    out.str(rec.provider);
    out.str(rec.model.substr(0, kMaxModel));
    out.str(rec.route);
    out.str(rec.key_id);
    out.num(integer(rec.status));
    out.num(integer(rec.latency_ms));
    out.num(integer(u.known ? 1u : 0u));  // "1" or "0", as a number: the short path
    out.num(integer(u.input));
    out.num(integer(u.output));
    out.num(integer(u.cached));
    out.num(integer(rec.cost_micro));
    out.str(rec.fallback_reason);
}

// The name/value pairs, as strings (the readable form, for tests and tools).
struct EventPairs {
    std::vector<std::string> out;
    size_t next = 0;
    void str(std::string_view s) {
        out.emplace_back(kEventNames[next++]);
        out.emplace_back(s);
    }
    void num(Integer v) {
        out.emplace_back(kEventNames[next++]);
        out.push_back((v.negative ? "-" : "") + std::to_string(v.magnitude));
    }
};

// An upper bound of the RESP bytes of the values: "$", up to 20 digits of
// length, "\r\n", the value (an integer: up to 21 bytes), "\r\n".
struct EventBound {
    size_t bytes = 0;
    void str(std::string_view s) { bytes += 1 + 20 + 2 + s.size() + 2; }
    void num(Integer) { bytes += 1 + 20 + 2 + 21 + 2; }
};
size_t event_bound(const MeterRecord &rec) {
    EventBound bound;
    each_event_value(rec, bound);
    return bound.bytes;
}

// "\r\n" at p; returns what follows.
char *crlf(char *p) {
    std::memcpy(p, "\r\n", 2);
    return p + 2;
}

// "$<n>\r\n" at p; returns what follows. Inline: 15 calls per event
// (~90 instructions of the ~870 an event costs).
inline char *bulk_head(char *p, size_t n) {
    *p++ = '$';
    if (n < 10) {  // under 100 (every value but a long string): no division
        *p++ = static_cast<char>('0' + n);
    } else if (n < 100) {
        *p++ = static_cast<char>('0' + n / 10);
        *p++ = static_cast<char>('0' + n % 10);
    } else {
        p += decimal_size(n);
        decimal_backwards(p, n);
    }
    return crlf(p);
}

// Each value as a RESP bulk string, written forward in one pass: integers
// in place, their length known from their digit count. Each call works on
// a local copy of `p` (a char store could alias the member, which would be
// reloaded after every byte).
struct EventResp {
    char *p;
    void str(std::string_view s) {
        char *q = bulk_head(p, s.size());
        if (!s.empty()) std::memcpy(q, s.data(), s.size());
        p = crlf(q + s.size());
    }
    void num(Integer v) {
        if (v.magnitude < 10 && !v.negative) {  // most counts of an event (issue 18, s7)
            std::memcpy(p, "$1\r\n0\r\n", 7);
            p[4] = static_cast<char>('0' + v.magnitude);
            p += 7;
            return;
        }
        const size_t n = decimal_size(v.magnitude);
        char *q = bulk_head(p, n + (v.negative ? 1 : 0));
        if (v.negative) *q++ = '-';
        q += n;
        decimal_backwards(q, v.magnitude);
        p = crlf(q);
    }
};
// Writes rec's values at `at` (event_bound(rec) bytes free); returns the end.
char *write_event(char *at, const MeterRecord &rec) {
    EventResp resp{at};
    each_event_value(rec, resp);
    return resp.p;
}

void append_bulk(std::string &out, std::string_view s) {
    out.append("$").append(std::to_string(s.size())).append("\r\n").append(s).append("\r\n");
}

}  // namespace

std::vector<std::string> usage_event_fields(const MeterRecord &rec) {
    EventPairs pairs;
    pairs.out.reserve(2 * kEventFields);
    each_event_value(rec, pairs);
    return std::move(pairs.out);
}

// The values only (the batch script names the fields), in one pass (issue
// 18, s6: no array of views and digit buffers filled first and copied
// after).
void append_usage_event_args(std::string &out, const MeterRecord &rec) {
    const size_t at = out.size();
    out.resize(at + event_bound(rec));
    out.resize(static_cast<size_t>(write_event(&out[at], rec) - out.data()));
}

UsageEventBatch::UsageEventBatch(size_t reserve)
    : buf_(reserve > 0 ? new char[reserve] : nullptr), cap_(reserve) {}

void UsageEventBatch::append(const MeterRecord &rec) {
    const size_t bound = event_bound(rec);
    if (cap_ - used_ < bound) {
        const size_t cap = std::max(2 * cap_, used_ + bound);
        std::unique_ptr<char[]> grown(new char[cap]);
        if (used_ > 0) std::memcpy(grown.get(), buf_.get(), used_);
        buf_ = std::move(grown);
        cap_ = cap;
    }
    used_ = static_cast<size_t>(write_event(buf_.get() + used_, rec) - buf_.get());
    events_++;
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

// Sixteen digits in one pass where SSE2 exists (issue 18, s7: a byte at a
// time cost ~120 instructions per request id): each byte's two nibbles
// side by side, then '0' + n, plus the gap to 'a' where n > 9.
void hex_id(uint64_t hi, uint64_t lo, char *out) {
    for (uint64_t v : {hi, lo}) {
#if defined(__SSE2__)
        const __m128i bytes = _mm_cvtsi64_si128(static_cast<long long>(__builtin_bswap64(v)));
        const __m128i low4 = _mm_set1_epi8(0x0f);
        const __m128i nibbles = _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), low4),
                                                  _mm_and_si128(bytes, low4));
        const __m128i letters =
            _mm_and_si128(_mm_cmpgt_epi8(nibbles, _mm_set1_epi8(9)), _mm_set1_epi8('a' - '0' - 10));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(out),
                         _mm_add_epi8(_mm_add_epi8(nibbles, _mm_set1_epi8('0')), letters));
#else
        for (int i = 15; i >= 0; i--, v >>= 4) out[i] = "0123456789abcdef"[v & 15];
#endif
        out += 16;
    }
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
