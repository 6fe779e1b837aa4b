// Issue 18, session 6 (s6-meter): the usage event batch and the per-request
// metering record, cheaper for Redis and for the worker, the same entries.
#include <criterion/criterion.h>

#include <string>
#include <vector>

#include "lib/metering.h"

using namespace byok;

namespace {

size_t count(const std::string &s, const std::string &what) {
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) n++;
    return n;
}

}  // namespace

// The cap is applied once per batch: one XTRIM MAXLEN ~ ARGV[1] after the
// loop of XADDs, and no XADD carries MAXLEN (old code: MAXLEN ~ on every
// XADD, no XTRIM).
Test(i18_meter3, i18_meter3_01_batch_trims_once_after_the_xadds) {
    const std::string &script = usage_events_script();
    cr_assert_eq(count(script, "MAXLEN"), 1u, "%s", script.c_str());
    cr_assert_eq(count(script, "'XTRIM'"), 1u, "%s", script.c_str());
    cr_assert_eq(count(script, "'XADD'"), 1u, "%s", script.c_str());
    size_t loop_end = script.find("\nend\n");
    size_t xtrim = script.find("redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])");
    cr_assert_neq(loop_end, std::string::npos, "%s", script.c_str());
    cr_assert_neq(xtrim, std::string::npos, "%s", script.c_str());
    cr_assert_gt(xtrim, loop_end, "the trim runs once, after the loop: %s", script.c_str());
    cr_assert_neq(script.find("redis.call('XADD', KEYS[1], '*', 'request_id', ARGV[i + 0]"),
                  std::string::npos, "the XADD names its ID right after the key: %s",
                  script.c_str());
    // The batch still passes the cap as ARGV[1].
    std::string head = usage_events_batch_head("byok:usage:events", 1);
    cr_assert_neq(head.find("$6\r\n" + std::to_string(kUsageEventsMaxLen) + "\r\n"),
                  std::string::npos);
}

namespace {

// The bulk strings of a run of RESP bulk strings (no array header).
std::vector<std::string> bulks(std::string_view s) {
    std::vector<std::string> out;
    size_t at = 0;
    while (at < s.size()) {
        cr_assert_eq(s[at], '$', "at %zu", at);
        size_t eol = s.find("\r\n", at);
        cr_assert_neq(eol, std::string_view::npos);
        size_t len = std::stoul(std::string(s.substr(at + 1, eol - at - 1)));
        cr_assert_eq(std::to_string(len), std::string(s.substr(at + 1, eol - at - 1)),
                     "a canonical length");
        out.emplace_back(s.substr(eol + 2, len));
        cr_assert_eq(s.substr(eol + 2 + len, 2), "\r\n");
        at = eol + 2 + len + 2;
    }
    return out;
}

std::vector<std::string> values_of(const MeterRecord &r) {
    std::vector<std::string> out;
    auto fields = usage_event_fields(r);
    for (size_t i = 1; i < fields.size(); i += 2) out.push_back(fields[i]);
    return out;
}

}  // namespace

// The one-pass writer at every length and digit-count boundary: a string
// of 0..1100 bytes (lengths of 1, 2, 3 and 4 digits), integers at 10^k - 1,
// 10^k and 10^k + 1 for every k, both signs; each event's bulk strings are
// the values usage_event_fields() spells (std::to_string for numbers).
Test(i18_meter3, i18_meter3_02_event_values_at_every_length_and_digit_boundary) {
    std::vector<uint64_t> ns = {0,
                                1,
                                2,
                                UINT64_MAX,
                                UINT64_MAX - 1,
                                static_cast<uint64_t>(INT64_MAX),
                                static_cast<uint64_t>(INT64_MAX) + 1};
    for (uint64_t p = 10; p <= 10000000000000000000ULL; p *= 10) {
        ns.push_back(p - 1);
        ns.push_back(p);
        ns.push_back(p + 1);
        if (p > UINT64_MAX / 10) break;
    }
    const std::string big(1100, 'x');
    for (size_t len : {0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 1001, 1100}) {
        for (uint64_t n : ns) {
            MeterRecord r;
            const std::string rid = big.substr(0, len);
            r.request_id = rid;
            r.project = "acme";
            r.provider = "openai";
            const std::string model = big.substr(0, len % 200);  // capped at kMaxModel
            r.model = model;
            r.route = "system";
            r.key_id = rid;
            r.fallback_reason = rid;
            r.at_ms = static_cast<int64_t>(n);  // wraps to negative past INT64_MAX
            r.cost_micro = -static_cast<int64_t>(n / 2);
            r.status = static_cast<unsigned>(n);
            r.latency_ms = n;
            r.usage = {n % 2 == 0, n, n / 3, n / 7, 0};
            std::string out = "keep";
            append_usage_event_args(out, r);
            cr_assert_eq(out.substr(0, 4), "keep");
            cr_assert(bulks(std::string_view(out).substr(4)) == values_of(r), "len %zu n %llu", len,
                      static_cast<unsigned long long>(n));
        }
    }
}

// A batch holds exactly the events appended, whatever its first size: it
// grows across events (reserve 0, 1, 100 bytes, the glue's 25,600) without
// losing or reordering a byte, and matches append_usage_event_args().
Test(i18_meter3, i18_meter3_03_batch_grows_and_holds_each_event_in_order) {
    const std::string long_id(700, 'r');
    for (size_t reserve : {0, 1, 100, 25600}) {
        UsageEventBatch batch(reserve);
        std::string expected;
        for (int i = 0; i < 150; i++) {
            MeterRecord r;
            const std::string rid = i % 10 == 0 ? long_id : "req-" + std::to_string(i);
            r.request_id = rid;
            r.project = "acme";
            r.provider = "anthropic";
            r.model = "claude-3-5-haiku";
            r.route = "byok";
            r.key_id = "k1";
            r.at_ms = 1764567890123 + i;
            r.status = 200;
            r.latency_ms = static_cast<uint64_t>(i);
            r.usage = {i % 3 != 0, static_cast<uint64_t>(i) * 1000, 7, 0, 0};
            r.cost_micro = i * 11;
            batch.append(r);
            append_usage_event_args(expected, r);
            cr_assert_eq(batch.events(), static_cast<size_t>(i + 1));
        }
        cr_assert_eq(std::string(batch.args()), expected, "reserve %zu", reserve);
        cr_assert_eq(bulks(batch.args()).size(), 150u * 15u);
    }
    UsageEventBatch empty;
    cr_assert_eq(empty.events(), 0u);
    cr_assert(empty.args().empty());
    // Moved (the glue's flush moves batches between its lists): the target
    // holds the events, the source is empty and takes new ones.
    MeterRecord r;
    r.request_id = "r1";
    UsageEventBatch a(64);
    a.append(r);
    std::string one;
    append_usage_event_args(one, r);
    UsageEventBatch b(std::move(a));
    cr_assert_eq(std::string(b.args()), one);
    cr_assert_eq(b.events(), 1u);
    cr_assert_eq(a.events(), 0u);  // NOLINT(bugprone-use-after-move): the point
    cr_assert(a.args().empty());
    a.append(r);
    a.append(r);
    cr_assert_eq(std::string(a.args()), one + one);
    b = std::move(a);
    cr_assert_eq(b.events(), 2u);
    cr_assert(a.args().empty());
}
