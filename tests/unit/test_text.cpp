// lib/text: the one control-character rule per use, the one JSON string
// escaper and the one display policy (issue 12 item 1).
#include <criterion/criterion.h>

#include <string>

#include "lib/body.h"
#include "lib/crypto.h"
#include "lib/redact.h"
#include "lib/redis_reply.h"
#include "lib/text.h"
#include "tests/unit/test_support.h"

using namespace byok;

Test(text, i12_01_control_rule_is_c0_and_del) {
    for (int c = 0; c < 256; ++c) {
        bool want = c < 0x20 || c == 0x7f;
        cr_assert_eq(is_control(static_cast<unsigned char>(c)), want, "byte %d", c);
    }
    cr_assert(contains_control("a\x7f"));
    cr_assert(contains_control(std::string("a\0b", 3)));
    cr_assert_not(contains_control("caf\xc3\xa9 with space"));
}

Test(text, i12_01_header_value_rule_allows_only_tab_among_controls) {
    cr_assert(safe_header_value("a\tb c"));
    cr_assert_not(safe_header_value("a\rb"));
    cr_assert_not(safe_header_value("a\x7f"));
}

Test(text, i12_01_token_rule_is_visible_ascii) {
    cr_assert(is_token("user.name-1"));
    cr_assert_not(is_token(""));
    cr_assert_not(is_token("a b"));
    cr_assert_not(is_token("caf\xc3\xa9"));
    cr_assert_not(is_token("a\x7f"));
}

Test(text, i12_01_one_json_escaper_escapes_del) {
    cr_assert_eq(json_string("a\"\\\n\x01\x7f\xc3\xa9"),
                 "\"a\\\"\\\\\\u000a\\u0001\\u007f\xc3\xa9\"");
    // The model rewrite uses the same escaper (it used to leave DEL raw).
    cr_assert_eq(model_token("m\x7f"), "\"m\\u007f\"");
    cr_assert_eq(find_model("{\"model\":" + model_token("m\x7f") + "}")->model, "m\x7f");
}

Test(text, i12_01_utf8_prefix_never_splits_a_character) {
    cr_assert_eq(utf8_prefix("ab\xc3\xa9", 3), "ab");
    cr_assert_eq(utf8_prefix("ab\xc3\xa9", 4), "ab\xc3\xa9");
    cr_assert_eq(utf8_prefix("\xe2\x82\xac\xe2\x82\xac", 5), "\xe2\x82\xac");
    cr_assert_eq(utf8_prefix("abc", 0), "");
}

Test(text, i12_01_one_line_is_the_one_display_policy) {
    cr_assert_eq(one_line("  a\r\n\tb \x7f c  ", 100), "a b c");
    cr_assert_eq(one_line("xy\xc3\xa9", 3), "xy");
    // The redactor and the master-key error message both apply it.
    cr_assert_eq(redact_excerpt(" a\n\nb ", {}), "a b");
    KeyRing ring = KeyRing::parse("k1 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n", "t");
    Sealed s = seal(ring, "secret-value", Binding{"acme", "openai"});
    s.kid = "bad\nkid";
    std::string msg = byok::test::error_of([&] {
        open_sealed(ring, s, Binding{"acme", "openai"});
    });
    cr_assert_eq(msg, "unknown master key id 'bad kid'");
}

// issue 12 item 2: the one Redis reply → map conversion.
Test(text, i12_02_to_fields_is_the_one_reply_to_map) {
    Reply nil;
    cr_assert(to_fields(nil).empty());
    Reply arr;
    arr.type = Reply::Type::Array;
    for (const char *s : {"a", "1", "b", "2", "dangling"}) {
        Reply e;
        e.type = Reply::Type::String;
        e.str = s;
        arr.elements.push_back(e);
    }
    FieldMap m = to_fields(arr);
    cr_assert_eq(m.size(), 2u);
    cr_assert_eq(m["a"], "1");
    cr_assert_eq(m["b"], "2");
    Reply str;
    str.type = Reply::Type::String;
    cr_assert_eq(byok::test::error_of([&] { to_fields(str); }), "expected an array reply");
    Reply err;
    err.type = Reply::Type::Error;
    cr_assert(err.failed());
    cr_assert_not(arr.failed());
}

// Issue 18: the header value rule runs 16 bytes at a time, without a byte
// loop for short values and tails (overlapping loads, session 7): every
// length up to three blocks, every position, every byte value gives the byte
// rule.
Test(text, i18_header_value_rule_same_at_every_position) {
    for (size_t len = 0; len <= 50; ++len) {
        cr_assert(safe_header_value(std::string(len, 'x')), "len %zu", len);
        cr_assert(safe_header_value(std::string(len, '\t')), "len %zu tabs", len);
        for (size_t pos = 0; pos < len; ++pos) {
            for (int c = 0; c < 256; ++c) {
                std::string v(len, 'x');
                v[pos] = static_cast<char>(c);
                bool want = !(is_control(static_cast<unsigned char>(c)) && c != '\t');
                cr_assert_eq(safe_header_value(v), want, "len %zu pos %zu byte %d", len, pos, c);
            }
        }
    }
    cr_assert(safe_header_value(""));
    cr_assert(safe_header_value(std::string(40, '\xff')));
}

// The one case-insensitive compare (issue 15 leftovers item 4): client_api's
// header names and bearer scheme, admin's media type and multipart's
// parameters all use it.
Test(text, left_04_iequals_folds_ascii_letters_only) {
    cr_assert(iequals("Content-Type", "content-type"));
    cr_assert(iequals("BEARER", "bearer"));
    cr_assert(iequals("", ""));
    cr_assert_not(iequals("bearer", "bearer "));
    cr_assert_not(iequals("x-api-key", "x_api_key"));
    // Only A-Z fold: '@' (0x40) and '`' (0x60), '[' and '{' differ by 0x20 too.
    cr_assert_not(iequals("@", "`"));
    cr_assert_not(iequals("[", "{"));
    // Non-ASCII bytes compare as they are (no locale folding of Latin-1 É/é).
    cr_assert_not(iequals("\xc9", "\xe9"));
    cr_assert(iequals("caf\xc3\xa9", "CAF\xc3\xa9"));
    cr_assert_eq(ascii_lower('Z'), 'z');
    cr_assert_eq(ascii_lower('z'), 'z');
    cr_assert_eq(ascii_lower('\xc9'), '\xc9');
}

// The one OWS trim (admin's body and media type, the Bearer parser,
// multipart's header parameters): spaces and tabs only.
Test(text, left_04_trim_ows_strips_spaces_and_tabs_only) {
    cr_assert_eq(trim_ows(" \tapplication/json\t "), "application/json");
    cr_assert_eq(trim_ows("  "), "");
    cr_assert_eq(trim_ows("a b"), "a b");
    cr_assert_eq(trim_ows("\r\nx\n"), "\r\nx\n");  // CR and LF are not OWS
    cr_assert(is_ows(' ') && is_ows('\t'));
    cr_assert_not(is_ows('\n') || is_ows('\v') || is_ows('\xa0'));
}
