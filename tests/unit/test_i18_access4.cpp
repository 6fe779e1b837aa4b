// Issue 18, session 7 (the access side of the cache-hit path): retry_on
// without building retry decisions; the header value rule without a byte
// loop; one lookup of the request headers the gateway reads or strips.
#include <criterion/criterion.h>

#include <iterator>
#include <string>

#include "lib/client_api.h"
#include "lib/gateway.h"
#include "lib/record.h"
#include "lib/routing.h"
#include "lib/text.h"
#include "lib/util.h"

#include "tests/unit/test_support.h"

using namespace byok;

namespace {

// What retry_on answered before session 7, spelled with decide_retry: the
// decision for a 5xx, then the one for a 429.
RetryOn retry_on_by_decisions(const RouteInput &in, const RouteDecision &first) {
    if (!decide_retry(in, first, "upstream_error")) return RetryOn::Nothing;
    return decide_retry(in, first, "upstream_429") ? RetryOn::ServerErrorsAnd429
                                                   : RetryOn::ServerErrors;
}

const char *name_of(RetryOn r) {
    switch (r) {
        case RetryOn::Nothing:
            return "nothing";
        case RetryOn::ServerErrors:
            return "5xx";
        case RetryOn::ServerErrorsAnd429:
            return "5xx+429";
    }
    return "?";
}

// One request of the grid below; strings are literals (RouteInput holds views).
struct Row {
    const char *name;
    Policy policy;
    KeyState openai;             // the project's openai key (Inactive = none listed)
    bool openai_key_listed;      //   whether the project has one at all
    ProviderIds system;          // operator keys
    std::string_view fallback;   // "" = fallback off
    std::string_view native;     // /<id>/... request
    std::string_view model;
    bool client_retrying = false;
    bool fallback_on_rate_limit = true;
};

RouteInput input_of(const Row &r) {
    RouteInput in;
    in.catalog = &test::builtin_catalog();
    in.tier = Tier::Pro;
    in.policy = r.policy;
    if (r.openai_key_listed) in.project_keys.emplace_back("openai", r.openai);
    in.system_keys = r.system;
    in.fallback_provider = r.fallback;
    in.native_provider = r.native;
    in.model = r.model;
    in.client_retrying = r.client_retrying;
    in.fallback_on_rate_limit = r.fallback_on_rate_limit;
    return in;
}

}  // namespace

// Every policy, route and reason: the decisions' answer, row by row.
Test(i18_access4, i18_access4_01_retry_on_rows_by_policy_route_and_reason) {
    constexpr KeyState U = KeyState::Usable, I = KeyState::Inactive, D = KeyState::DecryptError;
    const ProviderIds fb = {"openrouter"}, both = {"openai", "openrouter"}, none = {};
    struct Case {
        Row row;
        const char *route;
        RetryOn want;
        const char *location, *sibling;  // proxy_location, sibling_location
    } cases[] = {
        {{"auto byok", Policy::Auto, U, true, fb, "openrouter", "", "gpt-4o"},
         "byok", RetryOn::ServerErrorsAnd429, "", "@byok_retry"},
        {{"auto byok, 429 kept", Policy::Auto, U, true, fb, "openrouter", "", "gpt-4o", false,
          false},
         "byok", RetryOn::ServerErrors, "@byok_fallback_5xx", "@byok_fallback_5xx"},
        {{"auto byok, client retrying", Policy::Auto, U, true, fb, "openrouter", "", "gpt-4o",
          true},
         "byok", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"auto system (no_key)", Policy::Auto, U, false, both, "openrouter", "", "gpt-4o"},
         "system", RetryOn::ServerErrorsAnd429, "", "@byok_retry"},
        {{"auto system (inactive)", Policy::Auto, I, true, both, "openrouter", "", "gpt-4o"},
         "system", RetryOn::ServerErrorsAnd429, "", "@byok_retry"},
        {{"auto system (decrypt_error), 429 kept", Policy::Auto, D, true, both, "openrouter", "",
          "gpt-4o", false, false},
         "system", RetryOn::ServerErrors, "@byok_fallback_5xx", "@byok_fallback_5xx"},
        {{"auto fallback (no_key)", Policy::Auto, U, false, fb, "openrouter", "", "gpt-4o"},
         "fallback", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"auto denied", Policy::Auto, U, false, none, "openrouter", "", "gpt-4o"},
         "denied", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"auto byok, fallback off", Policy::Auto, U, true, fb, "", "", "gpt-4o"},
         "byok", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"auto byok, no operator key for the fallback", Policy::Auto, U, true, none,
          "openrouter", "", "gpt-4o"},
         "byok", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"auto byok, the target is the fallback", Policy::Auto, U, true, fb, "openai", "",
          "gpt-4o"},
         "byok", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"auto byok, fallback provider not enabled (local)", Policy::Auto, U, true,
          {"ollama"}, "ollama", "", "gpt-4o"},
         "byok", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"auto native byok", Policy::Auto, U, true, fb, "openrouter", "openai", "gpt-4o"},
         "byok", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"no_key byok", Policy::NoKey, U, true, fb, "openrouter", "", "gpt-4o"},
         "byok", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"no_key system", Policy::NoKey, I, true, both, "openrouter", "", "gpt-4o"},
         "system", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"no_key fallback", Policy::NoKey, U, false, fb, "openrouter", "", "gpt-4o"},
         "fallback", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"off byok", Policy::Off, U, true, both, "openrouter", "", "gpt-4o"},
         "byok", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
        {{"off denied", Policy::Off, I, true, both, "openrouter", "", "gpt-4o"},
         "denied", RetryOn::Nothing, "@byok_direct", "@byok_direct"},
    };
    for (const auto &c : cases) {
        RouteInput in = input_of(c.row);
        RouteDecision first = decide_route(in);
        const char *name = c.row.name;
        cr_assert_eq(route_name(first.route), c.route, "%s: route %s", name,
                     std::string(route_name(first.route)).c_str());
        RetryOn got = retry_on(in, first);
        cr_assert_eq(got, c.want, "%s: %s", name, name_of(got));
        cr_assert_eq(got, retry_on_by_decisions(in, first), "%s: as the decisions say", name);
        cr_assert_eq(proxy_location(in, first), c.location, "%s: location", name);
        cr_assert_eq(proxy_location(in, first, true), "@byok_keys", "%s", name);
        if (first.route == Route::Byok)
            cr_assert_eq(sibling_location(in, first), c.sibling, "%s: sibling location", name);
    }
}

// The whole grid of policies, tiers, keys, operator keys, fallback
// settings, paths and models, with the decision decide_route made and with
// every route forced onto it: retry_on is what the two decisions said.
Test(i18_access4, i18_access4_01_retry_on_equals_the_decisions_over_the_grid) {
    const Policy policies[] = {Policy::Auto, Policy::NoKey, Policy::Off};
    const KeyState states[] = {KeyState::Usable, KeyState::Inactive, KeyState::DecryptError,
                               KeyState::Expired, KeyState::Unhealthy};
    const ProviderIds systems[] = {{}, {"openrouter"}, {"openai"}, {"openai", "openrouter"},
                                   {"groq"}};
    const std::string_view fallbacks[] = {"", "openrouter", "openai", "groq", "ollama", "nope"};
    const std::string_view natives[] = {"", "openai"};
    const std::string_view models[] = {"gpt-4o", "openai/gpt-4o", "llama-3", ""};
    const Route routes[] = {Route::Byok, Route::System, Route::Fallback, Route::Denied};
    int seen[3] = {0, 0, 0}, n = 0;
    for (Policy policy : policies)
        for (Tier tier : {Tier::Free, Tier::Pro})
            for (int key = -1; key < (int)std::size(states); key++)
                for (const auto &system : systems)
                    for (std::string_view fallback : fallbacks)
                        for (std::string_view native : natives)
                            for (std::string_view model : models)
                                for (int flags = 0; flags < 4; flags++) {
                                    Row row{"grid",  policy,   states[key < 0 ? 0 : key],
                                            key >= 0, system, fallback,
                                            native,  model,    (flags & 1) != 0,
                                            (flags & 2) != 0};
                                    RouteInput in = input_of(row);
                                    in.tier = tier;
                                    RouteDecision first = decide_route(in);
                                    RetryOn got = retry_on(in, first);
                                    cr_assert_eq(got, retry_on_by_decisions(in, first),
                                                 "policy %d tier %d key %d fallback %s native %s "
                                                 "model %s flags %d: %s",
                                                 (int)policy, (int)tier, key,
                                                 std::string(fallback).c_str(),
                                                 std::string(native).c_str(),
                                                 std::string(model).c_str(), flags, name_of(got));
                                    seen[(int)got]++;
                                    n++;
                                    // The same input with each route and a
                                    // target of either provider.
                                    for (Route route : routes)
                                        for (const char *target : {"openai", "openrouter"}) {
                                            RouteDecision d;
                                            d.route = route;
                                            d.provider = in.catalog->find("openai");
                                            d.target = in.catalog->find(target);
                                            cr_assert_eq(retry_on(in, d),
                                                         retry_on_by_decisions(in, d),
                                                         "forced route %s target %s",
                                                         std::string(route_name(route)).c_str(),
                                                         target);
                                        }
                                }
    // The grid reaches every answer.
    cr_assert_gt(seen[(int)RetryOn::Nothing], 0);
    cr_assert_gt(seen[(int)RetryOn::ServerErrors], 0);
    cr_assert_gt(seen[(int)RetryOn::ServerErrorsAnd429], 0);
    cr_assert_gt(n, 10000);
}

// A decision without a target or provider, or no catalog: never a retry.
Test(i18_access4, i18_access4_01_retry_on_without_target_or_catalog_is_nothing) {
    Row row{"x", Policy::Auto, KeyState::Usable, true, {"openrouter"}, "openrouter", "", "gpt-4o"};
    RouteInput in = input_of(row);
    RouteDecision first = decide_route(in);
    cr_assert_eq(retry_on(in, first), RetryOn::ServerErrorsAnd429);
    RouteDecision no_target = first;
    no_target.target = nullptr;
    cr_assert_eq(retry_on(in, no_target), RetryOn::Nothing);
    RouteDecision no_provider = first;
    no_provider.provider = nullptr;
    cr_assert_eq(retry_on(in, no_provider), RetryOn::Nothing);
    RouteInput no_catalog = in;
    no_catalog.catalog = nullptr;
    cr_assert_eq(retry_on(no_catalog, first), RetryOn::Nothing);
    cr_assert_not(decide_retry(no_catalog, first, "upstream_error").has_value());
}

// The header value rule at every length, position and byte: test_text.cpp.

// The loads stay inside the value: control bytes right before and after it
// (the request line's CR LF, a NUL) are not read as part of it.
Test(i18_access4, i18_access4_02_header_value_rule_reads_only_the_value) {
    for (size_t len = 0; len <= 40; ++len) {
        for (char around : {'\0', '\r', '\n', '\x7f', '\x01'}) {
            std::string buf = std::string(16, around) + std::string(len, 'v') +
                              std::string(16, around);
            cr_assert(safe_header_value(std::string_view(buf).substr(16, len)),
                      "len %zu around %d", len, around);
            if (len == 0) continue;
            buf[16 + len - 1] = around;  // the last byte of the value itself
            cr_assert_not(safe_header_value(std::string_view(buf).substr(16, len)),
                          "len %zu last byte %d", len, around);
        }
    }
}

// One list of the request headers the gateway reads or strips: each name
// in any case is its kind, every other name (one of the same length, a
// longer or an empty one) is Other; what is never forwarded is exactly the
// credentials and x-byok-provider.
Test(i18_access4, i18_access4_03_request_headers_are_one_list) {
    using H = RequestHeader;
    const struct {
        const char *name;
        H kind;
    } cases[] = {
        {"authorization", H::Authorization},
        {"Authorization", H::Authorization},
        {"X-API-KEY", H::XApiKey},
        {"api-key", H::ApiKey},
        {"X-Goog-Api-Key", H::XGoogApiKey},
        {"Proxy-Authorization", H::ProxyAuthorization},
        {"x-byok-provider", H::ByokProvider},
        {"X-BYOK-Provider", H::ByokProvider},
        {"x-stainless-retry-count", H::RetryCount},
        {"X-Stainless-Retry-Count", H::RetryCount},
        {"content-type", H::ContentType},
        {"Content-Type", H::ContentType},
        // same lengths, other names
        {"content-length", H::Other},
        {"accept-encoding", H::Other},
        {"x-byok-providex", H::Other},
        {"y-byok-provider", H::Other},
        {"x-stainless-retry-coun_", H::Other},
        {"content_type", H::Other},
        {"proxy-authenticate", H::Other},
        {"authorizatioN ", H::Other},
        {"x-api-kez", H::Other},
        {"", H::Other},
        {"host", H::Other},
        {"x-stainless-retry-count-", H::Other},
        {"x-stainless-retry-count-and-more-to-come", H::Other},
    };
    for (const auto &c : cases) {
        H got = request_header(c.name);
        cr_assert_eq(got, c.kind, "%s: %d", c.name, (int)got);
        bool credential = got <= H::ProxyAuthorization;
        cr_assert_eq(is_credential_header(c.name), credential, "%s", c.name);
        cr_assert_eq(never_forwarded(got), credential || got == H::ByokProvider, "%s", c.name);
        ClientCredentials creds;
        cr_assert_eq(credential_slot(creds, c.name) != nullptr, got < H::ProxyAuthorization, "%s",
                     c.name);
    }
    ClientCredentials creds;
    cr_assert_eq(credential_slot(creds, H::Authorization), &creds.authorization);
    cr_assert_eq(credential_slot(creds, H::XApiKey), &creds.x_api_key);
    cr_assert_eq(credential_slot(creds, H::ApiKey), &creds.api_key);
    cr_assert_eq(credential_slot(creds, H::XGoogApiKey), &creds.x_goog_api_key);
    for (H h : {H::ProxyAuthorization, H::ByokProvider, H::RetryCount, H::ContentType, H::Other})
        cr_assert_null(credential_slot(creds, h));
}

// iequals folds ASCII letters only, for short and long names alike.
Test(i18_access4, i18_access4_03_iequals_folds_letters_only) {
    cr_assert(iequals("Content-Type", "content-type"));
    cr_assert(iequals("C", "c"));
    cr_assert_not(iequals("content-length", "x-goog-api-key"));
    cr_assert_not(iequals("a", "b"));
    cr_assert_not(iequals("@bc", "`bc"));  // 0x40 and 0x60: not letters, no folding
    cr_assert_not(iequals("[", "{"));
    cr_assert(iequals("", ""));
    cr_assert_not(iequals("abc", "abd"));
    cr_assert(iequals("ABC", "abc"));
    cr_assert(iequals("X-Stainless-Retry-Count", "x-stainless-retry-count"));
    cr_assert_not(iequals("x-stainless-retry-coun@", "x-stainless-retry-coun`"));
    cr_assert(iequals("Bearer", "bearer"));
    cr_assert_not(iequals("Bearer", std::string_view("bearer\0", 7)));
    cr_assert_not(iequals(std::string_view("Bearer\0", 7), std::string_view("bearer\x20", 7)));
    cr_assert_not(iequals("\xc1pplication/json", "\xe1pplication/json"));  // not ASCII letters
    cr_assert_not(iequals("[]^_", "{}~\x7f"));
}

// SecretString::take: the worker keeps one wiped heap block for the
// request's provider key (ngx_byok_keycache.cpp), and the access handler
// takes the plan's key: an empty holder takes the block itself, never a
// copy, and a holder that still had a block hands that one back (to be
// wiped and freed by its owner); a short key is copied and its old holder
// still wipes it.
Test(i18_access4, i18_access4_04_a_secret_is_taken_without_a_copy_or_a_wipe) {
    const std::string secret = "sk-a-provider-key-longer-than-sso";
    SecretString kept;
    kept.mutable_str().assign(200, 'k');
    kept.clear();  // wiped, capacity kept
    const char *block = kept.data();
    size_t capacity = kept.mutable_str().capacity();
    cr_assert_geq(capacity, 200u);

    // A hit: the empty request key takes the block, then the key is copied in.
    SecretString key;
    key.take(kept);
    cr_assert_eq(key.data(), block, "the block itself, no allocation");
    cr_assert(key.empty());
    cr_assert(kept.empty());
    key.mutable_str().assign(secret);
    cr_assert_eq(key.data(), block, "fits: no reallocation");
    cr_assert_eq(key.view(), secret);

    // The request ends: wiped, then the block goes back.
    key.clear();
    for (size_t i = 0; i < capacity; ++i) cr_assert_eq(block[i], 0, "byte %zu wiped", i);
    kept.take(key);
    cr_assert_eq(kept.data(), block);
    cr_assert(key.empty());

    // Two requests at once: the second one's block comes back while the
    // worker holds the first's; the holder gets the worker's old block back.
    SecretString other;
    other.mutable_str().assign(300, 'o');
    other.clear();
    const char *other_block = other.data();
    kept.take(other);
    cr_assert_eq(kept.data(), other_block);
    cr_assert_eq(other.data(), block, "handed back to its owner, which wipes and frees it");

    SecretString plan_key("sk-short"), ctx_key;  // within the string itself
    ctx_key.take(plan_key);
    cr_assert_eq(ctx_key.view(), "sk-short");
    cr_assert(plan_key.empty());
    std::string_view left(plan_key.data(), 8);  // the old holder's own buffer
    plan_key.clear();
    cr_assert_eq(left, std::string(8, '\0'), "wiped by its holder");
}

// The plan's key hint is a view of the snapshot's key record (no copy per
// request), for the first key and for the sibling a retry takes.
Test(i18_access4, i18_access4_05_key_hint_is_a_view_of_the_snapshot) {
    KeyRecord first = test::openai_key("sk-first-0001", "k_000000000001");
    KeyRecord second = test::openai_key("sk-second-0002", "k_000000000002");
    first.key_hint = "sk-...0001";
    second.key_hint = "sk-...0002";
    GatewaySnapshot snap =
        build_snapshot({{"project", "acme"}, {"id", "g1"}, {"revoked", "0"}},
                       {{"name", "Acme"}, {"tier", "pro"}, {"fallback", "auto"}},
                       {{"openai", serialize_key_set({first, second})}});
    cr_assert_eq(snap.keys.size(), 2u);
    GatewayRequestIn rin;
    rin.uri = "/v1/chat/completions";
    rin.creds.authorization = "Bearer byok_0123456789abcdef";
    GatewayRequest req = parse_gateway_request(rin);
    GatewayConfig cfg = test::gateway_config();
    RouteInput in;
    KeyAttempts att;
    RoutePlan p = plan_route(cfg, snap, req, "POST", true, "gpt-4o", &in, &att);
    cr_assert(p.action == RoutePlan::Action::Proxy);
    cr_assert_eq(p.key.view(), "sk-first-0001");
    cr_assert_eq(p.key_hint, "sk-...0001");
    cr_assert_eq(p.key_hint.data(), snap.keys[0].key_hint.data(), "a view, not a copy");
    auto sibling = plan_sibling(cfg, snap, p.decision, &att);
    cr_assert(sibling.has_value());
    cr_assert_eq(sibling->key.view(), "sk-second-0002");
    cr_assert_eq(sibling->key_hint.data(), snap.keys[1].key_hint.data());
}

// iequals compares 4..16 bytes with overlapping word loads: at every length
// and position, a byte against itself, its other case and other bytes gives
// the byte-by-byte rule.
Test(i18_access4, i18_access4_03_iequals_at_every_length_and_position) {
    auto want = [](const std::string &a, const std::string &b) {
        if (a.size() != b.size()) return false;
        for (size_t i = 0; i < a.size(); ++i)
            if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
        return true;
    };
    for (size_t len = 1; len <= 24; ++len) {
        for (size_t pos = 0; pos < len; ++pos) {
            for (int c = 0; c < 256; ++c) {
                for (int d : {c, c ^ 0x20, c ^ 0x01, c ^ 0x80, int('A'), int('a')}) {
                    std::string a(len, 'k'), b(len, 'K');
                    a[pos] = static_cast<char>(c);
                    b[pos] = static_cast<char>(d);
                    cr_assert_eq(iequals(a, b), want(a, b), "len %zu pos %zu %d/%d", len, pos, c,
                                 d);
                    cr_assert_eq(iequals(b, a), want(a, b), "len %zu pos %zu %d/%d", len, pos, d,
                                 c);
                }
            }
        }
    }
}
