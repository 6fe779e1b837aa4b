#include "lib/usage_scanner.h"

#include "lib/byte_scan.h"
#include "lib/text.h"

#include <algorithm>
#include <cstring>

namespace byok {

namespace {

using namespace byte_scan;

constexpr size_t kMaxKey = 16;  // longer strings cannot be a usage key
// Bit n: the length of a key key_ends() knows (usage, model: 5; modelVersion, usageMetadata).
constexpr uint64_t kKeyLengths = 1u << 5 | 1u << 12 | 1u << 13;
constexpr uint64_t kMaxCount = 1000000000000000ULL;

// The rest of a JSON number after its integer digits (fraction, exponent).
bool is_number_tail(char c) {
    return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-';
}

// Outside strings only a quote matters; inside one, the quote that ends
// it, a backslash (escape) or a raw newline (not JSON: ends an SSE line).
inline const char *find_quote(const char *p, const char *end, const char *begin) {
    return find_any<'"'>(p, end, begin);
}
inline const char *string_special(const char *p, const char *end, const char *begin) {
    return find_any<'"', '\\', '\n'>(p, end, begin);
}
// Inside a usage object: also the brackets that nest it.
inline const char *capture_special(const char *p, const char *end, const char *begin) {
    return find_any<'"', '\\', '\n', '{', '}', '[', ']'>(p, end, begin);
}

// A minimal reader for one captured usage object: only what the fields
// need (integers, nested objects, skipped values). Malformed input makes
// ok false and the object is ignored.
struct ObjectReader {
    std::string_view s;
    // Whole: s holds the object and whatever follows it in the piece, and
    // the object is read only where capture() would find the same end (no
    // newline in a string, no quote or bracket in a bare value); else ok
    // goes false and capture() takes over.
    bool whole = false;
    size_t i = 0;
    bool ok = true;

    void ws() {
        while (i < s.size() && is_json_ws(s[i])) i++;
    }
    bool eat(char c) {
        ws();
        if (i < s.size() && s[i] == c) {
            i++;
            return true;
        }
        return false;
    }
    // A string without unescaping; keys we care about never need it.
    std::string_view str() {
        ws();
        if (i >= s.size() || s[i] != '"') {
            ok = false;
            return {};
        }
        size_t start = ++i;
        while (i < s.size()) {
            i = static_cast<size_t>(string_special(s.data() + i, s.data() + s.size(), s.data()) -
                                    s.data());
            if (i >= s.size() || s[i] == '"') break;
            // An escape, or a newline: part of the string here.
            i += s[i] == '\\' ? 2 : 1;
            if (whole && i <= s.size() && s[i - 1] == '\n') i = s.size();  // capture() drops it
        }
        if (i >= s.size()) {
            ok = false;
            return {};
        }
        return s.substr(start, i++ - start);
    }
    // Integer part of a JSON number (fractions and exponents are skipped;
    // negative counts read as 0). nullopt-like: returns false when the value
    // is not a number.
    bool number(uint64_t *out) {
        ws();
        if (i >= s.size()) return false;
        bool neg = s[i] == '-';
        if (!neg && (s[i] < '0' || s[i] > '9')) return false;
        if (neg) i++;
        uint64_t v = 0;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
            v = std::min<uint64_t>(v * 10 + static_cast<uint64_t>(s[i] - '0'), kMaxCount);
            i++;
        }
        while (i < s.size() && is_number_tail(s[i])) i++;
        *out = neg ? 0 : v;
        return true;
    }
    void skip_value(int depth) {
        ws();
        if (i >= s.size() || depth > 16) {
            ok = false;
            return;
        }
        char c = s[i];
        if (c == '"') {
            str();
        } else if (c == '{' || c == '[') {
            char close = c == '{' ? '}' : ']';
            i++;
            if (eat(close)) return;
            do {
                if (c == '{') {
                    str();
                    if (!eat(':')) ok = false;
                }
                if (!ok) return;
                skip_value(depth + 1);
            } while (ok && eat(','));
            if (ok && !eat(close)) ok = false;
        } else {
            while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !is_json_ws(s[i])) {
                if (whole && (s[i] == '"' || s[i] == '{' || s[i] == '[')) ok = false;
                i++;
            }
        }
    }
    // Calls f(key) for each member of the object at i; f reads or skips
    // the value.
    template <class F>
    void members(F f) {
        if (!eat('{')) {
            ok = false;
            return;
        }
        if (eat('}')) return;
        do {
            std::string_view key = str();
            if (!ok || !eat(':')) {
                ok = false;
                return;
            }
            f(key);
        } while (ok && eat(','));
        if (ok && !eat('}')) ok = false;
    }
};

}  // namespace

void UsageScanner::feed(std::string_view bytes) {
    const char *p = bytes.data();
    const char *end = p + bytes.size();
    begin_ = p;
    while (p < end) {
        switch (state_) {
            case State::Outside:
                p = outside(p, end);
                break;
            case State::InString:
                p = in_string(p, end);
                break;
            case State::AfterKey:
            case State::AfterColon: {
                char c = *p;
                if (is_json_ws(c)) {
                    p++;
                } else if (state_ == State::AfterKey && c == ':') {
                    p++;
                    state_ = State::AfterColon;
                } else if (state_ == State::AfterColon && after_ == KeyKind::Model && c == '"') {
                    // A model value that ends in this piece without an
                    // escape is read in place; else in_string() keeps it.
                    const char *q = string_special(++p, end, begin_);
                    if (q == end || *q != '"') {
                        begin_string(true);
                        break;
                    }
                    size_t n = static_cast<size_t>(q - p);
                    if (n <= kMaxModel && model_len_ == 0) {
                        std::memcpy(model_, p, n);
                        model_len_ = static_cast<uint8_t>(n);
                    }
                    state_ = State::Outside;
                    p = q + 1;
                } else if (state_ == State::AfterColon && after_ == KeyKind::Usage && c == '{') {
                    // An object that ends in this piece (almost all) is read
                    // in place; else capture() gathers it.
                    size_t len = 0;
                    size_t room = std::min(static_cast<size_t>(end - p), kMaxCapture);
                    if (take(std::string_view(p, room), true, &len)) {
                        p += len;
                        state_ = State::Outside;
                        break;
                    }
                    // The '{' is the object's first byte: capture() counts it.
                    state_ = State::Capture;
                    capture_.clear();
                    cap_depth_ = 0;
                    cap_in_str_ = false;
                    cap_escape_ = false;
                } else {
                    state_ = State::Outside;  // re-read this byte there
                }
                break;
            }
            case State::Capture:
                p = capture(p, end);
                break;
        }
    }
}

// From string to string while each one begins and ends in this piece
// without an escape (issue 18: almost every string of a response): read in
// place, and only one of a usage or model key's length is compared.
//
// Issue 18 (s7): 64 bytes at a time where SSE2 exists, up to the first
// backslash or newline (one inside a string needs the string-by-string
// step; one at p is outside any). Before it, quotes alternate: their prefix
// XOR marks the strings, and only those of a key's length are looked at. A
// string going on past the window is read string by string, from its quote.
const char *UsageScanner::outside(const char *p, const char *end) {
    for (;;) {
#if defined(__SSE2__)
        for (Window w; w.load(p, end, begin_);) {
            const size_t len = w.breaks != 0 ? __builtin_ctzll(w.breaks) : w.len;
            if (len == 0) {
                p++;
                continue;
            }
            const uint64_t quotes = len < 64 ? w.quotes & ((1ULL << len) - 1) : w.quotes;
            const uint64_t inside = prefix_xor(quotes);  // bit 63: a string goes on past len
            const uint64_t opens = quotes & inside, closes = quotes & ~inside;
            // A string of n bytes opens at i and closes at i + n + 1.
            for (uint64_t keys = opens & (closes >> 6 | closes >> 13 | closes >> 14); keys != 0;
                 keys &= keys - 1) {
                const unsigned open = static_cast<unsigned>(__builtin_ctzll(keys));
                // Its closing quote is the next quote (none is escaped here).
                const unsigned n = static_cast<unsigned>(__builtin_ctzll(quotes >> open >> 1));
                if ((kKeyLengths >> n & 1) != 0 && key_ends(std::string_view(p + open + 1, n)))
                    return p + open + n + 2;
            }
            if (inside >> 63 != 0) {
                p += 63 - __builtin_clzll(opens);
                break;
            }
            p += len;
        }
#endif
        const char *open = find_quote(p, end, begin_);
        if (open == end) return end;
        const char *s = open + 1;
        const char *q = string_special(s, end, begin_);
        if (q == end || *q != '"') {  // goes on in the next piece, or an escape / newline
            begin_string(false);
            return s;
        }
        p = q + 1;
        size_t n = static_cast<size_t>(q - s);
        if (n < 14 && (kKeyLengths >> n & 1) != 0 && key_ends(std::string_view(s, n))) return p;
    }
}

void UsageScanner::begin_string(bool model_value) {
    state_ = State::InString;
    escape_ = false;
    key_len_ = 0;
    key_long_ = false;
    key_escaped_ = false;
    model_value_ = model_value;
}

// A string that spans pieces or holds an escape: its first bytes are kept
// in key_ (a key or model is short).
const char *UsageScanner::in_string(const char *p, const char *end) {
    const size_t limit = model_value_ ? kMaxModel : kMaxKey;
    while (p < end) {
        if (escape_) {
            escape_ = false;
            key_escaped_ = true;
            p++;
            continue;
        }
        const char *q = string_special(p, end, begin_);
        size_t n = static_cast<size_t>(q - p);
        size_t room = limit - key_len_;
        if (n > room) key_long_ = true;
        std::memcpy(key_ + key_len_, p, std::min(n, room));
        key_len_ += std::min(n, room);
        p = q;
        if (p == end) break;
        char c = *p++;
        if (c == '\\') {
            escape_ = true;
        } else if (c == '"') {
            end_of_string();
            break;
        } else {
            // A raw newline: not JSON (ends an SSE line). The string is
            // dropped, a model value too (the old code kept the flag and
            // took the next string as the model).
            state_ = State::Outside;
            model_value_ = false;
            break;
        }
    }
    return p;
}

// Up to the byte that closes the usage object, a raw newline inside one of
// its strings, or the one that takes it over kMaxCapture. An object wholly in this piece is read in
// place; one split across pieces is gathered in capture_ first.
const char *UsageScanner::capture(const char *p, const char *end) {
    const char *start = p;
    const char *stop =
        p + std::min(static_cast<size_t>(end - p), kMaxCapture + 1 - capture_.size());
    bool closed = false, newline = false;
    while (p < stop) {
        if (!cap_escape_) p = capture_special(p, stop, begin_);  // the bytes between cannot matter
        if (p == stop) break;
        char c = *p++;
        if (c == '\n') {
            // Between tokens a newline is whitespace (pretty-printed JSON:
            // Google's non-streamed answers); inside a string it is not
            // JSON (a broken SSE line), and the object is dropped.
            if (!cap_in_str_) continue;
            newline = true;
            break;
        }
        if (cap_in_str_) {
            if (cap_escape_)
                cap_escape_ = false;
            else if (c == '\\')
                cap_escape_ = true;
            else if (c == '"')
                cap_in_str_ = false;
        } else if (c == '"') {
            cap_in_str_ = true;
        } else if (c == '{' || c == '[') {
            cap_depth_++;
        } else if ((c == '}' || c == ']') && --cap_depth_ == 0) {
            closed = true;
            break;
        }
    }
    size_t n = static_cast<size_t>(p - start);
    if (newline || capture_.size() + n > kMaxCapture) {
        // Too big or broken: forget it, but stay in step with the string
        // state so what follows is read correctly.
        capture_.clear();
        capture_.shrink_to_fit();
        state_ = cap_in_str_ && !newline ? State::InString : State::Outside;
        escape_ = cap_escape_;
        key_len_ = 0;
        key_long_ = true;
        return p;
    }
    if (!closed) {
        capture_.append(start, n);
        return p;
    }
    if (capture_.empty()) {
        take(std::string_view(start, n), false, nullptr);
    } else {
        capture_.append(start, n);
        take(capture_, false, nullptr);
        capture_.clear();
    }
    state_ = State::Outside;
    return p;
}

void UsageScanner::end_of_string() {
    bool plain = !key_long_ && !key_escaped_;
    state_ = State::Outside;
    if (model_value_) {
        model_value_ = false;
        if (plain && model_len_ == 0) {
            std::memcpy(model_, key_, key_len_);
            model_len_ = static_cast<uint8_t>(key_len_);
        }
        return;
    }
    if (plain) key_ends(std::string_view(key_, key_len_));
}

bool UsageScanner::key_ends(std::string_view k) {
    using namespace std::string_view_literals;
    after_ = KeyKind::None;
    if (k == "usage"sv || k == "usageMetadata"sv)
        after_ = KeyKind::Usage;
    else if (model_len_ == 0 && (k == "model"sv || k == "modelVersion"sv))
        after_ = KeyKind::Model;
    state_ = after_ == KeyKind::None ? State::Outside : State::AfterKey;
    return after_ != KeyKind::None;
}

// Reads the usage object at the start of `text` and merges its counts:
// false (nothing merged) when it is malformed. Whole (the object read in
// place, issue 18): `text` may go on past the object; *len is its length.
bool UsageScanner::take(std::string_view text, bool whole, size_t *len) {
    uint64_t prompt = 0, completion = 0, cached = 0, cache_read = 0, cache_creation = 0,
             thoughts = 0;
    ObjectReader rd{text, whole};
    rd.members([&](std::string_view key) {
        // By length first (issue 18): most keys are compared with one name
        // or none.
        uint64_t *slot = nullptr;
        switch (key.size()) {
            case 12:
                if (key == "input_tokens") slot = &prompt;
                break;
            case 13:
                if (key == "prompt_tokens")
                    slot = &prompt;
                else if (key == "output_tokens")
                    slot = &completion;
                break;
            case 16:
                if (key == "promptTokenCount") slot = &prompt;
                break;
            case 17:
                if (key == "completion_tokens") slot = &completion;
                break;
            case 18:
                if (key == "thoughtsTokenCount") slot = &thoughts;
                break;
            case 20:
                if (key == "candidatesTokenCount") slot = &completion;
                break;
            case 23:
                if (key == "cache_read_input_tokens")
                    slot = &cache_read;
                else if (key == "cachedContentTokenCount")
                    slot = &cached;
                break;
            case 27:
                if (key == "cache_creation_input_tokens") slot = &cache_creation;
                break;
            default:
                break;
        }
        if (slot != nullptr) {
            if (!rd.number(slot)) rd.skip_value(1);  // e.g. null
            return;
        }
        rd.ws();
        bool details = key == "prompt_tokens_details" || key == "input_tokens_details";
        if (details && rd.i < rd.s.size() && rd.s[rd.i] == '{') {
            rd.members([&](std::string_view k2) {
                if (k2 == "cached_tokens" && rd.number(&cached)) return;
                rd.skip_value(2);
            });
            return;
        }
        rd.skip_value(1);
    });
    if (!rd.ok) return false;
    if (len != nullptr) *len = rd.i;
    known_ = true;
    prompt_ = std::max(prompt_, prompt);
    completion_ = std::max(completion_, completion);
    cached_tokens_ = std::max(cached_tokens_, cached);
    cache_read_ = std::max(cache_read_, cache_read);
    cache_creation_ = std::max(cache_creation_, cache_creation);
    thoughts_ = std::max(thoughts_, thoughts);
    return true;
}

TokenUsage UsageScanner::result() const {
    TokenUsage u;
    u.known = known_;
    // Anthropic counts cache reads and writes apart from input_tokens; the
    // others count cached tokens inside the prompt total.
    u.input = prompt_ + cache_read_ + cache_creation_;
    u.output = completion_ + thoughts_;
    u.cached = std::min(u.input, cached_tokens_ + cache_read_);
    u.cache_write = cache_creation_;
    return u;
}

}  // namespace byok
