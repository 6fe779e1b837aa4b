// Issue 18, the cache-hit path: the lib/ pieces the hit path now uses
// without copies — the per-request key opener of a once-built
// GatewayConfig, the usage counter key of a pre-formatted day, the usage
// event written in one pass, and the scanners' in-place runs.
#include <criterion/criterion.h>

#include "lib/body.h"
#include "lib/gateway.h"
#include "lib/metering.h"
#include "lib/multipart.h"
#include "lib/record.h"
#include "lib/usage.h"
#include "lib/usage_scanner.h"

#include "tests/unit/test_support.h"

using namespace byok;

namespace {

GatewaySnapshot snapshot() {
    KeyRecord r;
    r.sealed = seal(test::test_ring(), "sk-live-0001", key_binding("acme", "openai", ""));
    r.id = "k_000000000001";
    r.key_hint = "sk-...";
    r.created_at = r.updated_at = "2026-11-22T04:31:00Z";
    return build_snapshot({{"project", "acme"}, {"id", "g1"}, {"revoked", "0"}},
                          {{"name", "Acme"}, {"tier", "pro"}, {"fallback", "auto"}},
                          {{"openai", serialize_key_set({r})}});
}

GatewayConfig config() {
    static const Catalog cat = Catalog::builtin();
    GatewayConfig cfg;
    cfg.catalog = &cat;
    cfg.ring = &test::test_ring();
    cfg.system_key = [](std::string_view) -> const SecretString * { return nullptr; };
    return cfg;
}

GatewayRequest request() {
    GatewayRequestIn in;
    in.uri = "/v1/chat/completions";
    in.creds.authorization = "Bearer byok_0123456789abcdef";
    in.content_type = "application/json";
    return parse_gateway_request(in);
}

struct Opened {
    int calls = 0;
    const StoredKey *last = nullptr;
};

void open_counting(const void *arg, const KeyRing &r, std::string_view pid, const StoredKey &k,
                   SecretString *out) {
    auto *o = static_cast<Opened *>(const_cast<void *>(arg));
    o->calls++;
    o->last = &k;
    *out = open_stored_key(r, pid, k);
}

// The RESP bulk strings of `s` from `at` on.
std::vector<std::string> bulks(const std::string &s) {
    std::vector<std::string> out;
    size_t at = 0;
    while (at < s.size()) {
        cr_assert_eq(s[at], '$');
        size_t eol = s.find("\r\n", at);
        size_t len = std::stoul(s.substr(at + 1, eol - at - 1));
        out.push_back(s.substr(eol + 2, len));
        cr_assert_eq(s.substr(eol + 2 + len, 2), "\r\n");
        at = eol + 2 + len + 2;
    }
    return out;
}

}  // namespace

Test(i18_hotpath, i18_04_one_config_serves_requests_through_their_own_key_opener) {
    const GatewayConfig cfg = config();  // built once, shared by the requests
    GatewaySnapshot snap = snapshot();
    Opened a, b;
    for (Opened *o : {&a, &b}) {
        RouteInput in;
        KeyAttempts att;
        RoutePlan p = plan_route(cfg, snap, request(), "POST", true, "gpt-4o", &in, &att,
                                 KeyOpener{open_counting, o});
        cr_assert(p.action == RoutePlan::Action::Proxy);
        cr_assert_eq(p.key.view(), "sk-live-0001");
    }
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(a.last, &snap.keys[0], "the opener sees the snapshot's own record");
    // Without an opener the record is decrypted as before.
    RouteInput in;
    cr_assert_eq(plan_route(cfg, snap, request(), "POST", true, "gpt-4o", &in).key.view(),
                 "sk-live-0001");
}

Test(i18_hotpath, i18_04_the_content_type_is_a_view_and_read_case_insensitively) {
    GatewayRequestIn in;
    in.uri = "/v1/chat/completions";
    in.creds.authorization = "Bearer byok_0123456789abcdef";
    std::string ct = "Application/JSON; charset=utf-8";
    in.content_type = ct;
    GatewayRequest req = parse_gateway_request(in);
    cr_assert_eq(req.content_type.data(), ct.data(), "no copy of the header");
    cr_assert(req.body_kind == BodyKind::Json);
    cr_assert(body_kind(" MULTIPART/Form-Data; boundary=x") == BodyKind::Multipart);
    cr_assert(body_kind("application/vnd.api+JSON") == BodyKind::Json);
    cr_assert(body_kind("application/octet-stream") == BodyKind::Opaque);
}

Test(i18_hotpath, i18_04_usage_key_of_a_formatted_day_is_the_key_of_that_day) {
    Layout l;
    cr_assert_eq(usage_key(l, "acme", std::string_view("20251130")),
                 usage_key(l, "acme", int64_t{1764460800}));
}

Test(i18_hotpath, i18_04_usage_event_in_one_pass_holds_long_fields_and_extreme_numbers) {
    MeterRecord r;  // views (issue 18): the strings outlive the record
    const std::string rid(300, 'r'), model(500, 'm'), kid(200, 'k');
    r.request_id = rid;
    r.project = "acme";
    r.provider = "openai";
    r.model = model;  // capped at kMaxModel in the event
    r.route = "fallback";
    r.key_id = kid;
    r.fallback_reason = "upstream_503";
    r.at_ms = INT64_MIN;
    r.status = 4294967295u;
    r.latency_ms = UINT64_MAX;
    r.usage = {true, UINT64_MAX, UINT64_MAX, UINT64_MAX, 0};
    r.cost_micro = INT64_MIN;
    std::string out = "prefix";
    append_usage_event_args(out, r);
    cr_assert_eq(out.substr(0, 6), "prefix");
    std::vector<std::string> values;  // the batch carries values only
    auto fields = usage_event_fields(r);
    for (size_t i = 1; i < fields.size(); i += 2) values.push_back(fields[i]);
    cr_assert(bulks(out.substr(6)) == values);
    std::string twice;
    append_usage_event_args(twice, r);
    append_usage_event_args(twice, r);
    cr_assert_eq(twice, out.substr(6) + out.substr(6));
}

Test(i18_hotpath, i18_04_model_scanner_runs_stop_at_control_bytes_in_any_lane) {
    for (size_t at = 0; at < 40; at++) {
        std::string text(40, 'a');
        text[at] = '\x01';
        cr_assert_throw(find_model("{\"model\":\"m\",\"x\":\"" + text + "\"}"), Error);
        text[at] = '\xc3';  // high bytes are plain (UTF-8)
        auto m =
            find_model("{\"x\":\"" + text + "\",\"model\":\"gpt-" + text.substr(0, at) + "\"}");
        cr_assert(m.has_value());
        cr_assert_eq(m->model, "gpt-" + text.substr(0, at));
    }
}

Test(i18_hotpath, i18_04_usage_object_in_runs_at_every_split_and_at_the_capture_cap) {
    std::string body =
        "{\"model\":\"gpt-4o\",\"choices\":[{\"text\":\"a \\\"usage\\\" {x}\"}],"
        "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"prompt_tokens_details\":"
        "{\"cached_tokens\":3},\"note\":\"}{\\\"\"}}";
    TokenUsage whole = UsageScanner::scan(body);
    cr_assert(whole.known);
    cr_assert_eq(whole.input, 9u);
    cr_assert_eq(whole.output, 2u);
    cr_assert_eq(whole.cached, 3u);
    for (size_t i = 0; i <= body.size(); i++) {
        for (size_t j = i; j <= body.size(); j += 7) {
            UsageScanner s;
            s.feed(std::string_view(body).substr(0, i));
            s.feed(std::string_view(body).substr(i, j - i));
            s.feed(std::string_view(body).substr(j));
            TokenUsage u = s.result();
            cr_assert(u.known && u.input == 9 && u.output == 2 && u.cached == 3, "split %zu/%zu", i,
                      j);
        }
    }
    // An object of exactly kMaxCapture bytes is read; one byte more is not.
    auto sized = [](size_t total) {
        std::string head = "{\"prompt_tokens\":5,\"pad\":\"";
        return "{\"usage\":" + head + std::string(total - head.size() - 2, 'x') + "\"}}";
    };
    cr_assert(UsageScanner::scan(sized(UsageScanner::kMaxCapture)).known);
    cr_assert_not(UsageScanner::scan(sized(UsageScanner::kMaxCapture + 1)).known);
}
