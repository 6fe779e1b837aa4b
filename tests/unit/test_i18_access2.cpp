// Issue 18, session 5 (the access handler): the upstream plan is views of
// the catalog and the request, and the body scanner's fast skips read the
// same as the byte-at-a-time automaton at every split.
#include <criterion/criterion.h>

#include "lib/body.h"
#include "lib/gateway.h"
#include "lib/record.h"

#include "tests/unit/test_support.h"

using namespace byok;

namespace {

KeyRecord record(const std::string &secret, const std::string &id) {
    KeyRecord r;
    r.sealed = seal(test::test_ring(), secret, key_binding("acme", "openai", ""));
    r.id = id;
    r.key_hint = "sk-...";
    r.created_at = r.updated_at = "2026-11-22T04:31:00Z";
    return r;
}

const Catalog &catalog() {
    static const Catalog cat = Catalog::builtin();
    return cat;
}

GatewayConfig config() {
    GatewayConfig cfg;
    cfg.catalog = &catalog();
    cfg.ring = &test::test_ring();
    cfg.system_key = [](std::string_view) -> const SecretString * { return nullptr; };
    return cfg;
}

}  // namespace

Test(i18_access2, i18_access2_04_upstream_plan_views_the_catalog_url_and_the_request) {
    static const GatewayConfig cfg = config();
    GatewaySnapshot snap =
        build_snapshot({{"project", "acme"}, {"id", "g1"}, {"revoked", "0"}},
                       {{"name", "Acme"}, {"tier", "pro"}, {"fallback", "auto"}},
                       {{"openai", serialize_key_set({record("sk-live-0001", "k_000000000001")})}});
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
    const Provider *openai = catalog().find("openai");
    cr_assert_eq(&up.base(), &openai->openai_base, "the catalog's URL, not a copy");
    cr_assert(
        up.rest.data() >= uri.data() && up.rest.data() + up.rest.size() <= uri.data() + uri.size(),
        "the rest is a view of the request");
    cr_assert_not(up.pin);
    // The parts the glue joins give the URL origin() + path + rest gave.
    std::string joined = up.base().scheme + "://" + up.host + up.base().path + std::string(up.rest);
    cr_assert_eq(joined,
                 openai->openai_base.origin() + openai->openai_base.path + "/chat/completions?x=1");
}
