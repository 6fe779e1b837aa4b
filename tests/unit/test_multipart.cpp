// Uploads on /v1 (issue 17 item 3, lib/multipart.h): the body format from
// the Content-Type, and the "model" field of a multipart body read in
// pieces split anywhere — the same answer at every split point — plus the
// rewrite in both forms the gateway uses (bytes cut in memory; the old span
// overwritten by the filler in the temp file).
#include <criterion/criterion.h>

#include <string>
#include <vector>

#include "lib/multipart.h"
#include "lib/util.h"
#include "tests/unit/test_support.h"

using namespace byok;
using byok::test::error_of;

namespace {

const std::string kBoundary = "----formdata-undici-0123456789";

std::string part(const std::string &headers, const std::string &value) {
    return "--" + kBoundary + "\r\n" + headers + "\r\n\r\n" + value + "\r\n";
}

// What the OpenAI SDK sends for audio.transcriptions.create: the file first
// (with bytes that look like the start of a delimiter), then the model.
std::string transcription_body(const std::string &model = "whisper-1") {
    std::string audio = "ID3\x03\r\n--\r\n-" + std::string("\r\n--" + kBoundary.substr(0, 10)) +
                        std::string("\0\xff\r\r\n\n", 6) + "end";
    return "preamble\r\n" +
           part(
               "Content-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n"
               "Content-Type: audio/mpeg",
               audio) +
           part("Content-Disposition: form-data; name=\"model\"", model) +
           part("Content-Disposition: form-data; name=\"language\"", "en") + "--" + kBoundary +
           "--\r\nepilogue";
}

// "none", "error: <message>" or "<model>|<begin>|<end>", the body fed in
// the pieces that `cuts` (ascending offsets) make.
std::string scan(const std::string &body, const std::vector<size_t> &cuts,
                 const std::string &boundary = kBoundary) {
    try {
        MultipartScanner s(boundary);
        size_t at = 0;
        for (size_t cut : cuts) {
            s.feed(std::string_view(body).substr(at, cut - at));
            at = cut;
        }
        s.feed(std::string_view(body).substr(at));
        cr_assert_eq(s.offset(), body.size());
        auto m = s.finish();
        if (!m) return "none";
        return m->model + "|" + std::to_string(m->begin) + "|" + std::to_string(m->end);
    } catch (const Error &e) {
        return std::string("error: ") + e.what();
    }
}

std::optional<ModelSpan> find(const std::string &body) {
    MultipartScanner s(kBoundary);
    s.feed(body);
    return s.finish();
}

// The same outcome for every one- and two-cut split, and byte by byte.
void assert_split_invariant(const std::string &body) {
    std::string whole = scan(body, {});
    std::vector<size_t> every;
    for (size_t i = 1; i < body.size(); i++) every.push_back(i);
    cr_assert_eq(scan(body, every), whole, "byte by byte");
    for (size_t a = 0; a <= body.size(); a++) {
        cr_assert_eq(scan(body, {a}), whole, "cut at %zu", a);
        for (size_t b = a; b <= body.size(); b += 3)
            cr_assert_eq(scan(body, {a, b}), whole, "cuts at %zu, %zu", a, b);
    }
}

}  // namespace

Test(multipart, i17_03_body_kind_from_content_type) {
    struct {
        const char *type;
        BodyKind kind;
    } cases[] = {
        {"multipart/form-data; boundary=x", BodyKind::Multipart},
        {" Multipart/Form-Data ;boundary=\"x\"", BodyKind::Multipart},
        {"", BodyKind::Json},
        {"application/json", BodyKind::Json},
        {"application/json; charset=utf-8", BodyKind::Json},
        {"application/vnd.api+json", BodyKind::Json},
        {"text/plain;charset=UTF-8", BodyKind::Json},           // fetch with a string body
        {"application/x-www-form-urlencoded", BodyKind::Json},  // curl -d
        {"audio/mpeg", BodyKind::Opaque},
        {"application/octet-stream", BodyKind::Opaque},
        {"image/png", BodyKind::Opaque},
        {"multipart/mixed; boundary=x", BodyKind::Opaque},
        {"application/jsonl", BodyKind::Opaque},
    };
    for (const auto &c : cases)
        cr_assert_eq(static_cast<int>(body_kind(c.type)), static_cast<int>(c.kind), "%s", c.type);
}

Test(multipart, i17_03_boundary_parameter) {
    cr_assert_eq(multipart_boundary("multipart/form-data; boundary=abc"), "abc");
    cr_assert_eq(multipart_boundary("multipart/form-data;BOUNDARY=\"a b;c\""), "a b;c");
    cr_assert_eq(multipart_boundary("multipart/form-data; charset=x; boundary=  q  "), "q");
    cr_assert_eq(error_of([] { multipart_boundary("multipart/form-data"); }),
                 "multipart body without a boundary in its Content-Type");
    const char *bad[] = {"multipart/form-data; boundary=", "multipart/form-data; boundary=\"\"",
                         "multipart/form-data; boundary=\"ends with space \""};
    for (const char *b : bad)
        cr_assert_eq(error_of([&] { multipart_boundary(b); }),
                     "multipart body with an invalid boundary", "%s", b);
    std::string long_one = "multipart/form-data; boundary=" + std::string(71, 'b');
    cr_assert_neq(error_of([&] { multipart_boundary(long_one); }), "<no error>");
    cr_assert_eq(multipart_boundary("multipart/form-data; boundary=" + std::string(70, 'b')),
                 std::string(70, 'b'));
}

Test(multipart, i17_03_finds_the_model_field_after_a_file) {
    std::string body = transcription_body();
    auto m = find(body);
    cr_assert(m.has_value());
    cr_assert_eq(m->model, "whisper-1");
    cr_assert_eq(static_cast<int>(m->kind), static_cast<int>(BodyKind::Multipart));
    // The span: the model part's headers and value, up to the CRLF before
    // the next boundary.
    cr_assert_eq(body.substr(m->begin, m->end - m->begin),
                 "Content-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1");
    cr_assert_eq(body.substr(m->end, 4 + kBoundary.size()), "\r\n--" + kBoundary);
}

Test(multipart, i17_03_same_answer_at_every_split_point) {
    assert_split_invariant(transcription_body());
    // Model values with bytes that start a delimiter match and fall back.
    assert_split_invariant(transcription_body("a\r\n--" + kBoundary.substr(0, 8) + "\r\r\n-z"));
    assert_split_invariant(transcription_body(""));
    // Errors are the same at every split too.
    std::string truncated = transcription_body();
    truncated.resize(truncated.size() - 20);
    assert_split_invariant(truncated);
}

Test(multipart, i17_03_model_value_keeps_partial_delimiters) {
    std::string v = "x\r\n--" + kBoundary.substr(0, 12) + "\r\r\n--";
    auto m = find(transcription_body(v));
    cr_assert(m.has_value());
    cr_assert_eq(m->model, v);
}

Test(multipart, i17_03_overlapping_delimiter_prefixes) {
    // A boundary that repeats itself: the KMP fallback must not lose the
    // delimiter that starts inside a partial match.
    std::string b = "aab";
    std::string body =
        "--aab\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--aa"
        "\r\n--aab\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n--a\r\n--"
        "aab--";
    cr_assert_eq(scan(body, {}, b), "m\r\n--aa|7|62");
    for (size_t a = 0; a <= body.size(); a++) cr_assert_eq(scan(body, {a}, b), "m\r\n--aa|7|62");
}

Test(multipart, i17_03_fields_that_are_not_the_model) {
    auto has_model = [](const std::string &parts) {
        return find(parts + "--" + kBoundary + "--").has_value();
    };
    cr_assert_not(
        has_model(part("Content-Disposition: form-data; name=\"purpose\"", "assistants") +
                  part("Content-Disposition: form-data; name=\"file\"; filename=\"f.jsonl\"",
                       "{\"model\":\"x\"}")));
    cr_assert_not(
        has_model(part("Content-Disposition: form-data; name=\"model\"; filename=\"m\"", "x")));
    cr_assert_not(has_model(part("Content-Disposition: form-data; name=\"models\"", "x")));
    cr_assert_not(has_model(part("Content-Disposition: attachment; name=\"model\"", "x")));
    cr_assert_not(has_model(part("X-Other: 1", "x")));
    // A part without any header.
    cr_assert_not(find("--" + kBoundary + "\r\n\r\nvalue\r\n--" + kBoundary + "--").has_value());
    // No parts at all.
    cr_assert_not(find("--" + kBoundary + "--").has_value());
}

Test(multipart, i17_03_header_forms) {
    const char *forms[] = {
        "content-disposition:form-data;name=model",
        "CONTENT-DISPOSITION: Form-Data; name=\"model\"",
        "Content-Type: text/plain\r\nContent-Disposition: form-data; name=\"model\"",
        "Content-Disposition: form-data;\r\n name=\"model\"",  // folded
        "Content-Disposition: form-data; name=\"mo\\del\"",    // quoted-pair
    };
    for (const char *h : forms) {
        auto m = find(part(h, "gpt-4o-transcribe") + "--" + kBoundary + "--");
        cr_assert(m.has_value(), "%s", h);
        cr_assert_eq(m->model, "gpt-4o-transcribe", "%s", h);
    }
    // Transport padding after a boundary (RFC 2046) is allowed.
    std::string padded = "--" + kBoundary + " \t\r\nContent-Disposition: form-data; name=model" +
                         "\r\n\r\nm\r\n--" + kBoundary + "--  \r\n";
    cr_assert_eq(find(padded)->model, "m");
}

Test(multipart, i17_03_malformed_bodies_are_refused) {
    std::string d = "--" + kBoundary;
    std::string model = part("Content-Disposition: form-data; name=model", "m");
    struct {
        std::string body, error;
    } cases[] = {
        {"", "multipart body is malformed: it ends before its closing boundary"},
        {"no boundary at all", "multipart body is malformed: it ends before its closing boundary"},
        {model, "multipart body is malformed: it ends before its closing boundary"},
        {model + d + "x", "multipart body is malformed: the boundary appears inside a part"},
        {model + d + "-x", "multipart body is malformed: the boundary appears inside a part"},
        {model + d + " x", "multipart body is malformed: the boundary appears inside a part"},
        {model + d + "\rx", "multipart body is malformed: a boundary line without CRLF"},
        {d + "\r\nno colon here\r\n\r\nv\r\n" + d + "--",
         "multipart body is malformed: a part header without ':'"},
        {model + model + d + "--", "request body has more than one \"model\" field"},
        {d + "\r\n" + std::string(17 * 1024, 'h'),
         "multipart body is malformed: a part's headers exceed 16 KiB"},
        {part("Content-Disposition: form-data; name=model", std::string(1025, 'm')) + d + "--",
         "multipart \"model\" field is longer than 1024 bytes"},
    };
    for (const auto &c : cases)
        cr_assert_eq(scan(c.body, {}), "error: " + c.error, "%s", c.body.c_str());
    // At the limit: fine.
    std::string big = part("Content-Disposition: form-data; name=model", std::string(1024, 'm'));
    cr_assert_eq(find(big + d + "--")->model.size(), 1024u);
}

Test(multipart, i17_03_rewrite_in_memory_and_in_the_temp_file) {
    std::string body = transcription_body();
    auto m = find(body);
    cr_assert(m.has_value());
    for (const std::string &model :
         std::vector<std::string>{"openai/whisper-1", "w", std::string(300, 'x')}) {
        // Memory: the span cut out, the token in its place.
        std::string out = replace_model(body, *m, model);
        cr_assert_eq(out.substr(0, m->begin), body.substr(0, m->begin));
        cr_assert_eq(out.substr(out.size() - (body.size() - m->end)), body.substr(m->end));
        auto again = find(out);
        cr_assert(again.has_value());
        cr_assert_eq(again->model, model);
        // Temp file: the span overwritten in place by the filler (same
        // length), the token after it.
        std::string filler = span_filler(*m);
        cr_assert_eq(filler.size(), m->end - m->begin);
        std::string file = body;
        file.replace(m->begin, filler.size(), filler);
        file.insert(m->end, model_token(*m, model));
        again = find(file);
        cr_assert(again.has_value());
        cr_assert_eq(again->model, model);
        cr_assert_eq(file.substr(m->begin, 6), "X-Pad:");
    }
}

Test(multipart, i17_03_json_spans_keep_their_json_token_and_blank_filler) {
    auto m = find_model(R"({"model":"gpt-4o"})");
    cr_assert_eq(model_token(*m, "a\"b"), "\"a\\\"b\"");
    cr_assert_eq(span_filler(*m), std::string(8, ' '));
}

Test(multipart, i17_03_body_scanner_picks_the_format_and_the_error_code) {
    auto code_of = [](const char *type, const std::string &body) {
        try {
            BodyScanner s(type);
            s.feed(body);
            s.finish();
        } catch (const BodyError &e) {
            return e.code + ": " + e.what();
        }
        return std::string("ok");
    };
    cr_assert_eq(code_of("application/json", "{"), "invalid_json: request body is not valid JSON");
    cr_assert_eq(code_of("", "nope"), "invalid_json: request body is not valid JSON");
    cr_assert_eq(code_of("multipart/form-data", ""),
                 "invalid_multipart: multipart body without a boundary in its Content-Type");
    cr_assert_eq(code_of(("multipart/form-data; boundary=" + kBoundary).c_str(), "x"),
                 "invalid_multipart: multipart body is malformed: it ends before its closing "
                 "boundary");
    cr_assert_eq(code_of("audio/mpeg", std::string("\xff\xfb\x90\x00", 4)), "ok");

    BodyScanner audio("audio/wav");
    audio.feed("RIFF....WAVE");
    audio.feed("data");
    cr_assert_eq(static_cast<int>(audio.kind()), static_cast<int>(BodyKind::Opaque));
    cr_assert_eq(audio.offset(), 16u);
    cr_assert_not(audio.reads_bytes());
    audio.skip(1000);
    cr_assert_eq(audio.offset(), 1016u);
    cr_assert_not(audio.finish().has_value());

    BodyScanner upload("multipart/form-data; boundary=\"" + kBoundary + "\"");
    std::string body = transcription_body("whisper-1");
    upload.feed(std::string_view(body).substr(0, 100));
    upload.feed(std::string_view(body).substr(100));
    cr_assert_eq(upload.offset(), body.size());
    cr_assert_eq(upload.finish()->model, "whisper-1");
    cr_assert(upload.reads_bytes());
    cr_assert_neq(error_of([&] { upload.skip(1); }), "<no error>");

    BodyScanner json("application/json");
    json.feed(R"({"model":"gpt-4o"})");
    cr_assert_eq(json.finish()->model, "gpt-4o");
}
