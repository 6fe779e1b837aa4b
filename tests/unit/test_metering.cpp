#include <criterion/criterion.h>

#include <string>
#include <vector>

#include "lib/metering.h"

using namespace byok;

namespace {

TokenUsage usage(uint64_t in, uint64_t out, uint64_t cached = 0) {
    TokenUsage u;
    u.known = true;
    u.input = in;
    u.output = out;
    u.cached = cached;
    return u;
}

std::string with_insert(std::string_view body, const BodyInsert &e) {
    std::string out(body.substr(0, e.offset));
    return out + e.bytes + std::string(body.substr(e.offset));
}

}  // namespace

Test(metering, i13_cost_is_exact_integer_micro_dollars) {
    ModelPrice p{"gpt-4o-mini*", parse_price("0.15"), parse_price("0.60"), parse_price("0.075")};
    // 1M uncached input = 0.15 $, 1M output = 0.60 $, 1M cached = 0.075 $.
    cr_assert_eq(cost_micro_usd(&p, usage(2000000, 1000000, 1000000)), 150000 + 600000 + 75000);
    // 10 input tokens = 1.5 micro-dollars → rounds to 2.
    cr_assert_eq(cost_micro_usd(&p, usage(10, 0)), 2);
    cr_assert_eq(cost_micro_usd(nullptr, usage(10, 10)), 0);
    cr_assert_eq(cost_micro_usd(&p, TokenUsage{}), 0);
    cr_assert_eq(micro_usd_string(825000), "0.825000");
    cr_assert_eq(micro_usd_string(12), "0.000012");
}

Test(metering, i13_counter_fields_are_written_and_read_in_one_format) {
    Layout l;
    MeterRecord r;
    r.project = "acme";
    r.provider = "openai";
    r.model = "ft:gpt-4o|odd:name";
    r.route = "byok";
    r.key_id = "k7";
    r.day = "20261130";
    r.usage = usage(12, 7, 4);
    r.cost_micro = 9;
    auto inc = meter_increments(l, r);
    bool saw_detail = false, saw_key = false, saw_all = false;
    for (const auto &i : inc) {
        bool global = i.key == l.meter_all("20261130");
        cr_assert(global || i.key == l.meter("acme", "20261130"), "%s", i.key.c_str());
        auto f = parse_meter_field(i.field, global);
        cr_assert(f.has_value(), "%s", i.field.c_str());
        if (f->kind == MeterField::Kind::Detail && f->metric == Metric::Input) {
            cr_assert_eq(f->provider, "openai");
            cr_assert_eq(f->route, "byok");
            cr_assert_eq(f->model, "ft:gpt-4o|odd:name");
            cr_assert_eq(i.by, 12);
            saw_detail = true;
        }
        if (f->kind == MeterField::Kind::GatewayKey && f->metric == Metric::Cost) {
            cr_assert_eq(f->key_id, "k7");
            cr_assert_eq(i.by, 9);
            saw_key = true;
        }
        if (f->kind == MeterField::Kind::Project && f->metric == Metric::Requests) {
            cr_assert_eq(f->project, "acme");
            saw_all = true;
        }
        cr_assert(f->metric != Metric::Unknown);  // tokens were known
    }
    cr_assert(saw_detail && saw_key && saw_all);
    r.usage = TokenUsage{};
    bool unknown = false;
    for (const auto &i : meter_increments(l, r)) {
        auto f = parse_meter_field(i.field, i.key == l.meter_all("20261130"));
        unknown = unknown || f->metric == Metric::Unknown;
    }
    cr_assert(unknown);
    cr_assert(!parse_meter_field("x|requests", false).has_value());
    cr_assert(!parse_meter_field("m|bogus|a|b|c", false).has_value());
}

Test(metering, i13_include_usage_is_injected_only_for_openai_streams_without_stream_options) {
    std::string body =
        R"({"model":"gpt-4o","messages":[{"role":"user","content":"{\"stream\":true}"}],"stream" : true})";
    auto e = plan_include_usage(true, "/chat/completions", body);
    cr_assert(e.has_value());
    cr_assert_eq(
        with_insert(body, *e),
        R"({"stream_options":{"include_usage":true},"model":"gpt-4o","messages":[{"role":"user","content":"{\"stream\":true}"}],"stream" : true})");
    cr_assert(plan_include_usage(true, "/completions?x=1", body).has_value());
    cr_assert(!plan_include_usage(false, "/chat/completions", body).has_value());  // native
    cr_assert(!plan_include_usage(true, "/embeddings", body).has_value());
    cr_assert(!plan_include_usage(true, "/chat/completions", R"({"model":"m","stream":false})")
                   .has_value());
    cr_assert(!plan_include_usage(true, "/chat/completions", R"({"model":"m"})").has_value());
    cr_assert(!plan_include_usage(true, "/chat/completions",
                                  R"({"stream":true,"stream_options":{"include_usage":false}})"));
    cr_assert(!plan_include_usage(true, "/chat/completions",
                                  R"({"messages":[{"stream":true}]})"));  // not top level
}

// Issue 18: the event's integers are formatted in place (two digits per
// step), not by to_string: every digit-count boundary reads back exactly.
Test(metering, i18_02_event_numbers_at_every_digit_boundary_match_to_string) {
    std::vector<uint64_t> ns = {0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, UINT64_MAX};
    for (uint64_t p = 10; p <= 1000000000000000000ULL; p *= 10) {
        ns.push_back(p - 1);
        ns.push_back(p);
    }
    for (uint64_t n : ns) {
        MeterRecord r;
        r.usage.known = true;
        r.usage.input = n;
        r.at_ms = -static_cast<int64_t>(n % 1000000007);
        r.cost_micro = static_cast<int64_t>(n / 3);
        std::string out;
        append_usage_event_args(out, r);
        // "$<len>\r\n<value>\r\n" per value, in usage_event_fields() order.
        auto value_of = [&](const std::string &name) {
            auto fields = usage_event_fields(r);
            size_t at = 0;
            for (size_t i = 0; i < fields.size(); i += 2) {
                cr_assert_eq(out[at], '$');
                size_t eol = out.find("\r\n", at);
                size_t len = std::stoul(out.substr(at + 1, eol - at - 1));
                if (fields[i] == name) return out.substr(eol + 2, len);
                at = eol + 2 + len + 2;
            }
            cr_assert_fail("%s", name.c_str());
            return std::string();
        };
        cr_assert_eq(value_of("input_tokens"), std::to_string(n));
        cr_assert_eq(value_of("ts_ms"), std::to_string(r.at_ms));
        cr_assert_eq(value_of("cost_micro_usd"), std::to_string(r.cost_micro));
    }
}
