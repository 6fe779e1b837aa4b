#include <criterion/criterion.h>

#include <string>

#include "lib/layout.h"
#include "lib/util.h"
#include "tests/unit/test_support.h"

using namespace byok;

namespace {
using byok::test::error_of;
}  // namespace

Test(util, base64_round_trip_all_lengths) {
    for (size_t n = 0; n < 40; n++) {
        Bytes b(n);
        for (size_t i = 0; i < n; i++) b[i] = static_cast<uint8_t>(i * 37 + n);
        std::string enc = base64_encode(b);
        cr_assert_eq(enc.size(), (n + 2) / 3 * 4);
        cr_assert(base64_decode(enc) == b, "length %zu", n);
    }
    cr_assert_eq(base64_encode(Bytes{'f', 'o', 'o', 'b'}), "Zm9vYg==");
}

Test(util, base64_is_strict) {
    for (const char *bad : {"Zm9vYg=", "Zm9v Yg==", "Zm9vYg",
                            "Zm=vYg==", "Zm9vYh==", "====", "Zm9v\n", "Zm9-", "A==="}) {
        cr_assert_eq(error_of([&] { base64_decode(bad); }), "invalid base64", "%s", bad);
    }
    cr_assert(base64_decode("").empty());
}

Test(util, hex_and_sha256) {
    uint8_t b[] = {0x00, 0xab, 0xff};
    cr_assert_eq(hex_encode(b, 3), "00abff");
    cr_assert_eq(sha256_hex("abc"),
                 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

Test(util, constant_time_equal) {
    cr_assert(constant_time_equal("abc", "abc"));
    cr_assert(constant_time_equal("", ""));
    cr_assert_not(constant_time_equal("abc", "abd"));
    cr_assert_not(constant_time_equal("abc", "abcd"));
    cr_assert_not(constant_time_equal("", "a"));
}

Test(util, timestamps) {
    cr_assert_eq(iso8601_utc(0), "1970-01-01T00:00:00Z");
    cr_assert_eq(iso8601_utc(1795321860), "2026-11-22T04:31:00Z");
    cr_assert_eq(yyyymmdd_utc(1795321860), "20261122");
}

Test(util, safe_header_value) {
    cr_assert(safe_header_value("gpt-4o mini\twith tab"));
    cr_assert(safe_header_value("caf\xc3\xa9"));
    cr_assert(safe_header_value(""));
    cr_assert_not(safe_header_value("a\rb"));
    cr_assert_not(safe_header_value("a\nb"));
    cr_assert_not(safe_header_value(std::string("a\0b", 3)));
    cr_assert_not(
        safe_header_value("a\x01"
                          "b"));
    cr_assert_not(safe_header_value("a\x7f"));
}

Test(util, json_error_escapes) {
    cr_assert_eq(json_error("bad", "say \"hi\"\\\n\x01", "t"),
                 "{\"error\":{\"message\":\"say \\\"hi\\\"\\\\\\u000a\\u0001\",\"type\":\"t\","
                 "\"code\":\"bad\"}}");
    cr_assert_eq(
        json_error("c", "m"),
        "{\"error\":{\"message\":\"m\",\"type\":\"invalid_request_error\",\"code\":\"c\"}}");
}

Test(util, secret_string_moves_and_clears) {
    SecretString a("sk-secret-value-that-is-long-enough-for-heap");
    SecretString b(std::move(a));
    cr_assert(a.empty());
    cr_assert_eq(b.view(), "sk-secret-value-that-is-long-enough-for-heap");
    SecretString c;
    c = std::move(b);
    cr_assert(b.empty());
    cr_assert_eq(c.size(), 44u);
    c.clear();
    cr_assert(c.empty());
}

// The bytes a SecretString held are gone from its storage after clear() —
// the whole capacity, also bytes past the current size from earlier, longer
// contents (short-string buffer and heap block alike).
Test(util, secret_string_clear_wipes_the_whole_capacity) {
    for (const char *secret : {"sk-short", "sk-secret-value-that-is-long-enough-for-heap"}) {
        SecretString s(secret);
        s.mutable_str().resize(3);  // earlier bytes now lie past size()
        const char *p = s.data();
        size_t cap = s.mutable_str().capacity();
        s.clear();
        cr_assert_eq(s.data(), p, "clear() keeps the storage");
        for (size_t i = 0; i < cap; i++) cr_assert_eq(p[i], 0, "%s: byte %zu survived", secret, i);
    }
}

Test(util, random_bytes) {
    Bytes a = random_bytes(32), b = random_bytes(32);
    cr_assert_eq(a.size(), 32u);
    cr_assert(a != b);
}

Test(util, valid_id_and_layout) {
    cr_assert(valid_id("acme"));
    cr_assert(valid_id("a"));
    cr_assert(valid_id("0-a_b"));
    cr_assert(valid_id(std::string(64, 'a')));
    cr_assert_not(valid_id(std::string(65, 'a')));
    cr_assert_not(valid_id(""));
    cr_assert_not(valid_id("-a"));
    cr_assert_not(valid_id("_a"));
    cr_assert_not(valid_id("Acme"));
    cr_assert_not(valid_id("a b"));
    cr_assert_not(valid_id("a}b"));
    Layout l;
    cr_assert_eq(l.project("p1"), "byok:project:{p1}");
    cr_assert_eq(l.keys("p1"), "byok:{p1}:keys");
    cr_assert_eq(l.usage("p1", "20261122"), "byok:{p1}:usage:20261122");
    cr_assert_eq(Layout("x:").apikey("ab"), "x:apikey:ab");
}

Test(util, i11_06_status_errors_come_from_one_table) {
    cr_assert_eq(error_type(401), "authentication_error");
    cr_assert_eq(error_type(403), "permission_error");
    cr_assert_eq(error_type(404), "not_found_error");
    cr_assert_eq(error_type(502), "api_error");
    cr_assert_eq(error_type(504), "api_error");
    cr_assert_eq(error_type(413), "invalid_request_error");
    cr_assert_eq(status_error_json(413),
                 R"({"error":{"message":"request body is larger than the limit",)"
                 R"("type":"invalid_request_error","code":"payload_too_large"}})");
    cr_assert_eq(status_error_json(502),
                 R"({"error":{"message":"the provider could not be reached",)"
                 R"("type":"api_error","code":"upstream_unreachable"}})");
    for (int st : {400, 401, 403, 404, 405, 408, 413, 414, 429, 500, 502, 503, 504})
        cr_assert(status_error_json(st).find("\"code\":\"http_") == std::string::npos, "%d", st);
    cr_assert_eq(status_error_json(418),
                 R"({"error":{"message":"HTTP error 418","type":"invalid_request_error",)"
                 R"("code":"http_418"}})");
}
