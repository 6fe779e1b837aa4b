#include <criterion/criterion.h>

#include <string>
#include <vector>

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

// --- issue 10 item 4: the incremental scanner ------------------------------------

namespace {

// What a scan yields, as one comparable string: the error, "none", or the
// model with its offsets.
template <class Feed>
std::string outcome(Feed feed) {
    try {
        ModelScanner s;
        feed(s);
        auto m = s.finish();
        if (!m) return "none";
        return m->model + "|" + std::to_string(m->begin) + "|" + std::to_string(m->end);
    } catch (const Error &e) {
        return std::string("error: ") + e.what();
    }
}

std::string one_shot(const std::string &b) {
    return outcome([&](ModelScanner &s) { s.feed(b); });
}

const std::vector<std::string> &corpus() {
    static const std::vector<std::string> c = {
        R"({"messages":[{"role":"user","content":"hi"}], "model" : "gpt-4o","n":1})",
        R"({"meta":{"model":"nested"},"x":[{"model":"arr"}],"model":"top"})",
        R"({"mod\u0065l":"a\/b\"c\\d\n\u00e9\ud83d\ude00"})",
        R"({"x":"\ud800 lone is tolerated here","model":"m"})",
        R"({"x":"\ud800\u0041\udc00\ud83d\ude00","model":"m","y":"\u00e9"})",
        R"({"model":"\ud83d"})",
        R"({"model":"\ude00x"})",
        R"({"model":"\ud83d\u0041"})",
        R"({"model":"\ud83d\ude0"})",
        R"({"\ud83d":1})",
        R"({"model\u0000":"x","modelx":"y","mode":"z","":"w"})",
        R"({"model":"a","model":"b"})",
        R"({"model":1,"model":"b"})",
        R"({"model":null})",
        R"({"model":42.5e-3})",
        R"({"model":{"model":"x"}})",
        R"({"model":[["model"]],"a":true,"b":false,"c":null})",
        " \t\r\n{\"a\":-0.5e+10,\"b\":[true,false,null,0,-1,1.25,3E2]} \n",
        "{\"a\":{\"b\":{}},\"c\":\"\\b\\f\\r\\t\",\"model\":\"x\\u001fy\"}",
        "{}",
        "{\"a\":[]}",
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
        "{\"a\":1e+}",
        "{\"a\":tru}",
        "{\"a\":truex}",
        "{\"a\":nul}",
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
        "{\"a\":[}",
        "{\"a\":{]}",
        "{\"a\":1]",
        "{\"model\":\"gpt-4o\"",
        "{\"model\":\"gpt-4o\",\"messages\":[{\"content\":\"" + std::string(300, 'x') + "\"}]}",
    };
    return c;
}

}  // namespace

Test(body, i10_04_split_at_every_byte_matches_one_shot) {
    for (const std::string &b : corpus()) {
        std::string want = one_shot(b);
        for (size_t k = 0; k <= b.size(); k++) {
            std::string got = outcome([&](ModelScanner &s) {
                s.feed(std::string_view(b).substr(0, k));
                s.feed(std::string_view(b).substr(k));
            });
            cr_assert_eq(got, want, "%s split at %zu: %s vs %s", b.c_str(), k, got.c_str(),
                         want.c_str());
        }
        std::string bytewise = outcome([&](ModelScanner &s) {
            for (char c : b) s.feed(std::string_view(&c, 1));
        });
        cr_assert_eq(bytewise, want, "%s byte by byte", b.c_str());
    }
}

Test(body, i10_04_split_in_three_and_empty_pieces) {
    for (const std::string &b : corpus()) {
        if (b.size() > 80) continue;
        std::string want = one_shot(b);
        for (size_t k = 0; k <= b.size(); k++) {
            for (size_t l = k; l <= b.size(); l++) {
                std::string got = outcome([&](ModelScanner &s) {
                    std::string_view v(b);
                    s.feed(v.substr(0, k));
                    s.feed({});
                    s.feed(v.substr(k, l - k));
                    s.feed(v.substr(l));
                });
                cr_assert_eq(got, want, "%s split at %zu,%zu", b.c_str(), k, l);
            }
        }
    }
}

Test(body, i10_04_one_shot_results_are_the_documented_ones) {
    // The one-shot form is the scanner itself: pin what it answers.
    cr_assert_eq(one_shot(corpus()[0]), "gpt-4o|56|64");
    cr_assert_eq(one_shot(corpus()[1]), "top|57|62");
    cr_assert_eq(one_shot(corpus()[4]), "m|46|49");
    cr_assert_eq(one_shot(corpus()[9]), "error: " + kInvalid);
    cr_assert_eq(one_shot(corpus()[10]), "none");
    cr_assert_eq(one_shot(corpus()[12]), "error: request body has more than one \"model\"");
    cr_assert_eq(one_shot(corpus()[15]), "none");
    cr_assert_eq(one_shot(corpus()[18]), "x\x1fy|37|47");
    ModelScanner s;
    s.feed("{\"a\":");
    cr_assert_eq(s.offset(), 5u);
}

Test(body, i10_04_model_token_escapes) {
    cr_assert_eq(model_token("openai/gpt-4o"), "\"openai/gpt-4o\"");
    cr_assert_eq(model_token("we\"ird\\\n"), "\"we\\\"ird\\\\\\u000a\"");
    cr_assert_eq(find_model("{\"model\":" + model_token("a\"\\\x01\xc3\xa9") + "}")->model,
                 "a\"\\\x01\xc3\xa9");
}
