// Token usage read from a provider's response body as it passes through the
// gateway, chunk by chunk, never holding the response: the scanner keeps a
// few bytes of lexer state and, while inside a `usage` / `usageMetadata`
// object, at most kMaxCapture bytes of that object.
//
// Formats (JSON bodies and SSE streams alike, since SSE `data:` lines are
// JSON and a raw newline never occurs inside a JSON string):
//   OpenAI chat/completions/embeddings/responses: "usage": {prompt_tokens |
//     input_tokens, completion_tokens | output_tokens,
//     prompt_tokens_details | input_tokens_details: {cached_tokens}}
//   Anthropic: "usage": {input_tokens, output_tokens, cache_read_input_tokens,
//     cache_creation_input_tokens} in the message, message_start and
//     message_delta (counts there are cumulative)
//   Gemini: "usageMetadata": {promptTokenCount, candidatesTokenCount,
//     thoughtsTokenCount, cachedContentTokenCount} (cumulative when streamed)
// Every usage object seen is merged field by field with max(), which is right
// for all of them: a stream repeats or grows its counts, never splits them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace byok {

struct TokenUsage {
    bool known = false;  // some usage object was seen
    uint64_t input = 0;  // all prompt tokens, cached ones included
    uint64_t output = 0;
    uint64_t cached = 0;       // prompt tokens read from a cache (part of input)
    uint64_t cache_write = 0;  // prompt tokens written to a cache (part of input)
};

class UsageScanner {
  public:
    static constexpr size_t kMaxCapture = 4096;

    void feed(std::string_view bytes);
    TokenUsage result() const;
    // The first "model" / "modelVersion" string of the response (at most
    // kMaxModel bytes, no escapes): prices native calls whose request body
    // the gateway did not read.
    std::string_view model() const { return {model_, model_len_}; }
    static constexpr size_t kMaxModel = 128;

    // The one-shot answer, for tests and fuzzing.
    static TokenUsage scan(std::string_view body) {
        UsageScanner s;
        s.feed(body);
        return s.result();
    }

  private:
    enum class State : uint8_t { Outside, InString, AfterKey, AfterColon, Capture };
    enum class KeyKind : uint8_t { None, Usage, Model };
    // Each returns where the next state goes on reading.
    const char *outside(const char *p, const char *end);
    const char *in_string(const char *p, const char *end);
    const char *capture(const char *p, const char *end);
    void begin_string(bool model_value);
    void end_of_string();
    bool key_ends(std::string_view k);  // a usage / model key: state_ = AfterKey
    bool take(std::string_view text, bool whole, size_t *len);

    const char *begin_ = nullptr;  // the piece being fed (its bytes may be read in blocks)
    State state_ = State::Outside;
    bool escape_ = false;      // previous byte was a backslash inside a string
    bool cap_in_str_ = false;  // capture: inside a string
    bool cap_escape_ = false;
    int cap_depth_ = 0;
    // The current string when it spans pieces or has escapes (strings that
    // do not are read in place): its first bytes only, no allocation.
    char key_[kMaxModel];
    size_t key_len_ = 0;
    bool key_long_ = false;  // the string did not fit key_
    bool key_escaped_ = false;
    std::string capture_;            // a usage object split across pieces
    KeyKind after_ = KeyKind::None;  // which key AfterKey/AfterColon follow
    bool model_value_ = false;       // the current string is a model value
    char model_[kMaxModel];
    uint8_t model_len_ = 0;

    // Raw maxima per field; result() normalises.
    uint64_t prompt_ = 0, completion_ = 0, cached_tokens_ = 0, cache_read_ = 0, cache_creation_ = 0,
             thoughts_ = 0;
    bool known_ = false;
};

// Drops, from an SSE stream, the events that carry only usage (OpenAI's
// final `"choices":[]` chunk sent because the gateway asked for
// `stream_options.include_usage`). Everything else passes byte for byte.
// Holds at most the current incomplete event (capped at kMaxEvent; a larger
// event is passed on unexamined).
class SseUsageDropper {
  public:
    static constexpr size_t kMaxEvent = 65536;

    // Appends to `out` the bytes that may go to the client now.
    void feed(std::string_view bytes, std::string *out);
    // End of the stream: whatever is held goes out.
    void finish(std::string *out);
    size_t held() const { return event_.size(); }
    bool dropped() const { return dropped_; }

    // True for an SSE event (without its terminating blank line) whose data
    // is a JSON object with an empty "choices" array and a "usage" object.
    static bool is_usage_only_event(std::string_view event);

  private:
    std::string event_;     // bytes of the current event so far
    bool passing_ = false;  // current event exceeded kMaxEvent: pass it through
    char last_ = 0, last2_ = 0;
    bool dropped_ = false;
};

}  // namespace byok
