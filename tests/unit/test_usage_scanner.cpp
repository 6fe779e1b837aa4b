#include <criterion/criterion.h>

#include <string>
#include <vector>

#include "lib/usage_scanner.h"

using namespace byok;

namespace {

struct Sample {
    const char *name;
    std::string body;
    TokenUsage want;
};

TokenUsage U(uint64_t in, uint64_t out, uint64_t cached = 0, uint64_t write = 0) {
    TokenUsage u;
    u.known = true;
    u.input = in;
    u.output = out;
    u.cached = cached;
    u.cache_write = write;
    return u;
}

bool same(const TokenUsage &a, const TokenUsage &b) {
    return a.known == b.known && a.input == b.input && a.output == b.output &&
           a.cached == b.cached && a.cache_write == b.cache_write;
}

const std::vector<Sample> &samples() {
    static const std::vector<Sample> s = {
        {"openai_json",
         R"({"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"say \"usage\": {\"prompt_tokens\": 999}"}}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":2}}})",
         U(12, 7, 4)},
        {"openai_sse",
         "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"
         "data: {\"id\":\"c\",\"choices\":[{\"delta\":{}}],\"usage\":null}\n\n"
         "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":"
         "5,\"total_tokens\":35}}\n\n"
         "data: [DONE]\n\n",
         U(30, 5)},
        {"openai_embeddings",
         R"({"object":"list","data":[{"embedding":[0.1,-0.2]}],"usage":{"prompt_tokens":8,"total_tokens":8}})",
         U(8, 0)},
        {"openai_responses",
         R"({"id":"r","output":[],"usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":60},"output_tokens":20,"output_tokens_details":{"reasoning_tokens":5},"total_tokens":120}})",
         U(100, 20, 60)},
        {"anthropic_json",
         R"({"id":"msg","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"cache_creation_input_tokens":3,"cache_read_input_tokens":20,"output_tokens":9,"cache_creation":{"ephemeral_5m_input_tokens":3},"server_tool_use":{"web_search_requests":0}}})",
         U(33, 9, 20, 3)},
        {"anthropic_sse",
         "event: message_start\n"
         "data: "
         "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,"
         "\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n"
         "event: content_block_delta\n"
         "data: "
         "{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"a\\\"b\"}"
         "}\n\n"
         "event: message_delta\n"
         "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{"
         "\"output_tokens\":15}}\n\n"
         "event: message_stop\n"
         "data: {\"type\":\"message_stop\"}\n\n",
         U(30, 15, 5)},
        {"gemini_json",
         R"({"candidates":[{"content":{"parts":[{"text":"x"}]}}],"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":4,"thoughtsTokenCount":2,"totalTokenCount":17,"cachedContentTokenCount":6,"promptTokensDetails":[{"modality":"TEXT","tokenCount":11}]}})",
         U(11, 6, 6)},
        // Google answers non-streamed calls pretty-printed: newlines and
        // indentation between the tokens of the usage object.
        {"gemini_json_pretty",
         "{\n  \"candidates\": [\n    {\n      \"content\": {\n        \"parts\": [\n"
         "          {\n            \"text\": \"Hi\"\n          }\n        ],\n"
         "        \"role\": \"model\"\n      }\n    }\n  ],\n  \"usageMetadata\": {\n"
         "    \"promptTokenCount\": 5,\n    \"candidatesTokenCount\": 2,\n"
         "    \"totalTokenCount\": 7,\n    \"promptTokensDetails\": [\n      {\n"
         "        \"modality\": \"TEXT\",\n        \"tokenCount\": 5\n      }\n    ]\n"
         "  },\n  \"modelVersion\": \"gemini-2.0-flash\"\n}\n",
         U(5, 2)},
        {"openai_json_pretty",
         "{\r\n  \"id\": \"c1\",\r\n  \"usage\": {\r\n    \"prompt_tokens\": 12,\r\n"
         "    \"completion_tokens\": 7,\r\n    \"prompt_tokens_details\": {\r\n"
         "      \"cached_tokens\": 4\r\n    }\r\n  }\r\n}",
         U(12, 7, 4)},
        {"gemini_sse",
         "data: "
         "{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":1}}"
         "\r\n\r\n"
         "data: "
         "{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":8,"
         "\"totalTokenCount\":17}}\r\n\r\n",
         U(9, 8)},
        {"no_usage", R"({"error":{"message":"no \"usage\": {\"prompt_tokens\":1}","type":"x"}})",
         TokenUsage{}},
        {"escaped_key_is_not_usage", R"({"us\u0061ge":{"prompt_tokens":5}})", TokenUsage{}},
    };
    return s;
}

}  // namespace

Test(usage_scanner, each_format_one_shot) {
    for (const auto &s : samples()) {
        TokenUsage got = UsageScanner::scan(s.body);
        cr_assert(same(got, s.want), "%s: got known=%d in=%lu out=%lu cached=%lu write=%lu", s.name,
                  got.known, (unsigned long)got.input, (unsigned long)got.output,
                  (unsigned long)got.cached, (unsigned long)got.cache_write);
    }
}

// A usage object split across TCP reads anywhere: every single split point,
// and the body fed one byte at a time.
Test(usage_scanner, every_split_point_gives_the_one_shot_answer) {
    for (const auto &s : samples()) {
        TokenUsage whole = UsageScanner::scan(s.body);
        for (size_t cut = 0; cut <= s.body.size(); cut++) {
            UsageScanner sc;
            sc.feed(std::string_view(s.body).substr(0, cut));
            sc.feed(std::string_view(s.body).substr(cut));
            cr_assert(same(sc.result(), whole), "%s: split at %zu differs", s.name, cut);
        }
        UsageScanner bytewise;
        for (char c : s.body) bytewise.feed(std::string_view(&c, 1));
        cr_assert(same(bytewise.result(), whole), "%s: byte-wise feed differs", s.name);
    }
}

Test(usage_scanner, oversized_usage_object_is_ignored_and_scanning_continues) {
    std::string big = "{\"usage\":{\"note\":\"" + std::string(UsageScanner::kMaxCapture, 'x') +
                      "\"}}\n{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
    TokenUsage u = UsageScanner::scan(big);
    cr_assert(same(u, U(3, 4)));
}

Test(usage_scanner, null_and_non_object_usage_are_not_usage) {
    cr_assert(!UsageScanner::scan(R"({"usage":null})").known);
    cr_assert(!UsageScanner::scan(R"({"usage":"usage"})").known);
    cr_assert(!UsageScanner::scan(R"(["usage",{"prompt_tokens":1}])").known);
}

// ---- SSE usage-only event dropper -------------------------------------------

namespace {

const std::string kStream =
    "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
    "data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"c\",\"choices\": [ "
    "],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n"
    "data: [DONE]\n\n";
const std::string kWithout =
    "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
    "data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: [DONE]\n\n";

}  // namespace

Test(usage_dropper, drops_exactly_the_usage_only_event_at_every_split_point) {
    for (size_t cut = 0; cut <= kStream.size(); cut++) {
        SseUsageDropper d;
        std::string out;
        d.feed(std::string_view(kStream).substr(0, cut), &out);
        d.feed(std::string_view(kStream).substr(cut), &out);
        d.finish(&out);
        cr_assert_eq(out, kWithout, "split at %zu", cut);
        cr_assert(d.dropped());
    }
}

Test(usage_dropper, keeps_usage_riding_on_a_content_chunk_and_non_sse_bodies) {
    std::string ev = "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\n";
    cr_assert(!SseUsageDropper::is_usage_only_event(ev));
    cr_assert(SseUsageDropper::is_usage_only_event(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\n"));
    std::string json = R"({"error":{"message":"bad"}})";
    SseUsageDropper d;
    std::string out;
    d.feed(json, &out);
    d.finish(&out);
    cr_assert_eq(out, json);
}

Test(usage_dropper, holds_at_most_one_event) {
    SseUsageDropper d;
    std::string out;
    std::string big = "data: " + std::string(SseUsageDropper::kMaxEvent + 10, 'a');
    d.feed(big, &out);
    cr_assert_eq(d.held(), 0u);
    cr_assert_eq(out, big);
    d.feed("\n\ndata: x\n\n", &out);
    cr_assert_eq(out, big + "\n\ndata: x\n\n");
}

Test(usage_scanner, i13_first_response_model_is_kept_for_pricing_at_every_split) {
    std::string body =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":"
        "\"claude-sonnet-4-20250514\",\"content\":\"the \\\"model\\\": \\\"x\\\"\"}}\n\n"
        "data: {\"model\":\"other\"}\n\n";
    for (size_t cut = 0; cut <= body.size(); cut++) {
        UsageScanner sc;
        sc.feed(std::string_view(body).substr(0, cut));
        sc.feed(std::string_view(body).substr(cut));
        cr_assert_eq(sc.model(), "claude-sonnet-4-20250514", "split at %zu", cut);
    }
    UsageScanner g;
    g.feed(R"({"candidates":[],"modelVersion":"gemini-2.5-flash"})");
    cr_assert_eq(g.model(), "gemini-2.5-flash");
    UsageScanner n;
    n.feed(R"({"model":null,"x":{"model":"m\u0031"}})");
    cr_assert_eq(n.model(), "");
}

// ---- issue 18: the scanner skips string bytes in blocks and reads strings
// and usage objects in place; split anywhere it must answer the same. --------

namespace {

// Every split into two pieces, and every split into three pieces when the
// body is short enough, answers what the one-shot scan answers.
void check_all_splits(const std::string &body, const TokenUsage &want, bool three_way) {
    TokenUsage whole = UsageScanner::scan(body);
    cr_assert(same(whole, want), "one shot: known=%d in=%lu out=%lu", whole.known,
              (unsigned long)whole.input, (unsigned long)whole.output);
    std::string_view b(body);
    for (size_t i = 0; i <= b.size(); i++) {
        UsageScanner sc;
        sc.feed(b.substr(0, i));
        sc.feed(b.substr(i));
        cr_assert(same(sc.result(), want), "split at %zu differs", i);
        if (!three_way) continue;
        for (size_t j = i; j <= b.size(); j++) {
            UsageScanner s3;
            s3.feed(b.substr(0, i));
            s3.feed(b.substr(i, j - i));
            s3.feed(b.substr(j));
            cr_assert(same(s3.result(), want), "split at %zu and %zu differs", i, j);
        }
    }
}

}  // namespace

Test(usage_scanner, i18_01_every_split_of_a_real_response_gives_the_same_usage) {
    // The bench upstream's answer (bench/lib.sh) and the bench SSE stream.
    std::string json =
        R"({"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}})";
    check_all_splits(json, U(9, 2), true);
    std::string sse;
    for (int i = 0; i < 5; i++)
        sse +=
            "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":"
            "1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{"
            "\"content\":\"tok" +
            std::to_string(i) + " \"},\"finish_reason\":null}]}\n\n";
    sse +=
        "data: {\"id\":\"chatcmpl-bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":21,"
        "\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n"
        "data: [DONE]\n\n";
    check_all_splits(sse, U(21, 5, 8), false);
    UsageScanner m;
    m.feed(json);
    cr_assert_eq(m.model(), "gpt-4o-mini");
}

Test(usage_scanner, i18_01_escaped_quotes_and_backslashes_at_every_split) {
    struct Case {
        std::string body;
        TokenUsage want;
    };
    const Case cases[] = {
        // A string ending in an escaped backslash: its next quote closes it.
        {R"({"a":"x\\","usage":{"prompt_tokens":3,"completion_tokens":1}})", U(3, 1)},
        // Usage spelled inside a string, with escaped quotes: not usage.
        {R"({"a":"\"usage\":{\"prompt_tokens\":9}","b":"\\\"usage\\\""})", TokenUsage{}},
        // Escaped quotes and brackets inside the usage object's strings.
        {R"({"usage":{"note":"a\"}]b\\","prompt_tokens":4,"x":["\"{"],"completion_tokens":6}})",
         U(4, 6)},
        // An escaped key is not a key; the real one after it is.
        {R"({"usag\u0065":{"prompt_tokens":1},"usage":{"prompt_tokens":2}})", U(2, 0)},
        // A key's length with an escape in it.
        {R"({"us\"ge":{"prompt_tokens":5},"model":"m\"x","usage":{"input_tokens":7}})", U(7, 0)},
    };
    for (const auto &c : cases) check_all_splits(c.body, c.want, true);
}

Test(usage_scanner, i18_01_quotes_in_every_lane_of_a_block) {
    // Strings of every length around the 16-byte blocks, so the quote that
    // ends one falls in every lane, before a usage object and a model.
    for (size_t n = 0; n < 48; n++) {
        std::string filler(n, 'x');
        if (n > 3) filler[n / 2] = '\\', filler[n / 2 + 1] = '"';  // an escaped quote inside
        std::string body = "{\"content\":\"" + filler + "\",\"model\":\"m" + std::to_string(n) +
                           "\",\"usage\":{\"prompt_tokens\":" + std::to_string(n) +
                           ",\"output_tokens\":2}}";
        check_all_splits(body, U(n, 2), false);
        UsageScanner sc;
        sc.feed(body);
        cr_assert_eq(sc.model(), "m" + std::to_string(n), "n=%zu", n);
    }
}

// The old scanner kept "this string is the model" after a raw newline broke
// the model's string, and took the next string of the stream as the model.
Test(usage_scanner, i18_01_a_model_value_broken_by_a_newline_is_not_the_next_string) {
    std::string body = "data: {\"model\":\"gpt-4o\n\"choices\":[]}\n\ndata: {\"model\":\"m2\"}\n\n";
    for (size_t cut = 0; cut <= body.size(); cut++) {
        UsageScanner sc;
        sc.feed(std::string_view(body).substr(0, cut));
        sc.feed(std::string_view(body).substr(cut));
        cr_assert_eq(sc.model(), "m2", "split at %zu", cut);
    }
}
