// Issue 18, session 6 (the access handler): wipes without OPENSSL_cleanse,
// a key's health read once per route decision, one length switch for the
// credential headers, the upstream host without a string per request.
#include <criterion/criterion.h>

#include "lib/client_api.h"
#include "lib/gateway.h"
#include "lib/record.h"

#include "tests/unit/test_support.h"

using namespace byok;

namespace {

GatewaySnapshot two_keys() {
    return build_snapshot(
        {{"project", "acme"}, {"id", "g1"}, {"revoked", "0"}},
        {{"name", "Acme"}, {"tier", "pro"}, {"fallback", "auto"}},
        {{"openai", serialize_key_set({test::openai_key("sk-first-0001", "k_000000000001"),
                                       test::openai_key("sk-second-0002", "k_000000000002")})}});
}

GatewayRequest request() {
    GatewayRequestIn in;
    in.uri = "/v1/chat/completions";
    in.creds.authorization = "Bearer byok_0123456789abcdef";
    return parse_gateway_request(in);
}

// What the pool's pick saw in attempts->usable, per call.
std::vector<std::vector<uint8_t>> g_seen;

GatewayConfig recording_pool() {
    GatewayConfig cfg = test::gateway_config();
    // The first key cannot serve, the second can: read "once" here.
    cfg.keys.states = [](const GatewaySnapshot &s, RouteInput *in, KeyAttempts *a) {
        in->project_keys.emplace_back("openai", KeyState::Usable);
        for (size_t i = 0; i < s.keys.size(); i++) a->usable.push_back(i == 0 ? 0 : 1);
    };
    cfg.keys.pick = [](const GatewaySnapshot &s, std::string_view provider,
                       KeyAttempts *a) -> const StoredKey * {
        g_seen.emplace_back(a->usable.begin(), a->usable.end());
        for (size_t i = 0; i < s.keys.size(); i++) {
            const StoredKey &k = s.keys[i];
            bool usable = i < a->usable.size() ? a->usable[i] != 0 : true;
            if (k.provider != provider || a->tried_id(k.id) || !usable) continue;
            a->tried.push_back(k.id);
            return &k;
        }
        return nullptr;
    };
    return cfg;
}

}  // namespace

Test(i18_access3, i18_access3_01_wipe_zeroes_every_byte_of_any_length) {
    for (size_t n : {1u, 7u, 15u, 16u, 33u, 112u, 513u}) {
        std::string buf(n + 2, 'x');
        wipe(buf.data() + 1, n);
        cr_assert_eq(buf.front(), 'x');
        cr_assert_eq(buf.back(), 'x', "no byte past the range");
        for (size_t i = 1; i <= n; i++) cr_assert_eq(buf[i], '\0', "n=%zu i=%zu", n, i);
    }
    wipe(nullptr, 8);  // nothing to wipe, no crash
}

Test(i18_access3, i18_access3_01_secret_swap_moves_without_copy_and_each_holder_wipes) {
    SecretString a(std::string_view("sk-a-0123456789abcdefghijklmnopqrstuvwxyz"));
    SecretString b;
    const char *heap = a.data();
    b.swap(a);
    cr_assert_eq(b.view(), "sk-a-0123456789abcdefghijklmnopqrstuvwxyz");
    cr_assert_eq(b.data(), heap, "the same block, not a copy");
    cr_assert(a.empty());
    b.clear();
    cr_assert(b.empty());
}

Test(i18_access3, i18_access3_02_the_pick_uses_the_health_the_decision_read) {
    g_seen.clear();
    GatewaySnapshot snap = two_keys();
    RouteInput in;
    KeyAttempts att;
    RoutePlan p = plan_route(recording_pool(), snap, request(), "POST", true, "gpt-4o", &in, &att);
    cr_assert(p.action == RoutePlan::Action::Proxy);
    cr_assert_eq(g_seen.size(), 1u);
    cr_assert(g_seen[0] == std::vector<uint8_t>({0, 1}), "states' reading reached the pick");
    cr_assert_eq(p.key.view(), "sk-second-0002");
    cr_assert_eq(att.current, "k_000000000002");
    // The ids are views of the catalog and the snapshot, not copies.
    cr_assert_eq(att.provider.data(), p.decision.target->id.data());
    cr_assert_eq(att.current.data(), snap.keys[1].id.data());
}

Test(i18_access3, i18_access3_02_a_sibling_pick_reads_the_health_again) {
    g_seen.clear();
    GatewaySnapshot snap = two_keys();
    RouteInput in;
    KeyAttempts att;
    GatewayConfig cfg = recording_pool();
    RoutePlan p = plan_route(cfg, snap, request(), "POST", true, "gpt-4o", &in, &att);
    cr_assert_eq(att.usable.size(), 2u);
    auto sib = plan_sibling(cfg, snap, p.decision, &att);
    cr_assert_eq(g_seen.size(), 2u);
    cr_assert(g_seen[1].empty(), "the first attempt's answer may have changed the health");
    cr_assert(sib.has_value(), "read again, the first key may serve");
    cr_assert_eq(sib->key.view(), "sk-first-0001");
}

Test(i18_access3, i18_access3_02_each_decision_starts_from_a_fresh_reading) {
    GatewaySnapshot snap = two_keys();
    RouteInput in;
    KeyAttempts att;
    att.usable.push_back(0);  // left over: must not reach this decision
    att.usable.push_back(0);
    RoutePlan p =
        plan_route(test::gateway_config(), snap, request(), "POST", true, "gpt-4o", &in, &att);
    cr_assert(p.action == RoutePlan::Action::Proxy);
    cr_assert(att.usable.empty(), "no key pool: nothing recorded");
    cr_assert_eq(p.key.view(), "sk-first-0001");
}

Test(i18_access3, i18_access3_03_credential_headers_in_any_case_and_no_other) {
    for (const char *name :
         {"authorization", "Authorization", "X-API-KEY", "x-api-key", "Api-Key", "x-goog-api-key",
          "X-Goog-Api-Key", "proxy-authorization", "Proxy-Authorization"})
        cr_assert(is_credential_header(name), "%s", name);
    // Names of the same lengths that are not credentials.
    for (const char *name :
         {"authorizatio_", "x-api-kez", "api-kex", "content-length", "proxy-authenticate",
          "proxy-authorizatio", "accept-encoding", "", "host", "x-byok-provider"})
        cr_assert_not(is_credential_header(name), "%s", name);
    ClientCredentials c;
    cr_assert_eq(credential_slot(c, "AUTHORIZATION"), &c.authorization);
    cr_assert_eq(credential_slot(c, "x-api-key"), &c.x_api_key);
    cr_assert_eq(credential_slot(c, "api-key"), &c.api_key);
    cr_assert_eq(credential_slot(c, "X-Goog-Api-Key"), &c.x_goog_api_key);
    cr_assert_null(credential_slot(c, "proxy-authorization"), "a proxy's: never the gateway key");
    cr_assert_null(credential_slot(c, "content-length"));
}

Test(i18_access3, i18_access3_03_upstream_host_is_the_catalog_host_without_a_copy) {
    GatewaySnapshot snap = two_keys();
    RouteInput in;
    GatewayRequest req = request();
    RoutePlan p = plan_route(test::gateway_config(), snap, req, "POST", true, "gpt-4o", &in);
    UpstreamPlan up = plan_upstream(req, snap, p.decision, p.key, std::nullopt, false);
    cr_assert_eq(up.host(), "api.openai.com");
    cr_assert_eq(up.host().data(), up.base().host.data(), "a view of the catalog's URL");
    cr_assert(up.host_built.empty());
}

Test(i18_access3, i18_access3_03_authority_is_the_host_only_without_port_or_ipv6) {
    struct Case {
        const char *url;
        bool bare;
        const char *authority;
    } cases[] = {
        {"https://api.example.com/v1", true, "api.example.com"},
        {"https://api.example.com:443/v1", true, "api.example.com"},
        {"http://api.example.com:80", true, "api.example.com"},
        {"https://api.example.com:8443/v1", false, "api.example.com:8443"},
        {"http://api.example.com:443", false, "api.example.com:443"},
        {"https://[2001:db8::1]/v1", false, "[2001:db8::1]"},
        {"https://[2001:db8::1]:8443", false, "[2001:db8::1]:8443"},
    };
    for (const Case &c : cases) {
        Url u = parse_url(c.url, "test");
        cr_assert_eq(u.authority_is_host(), c.bare, "%s", c.url);
        cr_assert_eq(u.authority(), c.authority, "%s", c.url);
        // What UpstreamPlan::host() gives for such a base.
        UpstreamPlan up;
        up.endpoint = u;
        if (!u.authority_is_host()) up.host_built = u.authority();
        cr_assert_eq(up.host(), c.authority, "%s", c.url);
    }
}

Test(i18_access3, i18_access3_04_a_request_parsed_in_place_is_the_one_returned) {
    for (const char *uri :
         {"/v1/chat/completions", "/v1/chat/completions?key=byok_0123456789ab&x=1",
          "/anthropic/v1/messages?a=b", "/", "/v1/x y"}) {
        GatewayRequestIn in;
        in.uri = uri;
        in.creds.authorization = "Bearer byok_0123456789abcdef";
        in.content_type = "application/json";
        GatewayRequest a = parse_gateway_request(in);
        GatewayRequest b;
        parse_gateway_request(in, &b);
        cr_assert_eq(a.unified, b.unified, "%s", uri);
        cr_assert_eq(a.native_provider, b.native_provider, "%s", uri);
        cr_assert_eq(a.rest, b.rest, "%s", uri);
        cr_assert_eq(a.key, b.key, "%s", uri);
        cr_assert_eq(a.clean_uri.has_value(), b.clean_uri.has_value(), "%s", uri);
        if (a.clean_uri) cr_assert_eq(*a.clean_uri, *b.clean_uri, "%s", uri);
        cr_assert_eq(a.error.has_value(), b.error.has_value(), "%s", uri);
        if (a.error) cr_assert_eq(a.error->code, b.error->code, "%s", uri);
        cr_assert(a.body_kind == b.body_kind);
    }
}
