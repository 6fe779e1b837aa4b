// Request-body handling on the hot path: find the top-level "model" of a
// JSON object without building a DOM or holding the body, and the JSON token
// that replaces it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace byok {

// The body formats the gateway reads a model from (lib/multipart.h picks
// one from the Content-Type).
enum class BodyKind { Json, Multipart, Opaque };

// Where the model sits in a body: [begin, end) is the range a rewrite
// replaces. JSON: the value's string token, quotes included. Multipart: the
// model part's header block and value (from the first header byte up to the
// CRLF before the next boundary), so the rewrite can bring its own headers.
struct ModelSpan {
    size_t begin = 0;
    size_t end = 0;
    std::string model;  // unescaped value
    BodyKind kind = BodyKind::Json;
};

// What the include_usage injection (lib/metering.h) needs to know about a
// body, read by the same pass that finds the model.
struct StreamFacts {
    bool stream = false;          // top-level "stream": true (the last one, if repeated)
    bool stream_options = false;  // top-level "stream_options" present, any value
    size_t object_start = 0;      // offset just past the top-level '{'
};

// Validates that the body is a single well-formed JSON object (depth <= 64)
// and finds the top-level "model" string. The body may be fed in pieces
// split anywhere (nginx holds it in several buffers and a temp file); the
// scanner keeps its state between pieces and never keeps the bytes, so the
// result is the same for every split. Throws Error("request body is not
// valid JSON") (or a duplicate-"model" Error) from feed() or finish().
class ModelScanner {
  public:
    void feed(std::string_view piece);
    // The end of the body: the top-level "model" string with its offsets in
    // the whole body, or nullopt when absent or not a string.
    std::optional<ModelSpan> finish();
    size_t offset() const { return offset_; }                    // bytes fed so far
    const StreamFacts &stream_facts() const { return stream_; }  // valid after finish()

  private:
    enum class St : uint8_t {
        BeforeTop,     // leading whitespace, then '{'
        FirstMember,   // after '{': key or '}'
        NextKey,       // after ',' in an object: key
        AfterKey,      // ':'
        Value,         // any value
        FirstElement,  // after '[': value or ']'
        AfterValue,    // ',' or the closing bracket
        AfterTop,      // trailing whitespace only
        KeyStr,        // inside a key of a nested object: skipped
        ValueStr,      // inside a string value other than the model: skipped
        DecodedStr,    // inside a top-level key or the model value: decoded
        StrEscape,     // after '\'
        StrHex,        // inside \uXXXX
        StrLowSlash,   // a high surrogate needs '\' next (strict strings)
        StrLowU,       // ... then 'u'
        NumMinus,      // after '-': a digit
        NumZero,       // after a leading 0
        NumInt,
        NumFracStart,  // after '.': a digit
        NumFrac,
        NumExpStart,  // after 'e': sign or digit
        NumExpSign,   // after the sign: a digit
        NumExp,
        Literal,  // true / false / null
    };
    enum class Str : uint8_t { Plain, Key, TopKey, Model };

    void done(std::string_view piece) { offset_ += piece.size(); }
    const char *compact_members(const char *p, const char *end, const char *begin);
    const char *decoded_run(const char *p, const char *end, const char *begin);
    St string_state() const;
    void escape(char c);
    void end_escape(uint32_t cp);
    void push(bool object);
    void pop();
    bool in_object() const { return (stack_ >> (depth_ - 1)) & 1; }
    void top_key(std::string_view key);
    void start_value(char c, size_t offset);
    void start_literal(const char *lit);

    St st_ = St::BeforeTop;
    Str str_ = Str::Plain;
    uint64_t stack_ = 0;  // bit i set: container at depth i+1 is an object
    int depth_ = 0;
    size_t offset_ = 0;  // of the current piece's first byte
    // \uXXXX being read
    uint32_t hex_ = 0;
    int hex_left_ = 0;
    uint32_t high_ = 0;  // pending high surrogate (strict strings)
    // current literal
    const char *lit_ = nullptr;
    int lit_at_ = 0;
    // top-level key being decoded (only "model", "stream" and "stream_options"
    // matter: "stream_options" plus one byte tells longer keys apart), kept
    // inline so a key costs no string operations (issue 18)
    static constexpr size_t kKeyKeep = 15;
    char key_[kKeyKeep] = {};
    size_t key_len_ = 0;
    void key_append(const char *p, size_t n);
    bool key_is_model_ = false;
    bool key_is_stream_ = false;
    StreamFacts stream_;
    bool seen_model_ = false;
    std::optional<ModelSpan> model_;
};

// One-shot form: feed(body) then finish().
std::optional<ModelSpan> find_model(std::string_view body);

// The JSON string token (quotes included) that carries `model`.
std::string model_token(std::string_view model);

// The bytes that take the place of [span.begin, span.end) to carry `model`
// in the span's format (JSON: model_token; multipart: a Content-Disposition
// header block and the raw value).
std::string model_token(const ModelSpan &span, std::string_view model);

// Bytes of the same length as the span that the format ignores when they
// stand right before model_token(span, ...): JSON whitespace, or a padding
// header line of the multipart model part. The gateway writes them over the
// old span in nginx's temp file, which it cannot cut.
std::string span_filler(const ModelSpan &span);

// Body with the span replaced by model_token(span, model).
std::string replace_model(std::string_view body, const ModelSpan &span, std::string_view model);

}  // namespace byok
