#include <criterion/criterion.h>

#include <string>

#include "lib/body.h"
#include "lib/util.h"
#include "tests/unit/test_support.h"

using namespace byok;

namespace {

using byok::test::error_of;

const std::string kInvalid = "request body is not valid JSON";

}  // namespace

Test(body, finds_top_level_model_with_offsets) {
    std::string b = R"({"messages":[{"role":"user","content":"hi"}], "model" : "gpt-4o","n":1})";
    auto m = find_model(b);
    cr_assert(m.has_value());
    cr_assert_eq(m->model, "gpt-4o");
    cr_assert_eq(b.substr(m->begin, m->end - m->begin), "\"gpt-4o\"");
}

Test(body, ignores_nested_model_keys) {
    std::string b = R"({"meta":{"model":"nested"},"x":[{"model":"arr"}],"model":"top"})";
    cr_assert_eq(find_model(b)->model, "top");
    cr_assert_not(find_model(R"({"meta":{"model":"nested"}})").has_value());
}

Test(body, absent_or_non_string_model) {
    cr_assert_not(find_model("{}").has_value());
    cr_assert_not(find_model(R"({"model":null})").has_value());
    cr_assert_not(find_model(R"({"model":42})").has_value());
    cr_assert_not(find_model(R"({"model":{"a":"b"}})").has_value());
    cr_assert_not(find_model(R"({"models":"x","mode":"y"})").has_value());
}

Test(body, unescapes_model_and_escaped_key) {
    auto m = find_model(R"({"mod\u0065l":"a\/b\"c\\d\n\u00e9\ud83d\ude00"})");
    cr_assert(m.has_value());
    cr_assert_eq(m->model, "a/b\"c\\d\n\xc3\xa9\xf0\x9f\x98\x80");
    // Escaped strings elsewhere are validated but not decoded.
    cr_assert_eq(find_model(R"({"x":"\ud800 lone is tolerated here","model":"m"})")->model, "m");
}

Test(body, rejects_lone_surrogates_in_model) {
    cr_assert_eq(error_of([] { find_model(R"({"model":"\ud83d"})"); }), kInvalid);
    cr_assert_eq(error_of([] { find_model(R"({"model":"\ude00x"})"); }), kInvalid);
    cr_assert_eq(error_of([] { find_model(R"({"model":"\ud83d\u0041"})"); }), kInvalid);
}

Test(body, rejects_invalid_json) {
    const char *bad[] = {
        "",
        "   ",
        "[]",
        "\"model\"",
        "{",
        "{\"model\"}",
        "{\"model\":}",
        "{\"a\":1,}",
        "{\"a\":1}x",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":-}",
        "{\"a\":1e}",
        "{\"a\":tru}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12g4\"}",
        "{\"a\":[1,]}",
        "{\"a\":[1 2]}",
        "{a:1}",
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"unterminated}",
        "{\"a\":1}{}",
        "{\"a\" 1}",
        "{,}",
        "{\"a\":NaN}",
    };
    for (const char *b : bad) cr_assert_eq(error_of([&] { find_model(b); }), kInvalid, "%s", b);
    // Well-formed variants still pass.
    for (const char *ok : {"{}", " {\"a\":[]} \n", "{\"a\":-0.5e+10,\"b\":[true,false,null]}",
                           "{\"a\":{\"b\":{}},\"c\":\"\\b\\f\\r\\t\"}"}) {
        cr_assert_eq(error_of([&] { find_model(ok); }), "<no error>", "%s", ok);
    }
}

Test(body, depth_limit_64) {
    auto nested = [](int depth) {
        // depth counts the top-level object as 1.
        return "{\"a\":" + std::string(depth - 1, '[') + std::string(depth - 1, ']') + "}";
    };
    cr_assert_eq(error_of([&] { find_model(nested(64)); }), "<no error>");
    cr_assert_eq(error_of([&] { find_model(nested(65)); }), kInvalid);
    cr_assert_eq(error_of([&] { find_model(std::string(100000, '[')); }), kInvalid);
    std::string deep_obj = "{";
    for (int i = 0; i < 70; i++) deep_obj += "\"a\":{";
    deep_obj += std::string(71, '}');
    cr_assert_eq(error_of([&] { find_model(deep_obj); }), kInvalid);
}

Test(body, duplicate_model_refused) {
    cr_assert_neq(error_of([] { find_model(R"({"model":"a","model":"b"})"); }), "<no error>");
}

Test(body, replace_model_reescapes) {
    std::string b = R"({"model": "gpt-4o", "stream":true})";
    auto m = find_model(b);
    std::string out = replace_model(b, *m, "openai/gpt-4o");
    cr_assert_eq(out, R"({"model": "openai/gpt-4o", "stream":true})");
    out = replace_model(b, *m, "we\"ird\\\n");
    cr_assert_eq(out, "{\"model\": \"we\\\"ird\\\\\\u000a\", \"stream\":true}");
    auto again = find_model(out);
    cr_assert_eq(again->model, "we\"ird\\\n");
    // Escaped input model replaced as a whole token.
    std::string e = R"({"model":"gp\u0074-4o"})";
    auto em = find_model(e);
    cr_assert_eq(replace_model(e, *em, "x"), R"({"model":"x"})");
}
