#include <criterion/criterion.h>

#include <string>

#include "lib/client_api.h"

using namespace byok;

// Decision tables leave trailing fields at their defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace {

constexpr const char *kKey = "byok_0123456789abcdef";

}  // namespace

Test(client_api, i17_01_gateway_key_sources_by_api) {
    struct Case {
        const char *name;
        ClientCredentials creds;
        ApiFamily api;
        bool found;
    } cases[] = {
        {"bearer", {"Bearer byok_0123456789abcdef"}, ApiFamily::OpenAI, true},
        {"bearer any case", {"bEaReR byok_0123456789abcdef"}, ApiFamily::Anthropic, true},
        {"x-api-key", {"", kKey}, ApiFamily::Anthropic, true},
        {"azure api-key", {"", "", kKey}, ApiFamily::OpenAI, true},
        {"azure api-key on google", {"", "", kKey}, ApiFamily::Google, true},
        {"x-goog-api-key on google", {"", "", "", kKey}, ApiFamily::Google, true},
        {"key= on google", {"", "", "", "", kKey}, ApiFamily::Google, true},
        {"x-goog-api-key elsewhere", {"", "", "", kKey}, ApiFamily::OpenAI, false},
        {"key= elsewhere", {"", "", "", "", kKey}, ApiFamily::Anthropic, false},
        {"nothing", {}, ApiFamily::Google, false},
        {"not a gateway key", {"", "", "", "AIzaSyNotOurs123"}, ApiFamily::Google, false},
        // The first source present decides; a wrong bearer is not skipped.
        {"first source wins", {"Bearer sk-wrong-123456", kKey}, ApiFamily::OpenAI, false},
        {"basic auth is no source", {"Basic abcdefgh", kKey}, ApiFamily::OpenAI, true},
        {"control character",
         {"",
          "byok_0123\x01"
          "4567"},
         ApiFamily::OpenAI,
         false},
    };
    for (const auto &c : cases) {
        GatewayKeyLookup got = find_gateway_key(c.creds, c.api);
        cr_assert_eq(got.error.empty(), c.found, "%s", c.name);
        if (c.found) cr_assert_eq(got.key, kKey, "%s", c.name);
        if (!c.found) cr_assert_eq(got.key, "", "%s", c.name);
    }
}

Test(client_api, i17_01_key_param_is_stripped_and_returned) {
    std::string_view key;
    cr_assert_eq(strip_key_param("alt=sse&key=byok_abc&x=1", &key), "alt=sse&x=1");
    cr_assert_eq(key, "byok_abc");
    key = {};
    cr_assert_eq(strip_key_param("key=byok_a&key=byok_b", &key), "");
    cr_assert_eq(key, "byok_a");
    key = {};
    cr_assert_eq(strip_key_param("key&keys=1&&monkey=2", &key), "keys=1&monkey=2");
    cr_assert_eq(key, "");
    cr_assert_eq(strip_key_param("", nullptr), "");
}

Test(client_api, i17_05_error_shape_per_api) {
    cr_assert_eq(api_family("anthropic"), ApiFamily::Anthropic);
    cr_assert_eq(api_family("google"), ApiFamily::Google);
    cr_assert_eq(api_family("openai"), ApiFamily::OpenAI);
    cr_assert_eq(api_family(""), ApiFamily::OpenAI);
    cr_assert_eq(
        gateway_error_body(ApiFamily::OpenAI, 401, "invalid_api_key", "no \"key\"",
                           "authentication_error"),
        R"({"error":{"message":"no \"key\"","type":"authentication_error","code":"invalid_api_key"}})");
    cr_assert_eq(gateway_error_body(ApiFamily::Anthropic, 401, "invalid_api_key", "bad key",
                                    "authentication_error"),
                 R"({"type":"error","error":{"type":"authentication_error","message":"bad key"}})");
    cr_assert_eq(gateway_error_body(ApiFamily::Google, 401, "invalid_api_key", "bad key",
                                    "authentication_error"),
                 R"({"error":{"code":401,"message":"bad key","status":"UNAUTHENTICATED"}})");
    struct Row {
        int status;
        const char *anthropic, *google;
    } rows[] = {
        {400, "invalid_request_error", "INVALID_ARGUMENT"},
        {403, "permission_error", "PERMISSION_DENIED"},
        {404, "not_found_error", "NOT_FOUND"},
        {413, "request_too_large", "INVALID_ARGUMENT"},
        {422, "invalid_request_error", "INVALID_ARGUMENT"},
        {429, "rate_limit_error", "RESOURCE_EXHAUSTED"},
        {500, "api_error", "INTERNAL"},
        {503, "api_error", "UNAVAILABLE"},
    };
    for (const Row &row : rows) {
        std::string a = gateway_error_body(ApiFamily::Anthropic, row.status, "c", "m", "t");
        cr_assert(a.find(std::string("\"type\":\"") + row.anthropic + "\"") != std::string::npos,
                  "%d: %s", row.status, a.c_str());
        std::string g = gateway_error_body(ApiFamily::Google, row.status, "c", "m", "t");
        cr_assert(g.find(std::string("\"status\":\"") + row.google + "\"") != std::string::npos,
                  "%d: %s", row.status, g.c_str());
    }
}

Test(client_api, i17_07_client_retry_count) {
    cr_assert_not(client_is_retrying(""));
    cr_assert_not(client_is_retrying("0"));
    cr_assert_not(client_is_retrying("00"));
    cr_assert(client_is_retrying("1"));
    cr_assert(client_is_retrying(" 2"));
    cr_assert_not(client_is_retrying("-1"));
    cr_assert_not(client_is_retrying("x"));
    cr_assert_not(client_is_retrying("99999999999"));
}

// Issue 10 item 15: the client's key parameter is removed whatever its case
// or percent-encoding; other parameters keep their bytes and order.
Test(client_api, i10_15_key_params_stripped_in_any_case) {
    struct Row {
        const char *in, *out;
    } rows[] = {
        {"key=AIza1", ""},
        {"Key=AIza1", ""},
        {"KEY=AIza1", ""},
        {"kEy=AIza1&alt=sse", "alt=sse"},
        {"alt=sse&key=a&Key=b&KEY=c&x=1", "alt=sse&x=1"},
        {"%6Bey=a&%4b%45%59=b&k%65y=c", ""},
        {"key", ""},
        {"KEY&a=1", "a=1"},
        {"keys=1&monkey=2&key2=3&a=key=", "keys=1&monkey=2&key2=3&a=key="},
        {"a=1&&b=2", "a=1&b=2"},
        {"%zzkey=1&%=2&%6=3", "%zzkey=1&%=2&%6=3"},
        {"", ""},
        {"&", ""},
    };
    for (const Row &row : rows)
        cr_assert_eq(strip_key_param(row.in, nullptr), std::string(row.out), "%s", row.in);
}

Test(client_api, i12_05_one_bearer_parser_and_key_shape) {
    cr_assert_eq(bearer_token("Bearer abc"), "abc");
    cr_assert_eq(bearer_token("  bearer\tabc  "), "abc");
    cr_assert_eq(bearer_token("BEARER  abc"), "abc");
    cr_assert_eq(bearer_token("Bearerabc"), "");
    cr_assert_eq(bearer_token("Basic abc"), "");
    cr_assert_eq(bearer_token("Bearer "), "");
    cr_assert(looks_like_gateway_key("byok_abc"));
    cr_assert(!looks_like_gateway_key("byok_ab"));  // 8 bytes at least
    cr_assert(!looks_like_gateway_key("sk-abcdefgh"));
    cr_assert(!looks_like_gateway_key(std::string(257, 'a').replace(0, 5, "byok_")));
}

// Issue 12: one list of credential headers, read by the access phase and
// stripped by the upstream set-up.
Test(client_api, i12_credential_headers_are_one_list) {
    byok::ClientCredentials c;
    *byok::credential_slot(c, "Authorization") = "a";
    *byok::credential_slot(c, "X-API-KEY") = "b";
    *byok::credential_slot(c, "api-key") = "c";
    *byok::credential_slot(c, "x-goog-api-key") = "d";
    cr_assert(c.authorization == "a" && c.x_api_key == "b" && c.api_key == "c" &&
              c.x_goog_api_key == "d");
    for (const char *name :
         {"authorization", "X-Api-Key", "API-KEY", "X-Goog-Api-Key", "Proxy-Authorization"})
        cr_assert(byok::is_credential_header(name), "%s", name);
    for (const char *name : {"content-type", "x-api-keys", "api", "", "x-byok-provider"})
        cr_assert(!byok::is_credential_header(name), "%s", name);
    cr_assert_null(byok::credential_slot(c, "proxy-authorization"));
}

// Issue 18: credential_slot compares a name only with the entry of its
// length; names of the same length that differ, in any case, are no slot.
Test(client_api, i18_credential_slot_by_length_then_name) {
    byok::ClientCredentials c;
    cr_assert_eq(byok::credential_slot(c, "AUTHORIZATION"), &c.authorization);
    cr_assert_eq(byok::credential_slot(c, "x-API-key"), &c.x_api_key);
    cr_assert_eq(byok::credential_slot(c, "Api-Key"), &c.api_key);
    cr_assert_eq(byok::credential_slot(c, "X-GOOG-API-KEY"), &c.x_goog_api_key);
    for (const char *name : {"authorizatioN ", "authorizatiox", "x-api-kez", "api_key", "apikey",
                             "x-goog-api-kex", "content-length", "host", "x"})
        cr_assert_null(byok::credential_slot(c, name), "%s", name);
}
