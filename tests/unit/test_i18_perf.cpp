// Issue 18: the hit path's batched metering forms (lib/metering.h) say
// exactly what the per-request forms say.
#include <criterion/criterion.h>

#include <map>
#include <string>
#include <vector>

#include "lib/metering.h"

using namespace byok;

namespace {

MeterRecord record(uint64_t in, uint64_t out, bool known = true) {
    MeterRecord r;
    r.request_id = "0123456789abcdef0123456789abcdef";
    r.project = "acme";
    r.provider = "openai";
    r.model = "gpt-4o-mini";
    r.route = "byok";
    r.key_id = "k1";
    r.day = "20260101";
    r.at_ms = 1700000000123;
    r.status = 200;
    r.latency_ms = 12;
    r.usage.known = known;
    r.usage.input = in;
    r.usage.output = out;
    r.cost_micro = (int64_t)(in + out);
    return r;
}

// Reads one RESP array of bulk strings starting at `at`.
std::vector<std::string> resp_array(const std::string &s, size_t &at) {
    std::vector<std::string> out;
    cr_assert_eq(s[at], '*');
    size_t eol = s.find("\r\n", at);
    size_t n = std::stoul(s.substr(at + 1, eol - at - 1));
    at = eol + 2;
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(s[at], '$');
        eol = s.find("\r\n", at);
        size_t len = std::stoul(s.substr(at + 1, eol - at - 1));
        out.push_back(s.substr(eol + 2, len));
        at = eol + 2 + len + 2;
    }
    return out;
}

}  // namespace

// s5: the script names the 15 fields and the batch carries only the
// values: 5 + 15 n arguments (the old layout had 6 + 30 n), and the
// script's XADD names them in usage_event_fields() order, each paired with
// its value's offset, so the stream entry is field for field that event.
Test(i18_perf, i18_05_event_batch_is_one_command_with_each_events_values) {
    std::vector<MeterRecord> recs = {record(9, 2), record(100, 0, false)};
    recs[1].fallback_reason = "upstream_503";
    std::string cmd = usage_events_batch_head("byok:usage:events", recs.size());
    for (const auto &r : recs) append_usage_event_args(cmd, r);
    size_t at = 0;
    auto argv = resp_array(cmd, at);
    cr_assert_eq(at, cmd.size(), "exactly one whole command");
    const size_t width = usage_event_fields(recs[0]).size() / 2;
    cr_assert_eq(width, 15u);
    cr_assert_eq(argv.size(), 5 + width * recs.size());
    cr_assert_eq(argv[0], "EVAL");
    cr_assert_eq(argv[1], usage_events_script());
    cr_assert_eq(argv[2], "1");
    cr_assert_eq(argv[3], "byok:usage:events");
    cr_assert_eq(argv[4], std::to_string(kUsageEventsMaxLen));
    const std::string &script = argv[1];
    cr_assert_neq(script.find("for i = 2, #ARGV, 15 do"), std::string::npos, "%s", script.c_str());
    size_t from = 0;
    for (size_t k = 0; k < width; k++) {
        std::string pair =
            "'" + usage_event_fields(recs[0])[2 * k] + "', ARGV[i + " + std::to_string(k) + "]";
        size_t found = script.find(pair, from);
        cr_assert_neq(found, std::string::npos, "field %zu out of order: %s", k, script.c_str());
        from = found + pair.size();
    }
    for (size_t i = 0; i < recs.size(); i++) {
        std::vector<std::string> fields = usage_event_fields(recs[i]);
        for (size_t k = 0; k < width; k++)
            cr_assert_eq(argv[5 + i * width + k], fields[2 * k + 1], "event %zu field %zu", i, k);
    }
    cr_assert_eq(argv[5 + 14], "", "an empty value is kept");
    cr_assert_eq(argv[5 + width + 14], "upstream_503");
}

Test(i18_perf, i18_05_summed_rows_expand_to_the_sum_of_per_request_increments) {
    Layout l;
    std::vector<MeterRecord> recs = {record(9, 2), record(100, 5), record(0, 0, false)};
    std::map<std::pair<std::string, std::string>, int64_t> one_by_one, summed;
    MeterTotals t;
    for (const auto &r : recs) {
        for (const auto &i : meter_increments(l, r)) one_by_one[{i.key, i.field}] += i.by;
        add_totals(t, meter_totals(r));
    }
    for (const auto &i : meter_increments(l, recs[0], t)) summed[{i.key, i.field}] += i.by;
    cr_assert(one_by_one == summed);
    cr_assert_eq(t.requests, 3);
    cr_assert_eq(t.unknown, 1);
}
