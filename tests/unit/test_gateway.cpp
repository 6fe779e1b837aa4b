// lib/gateway: the request path's plans, row by row (issue 12).
#include <criterion/criterion.h>

#include <string>

#include "lib/gateway.h"
#include "lib/record.h"
#include "tests/unit/test_support.h"

using namespace byok;

// Decision tables leave trailing fields at their defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace {

constexpr const char *kKey = "byok_0123456789abcdef";
constexpr const char *kRing = "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";

const Catalog &catalog() {
    static const Catalog c = Catalog::builtin();
    return c;
}

const KeyRing &ring() {
    static const KeyRing r = KeyRing::parse(kRing, "t");
    return r;
}

std::string record(std::string_view provider, std::string_view secret) {
    KeyRecord r;
    r.sealed = seal(ring(), secret, key_binding("acme", provider, ""));
    r.key_hint = "sk-...1234";
    r.created_at = r.updated_at = "2026-11-22T04:31:00Z";
    return serialize_key_record(r);
}

GatewaySnapshot snapshot(FieldMap keys, const char *tier = "pro", const char *policy = "auto") {
    return build_snapshot({{"project", "acme"}, {"id", "k1"}, {"revoked", "0"}},
                          {{"name", "Acme"}, {"tier", tier}, {"fallback", policy}}, keys);
}

SecretString g_operator_key("sk-or-operator-1234");

GatewayConfig make_config(bool with_system_key) {
    GatewayConfig cfg;
    cfg.catalog = &catalog();
    cfg.ring = &ring();
    if (with_system_key) cfg.system_key_providers = {"openrouter"};
    cfg.system_key = [with_system_key](std::string_view p) -> const SecretString * {
        return with_system_key && p == "openrouter" ? &g_operator_key : nullptr;
    };
    cfg.fallback_provider = "openrouter";
    return cfg;
}

// One configuration per flag that outlives every test, as nginx's does: a
// RouteInput holds views of it (issue 18), so a temporary would dangle.
const GatewayConfig &config(bool with_system_key) {
    static const GatewayConfig with = make_config(true), without = make_config(false);
    return with_system_key ? with : without;
}

GatewayRequest parse(std::string_view uri, std::string_view auth = "Bearer byok_0123456789abcdef") {
    GatewayRequestIn in;
    in.uri = uri;
    in.creds.authorization = auth;
    return parse_gateway_request(in);
}

}  // namespace

Test(gateway, i12_01_parse_table) {
    struct Case {
        const char *uri;
        const char *auth;
        int status;  // 0 = no error
        const char *code;
        const char *type;
        bool unified;
        const char *rest;
    } cases[] = {
        {"/v1/chat/completions", "Bearer byok_0123456789abcdef", 0, "", "", true,
         "/chat/completions"},
        {"/v1", "Bearer byok_0123456789abcdef", 0, "", "", true, "/"},
        {"/openai/v1/models?limit=2", "Bearer byok_0123456789abcdef", 0, "", "", false,
         "/v1/models?limit=2"},
        {"/anthropic", "Bearer byok_0123456789abcdef", 0, "", "", false, "/"},
        {"/", "Bearer byok_0123456789abcdef", 404, "not_found", "invalid_request_error", false, ""},
        {"/v1/a%0Ab", "Bearer byok_0123456789abcdef", 0, "", "", true, "/a%0Ab"},
        {"/v1/a\x01", "Bearer byok_0123456789abcdef", 400, "invalid_request",
         "invalid_request_error", true, "/a\x01"},
        {"/v1/models", "", 401, "invalid_api_key", "authentication_error", true, "/models"},
        {"/v1/models", "Bearer sk-not-ours-123", 401, "invalid_api_key", "authentication_error",
         true, "/models"},
    };
    for (const auto &c : cases) {
        GatewayRequest req = parse(c.uri, c.auth);
        cr_assert_eq(req.error.has_value(), c.status != 0, "%s", c.uri);
        if (c.status) {
            cr_assert_eq(req.error->status, c.status, "%s", c.uri);
            cr_assert_eq(req.error->code, c.code, "%s", c.uri);
            cr_assert_eq(req.error->type, c.type, "%s", c.uri);
            cr_assert_eq(req.error->auth_failure, c.status == 401, "%s", c.uri);
        } else {
            cr_assert_eq(req.key, kKey, "%s", c.uri);
        }
        cr_assert_eq(req.unified, c.unified, "%s", c.uri);
        if (c.status != 404) cr_assert_eq(req.rest, c.rest, "%s", c.uri);
    }
}

Test(gateway, i12_01_key_param_leaves_the_uri_and_counts_on_google) {
    GatewayRequest req = parse("/google/v1beta/models?alt=sse&key=byok_0123456789abcdef", "");
    cr_assert(!req.error);
    cr_assert_eq(req.key, kKey);
    cr_assert_eq(*req.clean_uri, "/google/v1beta/models?alt=sse");
    cr_assert_eq(req.rest, "/v1beta/models?alt=sse");
    cr_assert(!parse("/v1/models?x=1").clean_uri);
    // Elsewhere the parameter is dropped from the URI but is no credential.
    req = parse("/v1/models?key=byok_0123456789abcdef", "");
    cr_assert_eq(*req.clean_uri, "/v1/models");
    cr_assert_eq(req.error->status, 401);
}

Test(gateway, i12_01_provider_header_and_retry_count) {
    GatewayRequestIn in;
    in.uri = "/v1/chat/completions";
    in.creds.x_api_key = kKey;
    in.provider_headers = {"openai", "anthropic"};
    in.retry_count = "2";
    GatewayRequest req = parse_gateway_request(in);
    cr_assert(!req.error);
    cr_assert_eq(req.header_provider, "anthropic");  // the last one wins
    cr_assert(req.client_retrying);
    in.provider_headers = {"open\nai", "anthropic"};
    req = parse_gateway_request(in);
    cr_assert_eq(req.error->code, "invalid_header");
}

Test(gateway, i12_01_error_types_come_from_the_one_table) {
    struct Case {
        int status;
        const char *type;
    } cases[] = {
        {400, "invalid_request_error"},
        {401, "authentication_error"},
        {403, "permission_error"},
        {404, "invalid_request_error"},
        {422, "invalid_request_error"},
        {429, "rate_limit_error"},
        {500, "api_error"},
        {502, "api_error"},
        {503, "api_error"},
    };
    for (const auto &c : cases) {
        cr_assert_eq(gateway_error_type(c.status), c.type, "%d", c.status);
        if (c.status != 404 && c.status != 429)
            cr_assert_eq(gateway_error_type(c.status), error_type(c.status), "%d", c.status);
    }
    GatewayError e = too_many_unknown_keys(7);
    cr_assert_eq(e.status, 429);
    cr_assert_eq(e.retry_after, 7);
    cr_assert(e.auth_failure);
}

Test(gateway, i12_01_lookup_reply_is_read_once) {
    Reply r;
    cr_assert(read_lookup_reply(r).kind == LookupOutcome::Kind::Failed);
    r.type = Reply::Type::Array;
    r.elements.resize(4);
    cr_assert(read_lookup_reply(r).kind == LookupOutcome::Kind::Unknown);
    auto str = [](const char *s) {
        Reply e;
        e.type = Reply::Type::String;
        e.str = s;
        return e;
    };
    r.elements[0].type = r.elements[1].type = Reply::Type::Array;
    r.elements[0].elements = {str("project"), str("acme"), str("id"), str("k1")};
    r.elements[1].elements = {str("tier"), str("pro")};
    LookupOutcome got = read_lookup_reply(r);
    cr_assert(got.kind == LookupOutcome::Kind::Found);
    cr_assert_eq(got.project, "acme");
    cr_assert(got.snap.status == GatewaySnapshot::Status::Ok);
    cr_assert_eq(unknown_key_ttl(300), 10);
    cr_assert_eq(unknown_key_ttl(3), 3);
}

Test(gateway, i12_01_plan_route_byok_opens_the_key) {
    GatewaySnapshot snap = snapshot({{"openai", record("openai", "sk-proj-secret-1234")}});
    GatewayRequest req = parse("/v1/chat/completions");
    RouteInput in;
    RoutePlan p = plan_route(config(true), snap, req, "POST", true, "gpt-4o", &in);
    cr_assert(p.action == RoutePlan::Action::Proxy);
    cr_assert(p.decided);
    cr_assert(p.decision.route == Route::Byok);
    cr_assert_eq(p.key.view(), "sk-proj-secret-1234");
    cr_assert_eq(p.key_hint, "sk-...1234");
    cr_assert(p.decrypt_failures.empty());
    cr_assert(!p.fallback_taken);
    cr_assert_eq(proxy_location(in, p.decision), "");

    UpstreamPlan up = plan_upstream(req, snap, p.decision, p.key, std::nullopt, false);
    cr_assert_eq(up.host(), "api.openai.com");
    cr_assert_eq(up.base().path + std::string(up.rest), "/v1/chat/completions");
    cr_assert_eq(up.base().origin(), "https://api.openai.com");
    cr_assert(!up.pin);
    cr_assert(!up.model_token);
    cr_assert(up.headers.auth.name == "Authorization" && up.headers.auth.prefix == "Bearer " &&
              up.headers.auth.value == "sk-proj-secret-1234" && !up.headers.auth.default_only);
}

Test(gateway, i12_01_plan_route_undecryptable_key_falls_back) {
    // Sealed for another project: the binding does not match, so it does
    // not decrypt; the decision is made again without it.
    KeyRecord r;
    r.sealed = seal(ring(), "sk-other", key_binding("other", "openai", ""));
    GatewaySnapshot snap = snapshot({{"openai", serialize_key_record(r)}});
    RouteInput in;
    RoutePlan p =
        plan_route(config(true), snap, parse("/v1/chat/completions"), "POST", true, "gpt-4o", &in);
    cr_assert_eq(p.decrypt_failures.size(), 1);
    cr_assert(p.decrypt_failures[0].find("sk-other") == std::string::npos);  // never the key
    cr_assert(p.decision.route == Route::Fallback);
    cr_assert_eq(p.decision.reason, "decrypt_error");
    cr_assert(p.fallback_taken);
    cr_assert_eq(p.key.view(), g_operator_key.view());
    cr_assert(p.key_hint.empty());

    // Without an operator key: 403 no_credential.
    p = plan_route(config(false), snap, parse("/v1/chat/completions"), "POST", true, "gpt-4o", &in);
    cr_assert(p.action == RoutePlan::Action::Error);
}

Test(gateway, i12_01_plan_route_denied_is_an_error_plan) {
    GatewaySnapshot snap = snapshot({}, "pro", "off");
    RouteInput in;
    RoutePlan p =
        plan_route(config(true), snap, parse("/v1/chat/completions"), "POST", true, "gpt-4o", &in);
    cr_assert(p.action == RoutePlan::Action::Error);
    cr_assert(p.decided);
    cr_assert_eq(p.error.status, p.decision.status);
    cr_assert_eq(p.error.code, p.decision.error_code);
    cr_assert_eq(p.error.type, gateway_error_type(p.error.status));
}

Test(gateway, i12_01_retry_plan_and_reason) {
    cr_assert_eq(upstream_failure_reason(429, true), "upstream_429");
    cr_assert_eq(upstream_failure_reason(504, false), "upstream_error");  // a timeout
    cr_assert_eq(upstream_failure_reason(0, false), "upstream_error");

    GatewaySnapshot snap = snapshot({{"openai", record("openai", "sk-proj-secret-1234")}});
    GatewayRequest req = parse("/v1/chat/completions");
    RouteInput in;
    RoutePlan first = plan_route(config(true), snap, req, "POST", true, "gpt-4o", &in);
    RoutePlan next = plan_retry(config(true), in, first.decision, 503, true);
    cr_assert(next.action == RoutePlan::Action::Proxy);
    cr_assert_eq(next.decision.reason, "upstream_503");
    cr_assert(next.fallback_taken);
    in.client_retrying = true;  // the SDK retries itself: no second call of ours
    next = plan_retry(config(true), in, first.decision, 503, true);
    cr_assert(next.action == RoutePlan::Action::Error);
    cr_assert_eq(next.error.status, 503);
    cr_assert_eq(next.error.type, "api_error");
    next = plan_retry(config(true), in, first.decision, 0, false);
    cr_assert_eq(next.error.status, 502);
}

Test(gateway, i12_01_body_edit_only_when_the_model_changes) {
    GatewaySnapshot snap = snapshot({{"openai", record("openai", "sk-proj-secret-1234")}});
    GatewayRequest req = parse("/v1/chat/completions");
    RouteInput in;
    RoutePlan p = plan_route(config(true), snap, req, "POST", true, "gpt-4o", &in);
    ModelSpan span{10, 18, "gpt-4o"};
    cr_assert(!plan_upstream(req, snap, p.decision, p.key, span, false).model_token);
    // A first attempt blanked the old value in the temp file: write it back.
    cr_assert_eq(*plan_upstream(req, snap, p.decision, p.key, span, true).model_token,
                 model_token("gpt-4o"));
    RouteDecision changed = p.decision;
    changed.model_changed = true;
    changed.model = "openai/gpt-4o";
    cr_assert_eq(*plan_upstream(req, snap, changed, p.key, span, false).model_token,
                 model_token("openai/gpt-4o"));
}

Test(gateway, i12_01_body_errors) {
    BodyError bad("invalid_json", "request body is not valid JSON");
    cr_assert_eq(body_error(&bad, std::nullopt)->code, "invalid_json");
    cr_assert_eq(body_error(&bad, std::nullopt)->message, "request body is not valid JSON");
    cr_assert_eq(body_error(nullptr, ModelSpan{0, 0, "a\nb"})->code, "invalid_model");
    cr_assert(!body_error(nullptr, ModelSpan{0, 0, "gpt-4o"}));
    cr_assert(!body_error(nullptr, std::nullopt));
}

Test(gateway, i12_05_metrics_names_come_from_lib) {
    for (size_t i = 0; i < std::size(kAllRoutes); i++)
        cr_assert_eq(static_cast<size_t>(kAllRoutes[i]), i);
    cr_assert_eq(route_name(kAllRoutes[0]), "byok");
    cr_assert_eq(kFallbackReasons[std::size(kFallbackReasons) - 1], "other");
    for (int status : {429, 500, 502, 503, 504}) {
        bool listed = false;
        for (auto r : kFallbackReasons)
            listed = listed || r == upstream_failure_reason(status, true);
        cr_assert(listed, "%d", status);
    }
}
