// Issue 18, session 5 (the access handler): the upstream plan is views of
// the catalog and the request, and the body scanner's fast skips read the
// same as the byte-at-a-time automaton at every split.
#include <criterion/criterion.h>

#include "lib/body.h"
#include "lib/gateway.h"
#include "lib/record.h"

#include "tests/unit/test_support.h"

using namespace byok;

Test(i18_access2, i18_access2_04_upstream_plan_views_the_catalog_url_and_the_request) {
    static const GatewayConfig cfg = test::gateway_config();
    GatewaySnapshot snap = build_snapshot(
        {{"project", "acme"}, {"id", "g1"}, {"revoked", "0"}},
        {{"name", "Acme"}, {"tier", "pro"}, {"fallback", "auto"}},
        {{"openai", serialize_key_set({test::openai_key("sk-live-0001", "k_000000000001")})}});
    GatewayRequestIn in;
    std::string uri = "/v1/chat/completions?x=1";
    in.uri = uri;
    in.creds.authorization = "Bearer byok_0123456789abcdef";
    in.content_type = "application/json";
    GatewayRequest req = parse_gateway_request(in);
    RouteInput input;
    RoutePlan p = plan_route(cfg, snap, req, "POST", true, "gpt-4o", &input);
    cr_assert(p.action == RoutePlan::Action::Proxy);
    UpstreamPlan up = plan_upstream(req, snap, p.decision, p.key, std::nullopt, false);
    const Provider *openai = test::builtin_catalog().find("openai");
    cr_assert_eq(&up.base(), &openai->openai_base, "the catalog's URL, not a copy");
    cr_assert(
        up.rest.data() >= uri.data() && up.rest.data() + up.rest.size() <= uri.data() + uri.size(),
        "the rest is a view of the request");
    cr_assert_not(up.pin);
    // The parts the glue joins give the URL origin() + path + rest gave.
    std::string joined =
        up.base().scheme + "://" + std::string(up.host()) + up.base().path + std::string(up.rest);
    cr_assert_eq(joined,
                 openai->openai_base.origin() + openai->openai_base.path + "/chat/completions?x=1");
}

namespace {

// The scanner's answer for `body` fed in two pieces split at `at`.
std::optional<ModelSpan> scan_split(std::string_view body, size_t at) {
    ModelScanner s;
    s.feed(body.substr(0, at));
    s.feed(body.substr(at));
    return s.finish();
}

bool refused(std::string_view body) {
    for (size_t at = 0; at <= body.size(); ++at) {
        try {
            scan_split(body, at);
            return false;
        } catch (const Error &) {
        }
    }
    return true;
}

}  // namespace

Test(i18_access2, i18_access2_05_whitespace_runs_between_tokens_at_every_split) {
    const std::string body =
        " \r\n{ \"model\" \t:\n \"gpt-4o\" ,\r\n \"messages\" : [ { \"role\" : \"user\" , "
        "\"n\" : -1.5e3 , \"t\" : true , \"x\" : null } ,\n [ ] , { } ] , \"stream\" :\ttrue "
        "}\n\t ";
    for (size_t at = 0; at <= body.size(); ++at) {
        auto m = scan_split(body, at);
        cr_assert(m.has_value(), "split at %zu", at);
        cr_assert_eq(m->model, "gpt-4o");
        cr_assert_eq(body.substr(m->begin, m->end - m->begin), "\"gpt-4o\"");
    }
    ModelScanner s;
    s.feed(body);
    s.finish();
    cr_assert(s.stream_facts().stream);
}

Test(i18_access2, i18_access2_05_whitespace_inside_a_token_or_after_the_object_is_refused) {
    cr_assert(refused("{\"model\":\"m\",\"n\":- 1}"));
    cr_assert(refused("{\"model\":\"m\",\"n\":1. 5}"));
    cr_assert(refused("{\"model\":\"m\",\"t\":tr ue}"));
    cr_assert(refused("{\"model\":\"m\"} x"));
    cr_assert(refused("{\"model\":\"m\"} {}"));
    cr_assert(refused("{\"model\":\"a\", \"model\" : \"b\"}"), "a second top-level model");
    cr_assert(refused(" \n "), "whitespace only is no object");
    cr_assert_not(refused("{\"model\":\"m\",\"n\":1 }"), "a number ends at whitespace");
}
