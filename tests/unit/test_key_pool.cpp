// Issue 14: the gateway plan with several keys per provider — the key pool
// hook of GatewayConfig, the retry on a sibling key and its locations.
#include <criterion/criterion.h>

#include "lib/gateway.h"
#include "lib/record.h"

#include "tests/unit/test_support.h"

using namespace byok;

namespace {

GatewaySnapshot snapshot(const std::vector<KeyRecord> &keys, const char *policy = "auto") {
    return build_snapshot({{"project", "acme"}, {"id", "g1"}, {"revoked", "0"}},
                          {{"name", "Acme"}, {"tier", "pro"}, {"fallback", policy}},
                          {{"openai", serialize_key_set(keys)}});
}

GatewayRequest request() {
    GatewayRequestIn in;
    in.uri = "/v1/chat/completions";
    in.creds.authorization = "Bearer byok_0123456789abcdef";
    return parse_gateway_request(in);
}

}  // namespace

Test(key_pool, i14_02_without_a_pool_the_first_key_serves_and_the_sibling_next) {
    GatewaySnapshot snap = snapshot({test::openai_key("sk-first-0001", "k_000000000001"),
                                     test::openai_key("sk-second-0002", "k_000000000002")});
    RouteInput in;
    KeyAttempts att;
    RoutePlan p =
        plan_route(test::gateway_config(), snap, request(), "POST", true, "gpt-4o", &in, &att);
    cr_assert(p.action == RoutePlan::Action::Proxy);
    cr_assert_eq(p.key.view(), "sk-first-0001");
    cr_assert_eq(att.current, "k_000000000001");
    cr_assert_eq(in.project_keys.size(), 1u);  // one row per provider
    cr_assert_eq(proxy_location(in, p.decision, true), "@byok_keys");

    auto sib = plan_sibling(test::gateway_config(), snap, p.decision, &att);
    cr_assert(sib.has_value());
    cr_assert_eq(sib->key.view(), "sk-second-0002");
    cr_assert_eq(att.current, "k_000000000002");
    cr_assert_not(plan_sibling(test::gateway_config(), snap, p.decision, &att).has_value(),
                  "only once");
    UpstreamPlan up =
        plan_upstream(request(), snap, sib->decision, sib->key, std::nullopt, false, att.current);
    cr_assert_eq(up.host(), "api.openai.com");
}

Test(key_pool, i14_02_the_pool_decides_states_and_the_key) {
    GatewaySnapshot snap = snapshot({test::openai_key("sk-first-0001", "k_000000000001"),
                                     test::openai_key("sk-second-0002", "k_000000000002", 9)});
    GatewayConfig cfg = test::gateway_config();
    cfg.keys.states = [](const GatewaySnapshot &, RouteInput *in, KeyAttempts *) {
        in->project_keys.emplace_back("openai", KeyState::Usable);
    };
    cfg.keys.pick = [](const GatewaySnapshot &s, std::string_view provider,
                       KeyAttempts *a) -> const StoredKey * {
        const StoredKey *k = s.find_key(provider, "k_000000000002");
        if (a->tried_id(k->id)) return nullptr;
        a->tried.push_back(k->id);
        return k;
    };
    RouteInput in;
    KeyAttempts att;
    RoutePlan p = plan_route(cfg, snap, request(), "POST", true, "gpt-4o", &in, &att);
    cr_assert_eq(p.key.view(), "sk-second-0002");
}

Test(key_pool, i14_03_all_keys_cooling_under_policy_off_is_429_with_retry_after) {
    GatewaySnapshot snap = snapshot({test::openai_key("sk-first-0001", "k_000000000001")}, "off");
    GatewayConfig cfg = test::gateway_config();
    cfg.keys.states = [](const GatewaySnapshot &, RouteInput *ri, KeyAttempts *) {
        ri->project_keys.emplace_back("openai", KeyState::Unhealthy);
        ri->keys_retry_in_s.emplace_back("openai", 12);
    };
    RouteInput in;
    RoutePlan p = plan_route(cfg, snap, request(), "POST", true, "gpt-4o", &in);
    cr_assert(p.action == RoutePlan::Action::Error);
    cr_assert_eq(p.error.status, 429);
    cr_assert_eq(p.error.code, "keys_unavailable");
    cr_assert_eq(p.error.retry_after, 12);
    cfg.keys.states = [](const GatewaySnapshot &, RouteInput *ri, KeyAttempts *) {
        ri->project_keys.emplace_back("openai", KeyState::Unhealthy);
        ri->keys_retry_in_s.emplace_back("openai", 0);  // all invalid
    };
    p = plan_route(cfg, snap, request(), "POST", true, "gpt-4o", &in);
    cr_assert_eq(p.error.status, 503);
}

Test(key_pool, i14_03_sibling_retry_rules) {
    for (int s : {0, 401, 402, 403, 429, 500, 502, 503, 504}) cr_assert(key_failure(s), "%d", s);
    for (int s : {200, 400, 404, 413}) cr_assert_not(key_failure(s), "%d", s);
    RouteInput in;
    in.catalog = &test::builtin_catalog();
    in.policy = Policy::Auto;
    in.fallback_provider = "openrouter";
    in.system_keys = {"openrouter"};
    RouteDecision d;
    d.route = Route::Byok;
    d.provider = d.target = test::builtin_catalog().find("openai");
    cr_assert_eq(sibling_location(in, d), "@byok_retry");
    in.fallback_on_rate_limit = false;
    cr_assert_eq(sibling_location(in, d), "@byok_fallback_5xx");
    in.policy = Policy::Off;
    cr_assert_eq(sibling_location(in, d), "@byok_direct");
}

Test(key_pool, i14_04_an_expired_gateway_key_is_refused) {
    GatewaySnapshot snap = build_snapshot({{"project", "acme"},
                                           {"id", "g1"},
                                           {"revoked", "0"},
                                           {"expires_at", "2020-01-01T00:00:00Z"}},
                                          {{"tier", "pro"}}, {});
    cr_assert_not(snapshot_error(snap).has_value());  // no clock: not checked
    auto e = snapshot_error(snap, 1796040000);
    cr_assert(e.has_value());
    cr_assert_eq(e->status, 401);
    cr_assert_eq(e->message, "this gateway API key has expired");
    cr_assert_eq(decode_snapshot(encode_snapshot(snap)).key_expires_at, 1577836800);
}
