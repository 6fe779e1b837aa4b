// Issue 18, session 6: the two JSON scanners of the hit path read a token
// (or a whole piece) at a time — ModelScanner skips nested keys and string
// values in place and reads a compact object's "key":"text" members in one
// run; UsageScanner reads a usage object and a model value that end in the
// piece in place. Each fast path must answer exactly what the byte-at-a-time
// reading answers, wherever the pieces are cut.
#include <criterion/criterion.h>

#include <string>
#include <vector>

#include "lib/body.h"
#include "lib/usage_scanner.h"
#include "lib/util.h"

using namespace byok;

namespace {

// What a scan of `b` cut into `pieces` answers: the error, or the model
// with its offsets and the stream facts.
std::string body_outcome(const std::vector<std::string_view> &pieces) {
    try {
        ModelScanner s;
        for (std::string_view p : pieces) s.feed(p);
        size_t len = s.offset();
        auto m = s.finish();
        const StreamFacts &f = s.stream_facts();
        std::string r = std::to_string(len) + " stream=" + std::to_string(f.stream) +
                        " options=" + std::to_string(f.stream_options) +
                        " start=" + std::to_string(f.object_start) + " ";
        if (!m) return r + "none";
        return r + m->model + "|" + std::to_string(m->begin) + "|" + std::to_string(m->end);
    } catch (const Error &e) {
        return std::string("error: ") + e.what();
    }
}

// Asserts that `b` answers `want` in one piece, cut in two at every byte, in
// three pieces around every byte, and byte by byte.
void check_body_splits(const std::string &b, const std::string &want) {
    std::string_view v(b);
    cr_assert_eq(body_outcome({v}), want, "%s: %s", b.c_str(), body_outcome({v}).c_str());
    for (size_t k = 0; k <= b.size(); k++) {
        std::string got = body_outcome({v.substr(0, k), v.substr(k)});
        cr_assert_eq(got, want, "%s split at %zu: %s", b.c_str(), k, got.c_str());
        if (k > 0 && k < b.size()) {
            got = body_outcome({v.substr(0, k - 1), v.substr(k - 1, 2), v.substr(k + 1)});
            cr_assert_eq(got, want, "%s around %zu: %s", b.c_str(), k, got.c_str());
        }
    }
    std::vector<std::string_view> bytes;
    for (size_t i = 0; i < b.size(); i++) bytes.push_back(v.substr(i, 1));
    cr_assert_eq(body_outcome(bytes), want, "%s byte by byte", b.c_str());
}

const std::string kInvalid = "error: request body is not valid JSON";
const std::string kTwoModels = "error: request body has more than one \"model\"";

bool same(const TokenUsage &a, const TokenUsage &b) {
    return a.known == b.known && a.input == b.input && a.output == b.output &&
           a.cached == b.cached && a.cache_write == b.cache_write;
}

std::string usage_text(const TokenUsage &u, std::string_view model) {
    return std::to_string(u.known) + " " + std::to_string(u.input) + " " +
           std::to_string(u.output) + " " + std::to_string(u.cached) + " " +
           std::to_string(u.cache_write) + " model=" + std::string(model);
}

// Asserts that `b` gives `want` (usage and model) in one piece, cut in two
// at every byte, in three pieces at every pair of cuts 5 bytes apart, and
// byte by byte.
void check_usage_splits(const std::string &b, const std::string &want) {
    std::string_view v(b);
    auto run = [&](const std::vector<std::string_view> &pieces) {
        UsageScanner s;
        for (std::string_view p : pieces) s.feed(p);
        return usage_text(s.result(), s.model());
    };
    cr_assert_eq(run({v}), want, "%s: %s", b.c_str(), run({v}).c_str());
    for (size_t k = 0; k <= b.size(); k++) {
        std::string got = run({v.substr(0, k), v.substr(k)});
        cr_assert_eq(got, want, "%s split at %zu: %s", b.c_str(), k, got.c_str());
        size_t l = std::min(b.size(), k + 5);
        got = run({v.substr(0, k), v.substr(k, l - k), v.substr(l)});
        cr_assert_eq(got, want, "%s split at %zu,%zu: %s", b.c_str(), k, l, got.c_str());
    }
    std::vector<std::string_view> bytes;
    for (size_t i = 0; i < b.size(); i++) bytes.push_back(v.substr(i, 1));
    cr_assert_eq(run(bytes), want, "%s byte by byte", b.c_str());
}

}  // namespace

// --- ModelScanner -------------------------------------------------------------

// The bench body (bench/wrk.lua, 146 bytes): compact members read in one run.
Test(i18_scan3, i18_06_bench_body_at_every_split) {
    std::string b =
        R"({"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one word."}]})";
    check_body_splits(b, "146 stream=0 options=0 start=1 gpt-4o-mini|9|22");
    // The probe's body (bench/hit_client.py: json.dumps, a space after each
    // ':' and ','), and the same with other whitespace.
    b = R"({"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Say hello in one word."}], "stream": true})";
    check_body_splits(b, "172 stream=1 options=0 start=1 gpt-4o-mini|10|23");
    b = "{\"m\": [{\"role\" :\t\"a\"  ,\n \"content\":\r\n\"b\"\n}],\"model\":\"x\"}";
    check_body_splits(b, "56 stream=0 options=0 start=1 x|52|55");
}

// Each way out of the compact-member run, at every split: a value that is
// not a string, whitespace, an escape, a nested container, an empty string,
// a member after a non-string value.
Test(i18_scan3, i18_06_compact_members_hand_over_at_every_split) {
    struct Case {
        std::string body, want;
    } cases[] = {
        {R"({"m":[{"a":"x","n":1,"b":"y","t":true,"c":null,"d":-2.5e3}],"model":"m"})",
         "72 stream=0 options=0 start=1 m|68|71"},
        {R"({"m":[{"a" :"x", "b": "y" ,"c":"z"	}],"model":"m"})",
         "50 stream=0 options=0 start=1 m|46|49"},
        {R"({"m":[{"a\"b":"x\\y\u00e9","c":"\n","\u0041":"\ud83d"}],"model":"m"})",
         "68 stream=0 options=0 start=1 m|64|67"},
        {R"({"m":[{"a":{"b":"c","d":["e","f"]},"g":[],"h":{}}],"model":"m"})",
         "63 stream=0 options=0 start=1 m|59|62"},
        {R"({"m":[{"":"","a":""},{"b":"c"}],"model":"m"})",
         "44 stream=0 options=0 start=1 m|40|43"},
        {R"({"m":[{"a":"x","b":"y"}],"model":"mm","stream":true,"stream_options":{"a":1}})",
         "77 stream=1 options=1 start=1 mm|33|37"},
        // Nested "model" keys are not the model, compact or not.
        {R"({"m":[{"model":"a","model":"b"}],"x":{"model":"c"}})",
         "51 stream=0 options=0 start=1 none"},
    };
    for (const auto &c : cases) check_body_splits(c.body, c.want);
}

// A control byte, a bad escape or a missing bracket inside a compact run is
// refused wherever the pieces are cut.
Test(i18_scan3, i18_06_compact_members_refusals_at_every_split) {
    const char *bad[] = {
        "{\"m\":[{\"a\":\"x\x01y\",\"b\":\"c\"}],\"model\":\"m\"}",
        "{\"m\":[{\"a\x1f\":\"x\"}],\"model\":\"m\"}",
        "{\"m\":[{\"a\":\"x\\q\"}],\"model\":\"m\"}",
        "{\"m\":[{\"a\":\"x\",\"b\"}],\"model\":\"m\"}",
        "{\"m\":[{\"a\":\"x\",}],\"model\":\"m\"}",
        "{\"m\":[{\"a\":\"x\",\"b\":\"y\"]],\"model\":\"m\"}",
        "{\"m\":[{\"a\":\"x\"\"b\":\"y\"}],\"model\":\"m\"}",
        "{\"m\":[{\"a\":\"x\",\"b\":\"y\"}],\"model\":\"m\"",
    };
    for (const char *b : bad) check_body_splits(b, kInvalid);
}

// Strings of every length around the 16-byte blocks, so a string's closing
// quote, a backslash or a control byte falls in every lane, and at the end
// of the piece (the last block read backwards from the end).
Test(i18_scan3, i18_06_string_stops_in_every_lane_and_at_the_piece_end) {
    for (size_t n = 0; n < 40; n++) {
        std::string text(n, 'x');
        std::string b = "{\"a\":[{\"t\":\"" + text + "\"}],\"model\":\"" + text + "\"}";
        std::string want = std::to_string(b.size()) + " stream=0 options=0 start=1 " + text + "|" +
                           std::to_string(b.size() - n - 3) + "|" + std::to_string(b.size() - 1);
        check_body_splits(b, want);
        if (n == 0) continue;
        std::string esc = text;
        esc[n / 2] = '\\';
        esc.insert(n / 2 + 1, "\"");
        std::string decoded = text;
        decoded[n / 2] = '"';
        b = "{\"a\":[{\"t\":\"" + esc + "\"}],\"model\":\"" + esc + "\"}";
        want = std::to_string(b.size()) + " stream=0 options=0 start=1 " + decoded + "|" +
               std::to_string(b.size() - esc.size() - 3) + "|" + std::to_string(b.size() - 1);
        check_body_splits(b, want);
        std::string ctl = text;
        ctl[n - 1] = '\n';
        check_body_splits("{\"a\":[{\"t\":\"" + ctl + "\"}],\"model\":\"m\"}", kInvalid);
    }
}

// Escapes split anywhere inside the model and top-level keys, whitespace
// runs (pretty-printed bodies) between every token.
Test(i18_scan3, i18_06_escapes_and_whitespace_runs_at_every_split) {
    check_body_splits("{\"mo\\u0064el\":\"g\\u00e9\\ud83d\\ude00\\\"\\\\\\/\\n\",\"x\":1}",
                      "50 stream=0 options=0 start=1 g\xc3\xa9\xf0\x9f\x98\x80\"\\/\n|14|43");
    check_body_splits(
        "\r\n {\n    \"model\" :\t \"a\" ,\n    \"messages\" : [\n      { \"role\" : \"user\" "
        "}\n    ] ,\n    \"stream\"  :  true\n}\n\t ",
        "105 stream=1 options=0 start=4 a|20|23");
    check_body_splits("{\"stream\":false,\"stream_options\":null,\"model\":\"x\"}",
                      "50 stream=0 options=1 start=1 x|46|49");
    check_body_splits("{\"stream\":\"true\",\"model\":\"x\"}",
                      "29 stream=0 options=0 start=1 x|25|28");
}

// The duplicate-model refusal after strings long enough to cross blocks and
// the compact run; the first model's value is any type.
Test(i18_scan3, i18_06_duplicate_model_after_a_long_string_at_every_split) {
    std::string longtext(70, 'y');
    check_body_splits("{\"model\":\"a\",\"m\":[{\"c\":\"" + longtext + "\"}],\"model\":\"b\"}",
                      kTwoModels);
    check_body_splits("{\"model\":null,\"" + longtext + "\":\"" + longtext + "\",\"model\":1}",
                      kTwoModels);
    check_body_splits("{\"model\":{\"model\":\"" + longtext + "\"},\"mod\\u0065l\":\"b\"}",
                      kTwoModels);
    // The refusal comes at the second model's colon: a later syntax error
    // does not change it, an earlier one wins.
    check_body_splits("{\"model\":\"a\",\"model\":\"b\",}", kTwoModels);
    check_body_splits("{\"model\":\"a\",,\"model\":\"b\"}", kInvalid);
}

// --- UsageScanner ---------------------------------------------------------------

// A usage object read in place and the same object gathered across pieces
// give the same counts; so does a model value.
Test(i18_scan3, i18_06_usage_objects_split_anywhere) {
    check_usage_splits(
        R"({"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}})",
        "1 9 2 0 0 model=gpt-4o-mini");
    check_usage_splits(
        "{\"usage\" : {\n  \"input_tokens\" : 10 ,\n  \"cache_read_input_tokens\": 20,\n  "
        "\"output_tokens\":9,\"cache_creation\":{\"a\":[1,{\"b\":null}]},\"x\":-1.5e+3,\"y\":"
        "true}}",
        "1 30 9 20 0 model=");
    check_usage_splits(
        R"({"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":3,"thoughtsTokenCount":2,"cachedContentTokenCount":4},"modelVersion":"gemini-x"})",
        "1 7 5 4 0 model=gemini-x");
    check_usage_splits(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":21,\"prompt_tokens_details\":{"
        "\"cached_tokens\":8},\"completion_tokens\":5}}\n\ndata: [DONE]\n\n",
        "1 21 5 8 0 model=");
}

// Objects that the in-place reading must leave to capture(): a newline in
// a string (dropped), a bare value holding a quote or bracket (read the way
// the bracket count reads it), one over kMaxCapture (dropped), malformed
// ones (ignored) — each followed by a good object the scan must still find.
Test(i18_scan3, i18_06_usage_objects_the_in_place_reading_hands_over) {
    const std::string good = ",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
    // After the newline the scan is outside a string again: the quote
    // after "b" opens one, so the next object is read as text.
    check_usage_splits("{\"usage\":{\"prompt_tokens\":5,\"n\":\"a\nb\"}" + good,
                       "0 0 0 0 0 model=");
    check_usage_splits("{\"usage\":{\"prompt_tokens\":5,\"n\":\"a\nb}\n" + good.substr(1),
                       "1 3 4 0 0 model=");
    check_usage_splits("{\"usage\":{\"prompt_tokens\":5,\"n\":\"a\\\nb\"}" + good,
                       "0 0 0 0 0 model=");
    check_usage_splits("{\"usage\":{\"prompt_tokens\":5,\"n\":x\"y\",\"z\":1}" + good,
                       "1 5 4 0 0 model=");
    check_usage_splits("{\"usage\":{\"prompt_tokens\":5,\"n\":x{\"prompt_tokens\":8}}" + good,
                       "1 5 4 0 0 model=");
    check_usage_splits("{\"usage\":{\"prompt_tokens\":5,\"n\":x[1]}" + good, "1 3 4 0 0 model=");
    check_usage_splits("{\"usage\":{\"prompt_tokens\":5,}" + good, "1 3 4 0 0 model=");
    check_usage_splits("{\"usage\":{\"prompt_tokens\":6}}", "1 6 0 0 0 model=");
    check_usage_splits("{\"usage\":{\"prompt_tokens\":6", "0 0 0 0 0 model=");
    // A usage object of exactly kMaxCapture bytes is read; one byte more is not.
    auto sized = [](size_t total) {
        std::string head = "{\"prompt_tokens\":5,\"pad\":\"";
        return "{\"usage\":" + head + std::string(total - head.size() - 2, 'x') + "\"}}";
    };
    for (size_t total : {UsageScanner::kMaxCapture, UsageScanner::kMaxCapture + 1}) {
        std::string b = sized(total);
        bool want = total <= UsageScanner::kMaxCapture;
        for (size_t cut : {size_t{0}, size_t{9}, size_t{10}, b.size() / 2, b.size() - 1}) {
            UsageScanner s;
            s.feed(std::string_view(b).substr(0, cut));
            s.feed(std::string_view(b).substr(cut));
            cr_assert_eq(s.result().known, want, "total %zu cut %zu", total, cut);
        }
    }
}

// A model value read in place keeps the kMaxModel cap and the escape rule.
Test(i18_scan3, i18_06_model_value_in_place_at_every_split) {
    std::string at_cap(UsageScanner::kMaxModel, 'm');
    check_usage_splits("{\"model\":\"" + at_cap + "\",\"model\":\"b\"}",
                       "0 0 0 0 0 model=" + at_cap);
    check_usage_splits("{\"model\":\"" + at_cap + "x\",\"model\":\"b\"}", "0 0 0 0 0 model=b");
    check_usage_splits(R"({"model":"a\"b","modelVersion":"c"})", "0 0 0 0 0 model=c");
    check_usage_splits(R"({"model":"","model":"d"})", "0 0 0 0 0 model=d");
    check_usage_splits("{\"model\" :\n\"e\"}", "0 0 0 0 0 model=e");
    TokenUsage none;
    cr_assert(same(UsageScanner::scan("{\"model\":\"e"), none));
}
