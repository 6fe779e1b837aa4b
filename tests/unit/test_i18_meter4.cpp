// Issue 18, session 7 (s7-meter): the metering side of the cache-hit path.
// UsageScanner walks the strings of a response 64 bytes at a time (the
// quote bits of a window pair up as strings); it must answer exactly what
// the byte-at-a-time reading answers (a one-byte piece never has a
// window), wherever the pieces are cut and wherever a window ends.
#include <criterion/criterion.h>

#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "lib/metering.h"
#include "lib/usage_scanner.h"

using namespace byok;

namespace {

// Usage, model and the lexer state a scan ends in, as one comparable line.
std::string outcome(const UsageScanner &s) {
    TokenUsage u = s.result();
    return std::to_string(u.known) + " " + std::to_string(u.input) + " " +
           std::to_string(u.output) + " " + std::to_string(u.cached) + " " +
           std::to_string(u.cache_write) + " model=" + std::string(s.model());
}

std::string whole(std::string_view body) {
    UsageScanner s;
    s.feed(body);
    return outcome(s);
}

std::string bytewise(std::string_view body) {
    UsageScanner s;
    for (size_t i = 0; i < body.size(); i++) s.feed(body.substr(i, 1));
    return outcome(s);
}

std::string split(std::string_view body, size_t cut) {
    UsageScanner s;
    s.feed(body.substr(0, cut));
    s.feed(body.substr(cut));
    return outcome(s);
}

// A string of `n` bytes of filler.
std::string filler(size_t n, char c = 'x') { return std::string(n, c); }

}  // namespace

// The bench upstream's answer (bench/lib.sh) preceded by 0..130 bytes of
// padding, so every string of it (the "model" and "usage" keys too) starts
// and ends in every lane of a window, across window edges, and in the
// short last window read back from the piece's end.
Test(i18_meter4, i18_meter4_01_every_window_offset_of_the_bench_answer) {
    const std::string answer =
        R"("id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}})";
    for (size_t pad = 0; pad <= 130; pad++) {
        std::string body = "{\"p\":\"" + filler(pad) + "\"," + answer;
        const std::string want = "1 9 2 0 0 model=gpt-4o-mini";
        cr_assert_eq(whole(body), want, "pad %zu: %s", pad, whole(body).c_str());
        cr_assert_eq(bytewise(body), want, "pad %zu", pad);
        for (size_t cut = 0; cut <= body.size(); cut += 7)
            cr_assert_eq(split(body, cut), want, "pad %zu cut %zu", pad, cut);
    }
}

// Strings that a window must leave to the string-by-string step: an escaped
// quote, an escaped backslash before the closing quote, a raw newline (the
// string is dropped), a string longer than a window, and a key whose
// closing quote is the last byte of a window or the first of the next.
Test(i18_meter4, i18_meter4_02_escapes_newlines_and_long_strings_at_window_edges) {
    for (size_t pad = 0; pad <= 70; pad++) {
        const std::string p = filler(pad);
        const std::vector<std::pair<std::string, std::string>> cases = {
            {"{\"a\":\"" + p + "\\\"usage\\\":{\\\"prompt_tokens\\\":9}\",\"b\":1}",
             "0 0 0 0 0 model="},
            {"{\"a\":\"" + p + "\\\\\",\"usage\":{\"prompt_tokens\":3,\"output_tokens\":1}}",
             "1 3 1 0 0 model="},
            // (what follows the newline is read as the bytewise reading reads it)
            {"{\"a\":\"" + p + "\n\",\"usage\":{\"input_tokens\":4}}", ""},
            {"{\"a\":\"" + p + filler(150, 'y') +
                 "\",\"model\":\"m1\",\"usage\":{\"prompt_tokens\":5}}",
             "1 5 0 0 0 model=m1"},
            {"{\"" + p + "\":0,\"usageMetadata\":{\"promptTokenCount\":6},\"modelVersion\":\"g\"}",
             "1 6 0 0 0 model=g"},
            // An escaped key is no key, even when the window sees it whole.
            {"{\"" + p + "\":0,\"usag\\u0065\":{\"prompt_tokens\":1},\"mod\\u0065l\":\"n\"}",
             "0 0 0 0 0 model="},
        };
        for (auto [body, want] : cases) {
            if (want.empty()) want = bytewise(body);
            cr_assert_eq(whole(body), want, "pad %zu %s: %s", pad, body.c_str(),
                         whole(body).c_str());
            cr_assert_eq(bytewise(body), want, "pad %zu %s", pad, body.c_str());
            for (size_t cut = 0; cut <= body.size(); cut++)
                cr_assert_eq(split(body, cut), want, "pad %zu cut %zu %s", pad, cut, body.c_str());
        }
    }
}

// Random JSON-ish streams (strings with and without escapes and newlines,
// keys of the usage and model lengths, numbers, brackets, SSE framing):
// the windowed reading of a whole piece and of random splits answers what
// the byte-at-a-time reading answers.
Test(i18_meter4, i18_meter4_03_random_streams_agree_with_the_bytewise_reading) {
    std::mt19937 rng(18);
    const std::vector<std::string> atoms = {
        "\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":3}",
        "\"usage\":{\"input_tokens\":7,\"input_tokens_details\":{\"cached_tokens\":2}}",
        "\"usageMetadata\":{\"promptTokenCount\":5,\"thoughtsTokenCount\":4}",
        "\"usage\":null",
        "\"model\":\"gpt-x\"",
        "\"modelVersion\":\"gem\"",
        "\"model\":\"a\\\"b\"",
        "\"usage\"",
        "\"model\"",
        "\"usagE\":1",
        "\"abcde\":\"fghij\"",
        "\"x\\\\\":\"\\\"\"",
        "\"12characters\"",
        "\"13 characters\"",
        "\"\"",
        "\"a\nb\"",
        "data: ",
        "\n\n",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "123",
        "\\",
        "\"",
    };
    for (int round = 0; round < 400; round++) {
        std::string body;
        const size_t atoms_n = 1 + rng() % 60;
        for (size_t i = 0; i < atoms_n; i++) {
            if (rng() % 3 == 0)
                body += "\"" + filler(rng() % 80, 'a' + static_cast<char>(rng() % 26)) + "\"";
            else
                body += atoms[rng() % atoms.size()];
        }
        const std::string want = bytewise(body);
        cr_assert_eq(whole(body), want, "round %d: %s", round, body.c_str());
        for (int k = 0; k < 8; k++) {
            size_t cut = body.empty() ? 0 : rng() % (body.size() + 1);
            cr_assert_eq(split(body, cut), want, "round %d cut %zu: %s", round, cut, body.c_str());
        }
    }
}

// The event writer takes a short path for the one-digit counts that most
// values of an event are (issue 18, s7); tokens_known is written as the
// number 0 or 1. The bytes are exactly what they were: RESP bulk strings
// in the event's field order.
Test(i18_meter4, i18_meter4_04_one_digit_values_and_tokens_known_are_the_same_bytes) {
    for (uint64_t d = 0; d <= 10; d++) {
        for (bool known : {false, true}) {
            MeterRecord r;
            r.request_id = "rid";
            r.project = "acme";
            r.provider = "openai";
            r.model = "m";
            r.route = "byok";
            r.key_id = "";
            r.at_ms = static_cast<int64_t>(d);
            r.status = static_cast<unsigned>(d);
            r.latency_ms = d;
            r.usage = {known, d, d, d, 0};
            r.cost_micro = -static_cast<int64_t>(d);  // negative: the long path
            const std::string n = std::to_string(d);
            const std::string num = "$" + std::to_string(n.size()) + "\r\n" + n + "\r\n";
            const std::string neg =
                d == 0 ? num : "$" + std::to_string(n.size() + 1) + "\r\n-" + n + "\r\n";
            const std::string want = "$3\r\nrid\r\n" + num + "$4\r\nacme\r\n$6\r\nopenai\r\n" +
                                     "$1\r\nm\r\n$4\r\nbyok\r\n$0\r\n\r\n" + num + num +
                                     (known ? "$1\r\n1\r\n" : "$1\r\n0\r\n") + num + num + num +
                                     neg + "$0\r\n\r\n";
            std::string out;
            append_usage_event_args(out, r);
            cr_assert_eq(out, want, "d=%llu known=%d", static_cast<unsigned long long>(d), known);
            UsageEventBatch batch(0);
            batch.append(r);
            cr_assert_eq(std::string(batch.args()), want);
            auto fields = usage_event_fields(r);
            cr_assert_eq(fields[18], "tokens_known");
            cr_assert_eq(fields[19], known ? "1" : "0");
        }
    }
}

// The minted request id's digits, sixteen at a time (issue 18, s7): the
// same 32 lowercase hex digits as printf's %016llx of each half, for every
// nibble in every place and random halves.
Test(i18_meter4, i18_meter4_05_request_id_digits_are_printf_hex) {
    std::vector<std::pair<uint64_t, uint64_t>> halves = {
        {0, 0}, {~0ULL, ~0ULL}, {0x0123456789abcdefULL, 0xfedcba9876543210ULL}};
    for (unsigned shift = 0; shift < 64; shift += 4)
        for (uint64_t n = 0; n < 16; n++) halves.push_back({n << shift, ~(n << shift)});
    std::mt19937_64 rng(18);
    for (int i = 0; i < 1000; i++) halves.push_back({rng(), rng()});
    for (const auto &[hi, lo] : halves) {
        char want[33], got[33] = {};
        std::snprintf(want, sizeof(want), "%016llx%016llx", static_cast<unsigned long long>(hi),
                      static_cast<unsigned long long>(lo));
        hex_id(hi, lo, got);
        cr_assert_eq(std::string(got, 32), std::string(want), "%s", want);
    }
}
