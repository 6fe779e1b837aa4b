#include "lib/usage_scanner.h"

#include <algorithm>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace byok {

namespace {

constexpr size_t kMaxKey = 16;  // longer strings cannot be a usage key
constexpr uint64_t kMaxCount = 1000000000000000ULL;

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// First quote, backslash or newline in [p, end): the bytes that matter inside
// a JSON string. Sixteen bytes at a time where SSE2 exists (every x86-64):
// this loop is most of the scanner's cost per SSE chunk.
const char *string_special(const char *p, const char *end) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                  nl = _mm_set1_epi8('\n');
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
        __m128i hit =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                         _mm_cmpeq_epi8(v, nl));
        int mask = _mm_movemask_epi8(hit);
        if (mask != 0) return p + __builtin_ctz(static_cast<unsigned>(mask));
        p += 16;
    }
#endif
    while (p < end && *p != '"' && *p != '\\' && *p != '\n') p++;
    return p;
}

// A minimal reader for one captured usage object: only what the fields
// need (integers, nested objects, skipped values). Malformed input makes
// ok false and the object is ignored.
struct ObjectReader {
    std::string_view s;
    size_t i = 0;
    bool ok = true;

    void ws() {
        while (i < s.size() && is_ws(s[i])) i++;
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
        while (i < s.size() && s[i] != '"') i += s[i] == '\\' ? 2 : 1;
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
        while (i < s.size() && (std::strchr("0123456789.eE+-", s[i]) != nullptr) && s[i] != '\0')
            i++;
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
            while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !is_ws(s[i])) i++;
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
    while (p < end) {
        switch (state_) {
            case State::Outside: {
                // Only a quote matters here: skip to it.
                const void *q = std::memchr(p, '"', static_cast<size_t>(end - p));
                if (q == nullptr) return;
                p = static_cast<const char *>(q) + 1;
                state_ = State::InString;
                escape_ = false;
                key_.clear();
                key_long_ = false;
                key_escaped_ = false;
                break;
            }
            case State::InString: {
                // Fast path: run to the next quote, backslash or newline,
                // keeping only the first bytes (a key or model is short).
                const char *q = escape_ ? p : string_special(p, end);
                size_t n = static_cast<size_t>(q - p);
                size_t limit = model_value_ ? kMaxModel : kMaxKey;
                if (q != end && *q == '"' && !escape_ && key_.empty()) {
                    // The string ends in this piece and nothing of it is
                    // kept yet: read it in place (issue 18: no copy).
                    if (n > limit) key_long_ = true;
                    std::string_view k(p, std::min(n, limit));
                    p = q + 1;
                    end_of_string(k);
                    break;
                }
                if (n > 0) {
                    size_t room = key_.size() < limit ? limit - key_.size() : 0;
                    key_.append(p, std::min(n, room));
                    if (n > room) key_long_ = true;
                }
                p = q;
                if (p == end) break;
                char c = *p++;
                if (escape_) {
                    escape_ = false;
                    key_escaped_ = true;
                } else if (c == '\\') {
                    escape_ = true;
                } else if (c == '"') {
                    end_of_string(key_);
                } else {
                    state_ = State::Outside;  // a raw newline: not JSON (ends an SSE line)
                }
                break;
            }
            case State::AfterKey:
            case State::AfterColon: {
                char c = *p;
                if (is_ws(c)) {
                    p++;
                } else if (state_ == State::AfterKey && c == ':') {
                    p++;
                    state_ = State::AfterColon;
                } else if (state_ == State::AfterColon && after_ == KeyKind::Model && c == '"') {
                    p++;
                    state_ = State::InString;
                    escape_ = false;
                    key_.clear();
                    key_long_ = false;
                    key_escaped_ = false;
                    model_value_ = true;
                } else if (state_ == State::AfterColon && after_ == KeyKind::Usage && c == '{') {
                    p++;
                    state_ = State::Capture;
                    capture_.assign(1, '{');
                    cap_depth_ = 1;
                    cap_in_str_ = false;
                    cap_escape_ = false;
                } else {
                    state_ = State::Outside;  // re-read this byte there
                }
                break;
            }
            case State::Capture: {
                // The object's bytes in one run (issue 18: appended once,
                // not byte by byte), up to the byte that closes it, a raw
                // newline, or the one that takes it over kMaxCapture.
                const char *start = p;
                const char *stop =
                    p + std::min(static_cast<size_t>(end - p), kMaxCapture + 1 - capture_.size());
                bool closed = false, newline = false;
                while (p < stop) {
                    char c = *p++;
                    if (c == '\n') {
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
                    // Too big or broken: forget it, but stay in step with the
                    // string state so what follows is read correctly.
                    capture_.clear();
                    capture_.shrink_to_fit();
                    state_ = cap_in_str_ && !newline ? State::InString : State::Outside;
                    escape_ = cap_escape_;
                    key_.clear();
                    key_long_ = true;
                    break;
                }
                capture_.append(start, n);
                if (closed) {
                    take(capture_);
                    capture_.clear();
                    state_ = State::Outside;
                }
                break;
            }
        }
    }
}

void UsageScanner::end_of_string(std::string_view k) {
    bool plain = !key_long_ && !key_escaped_;
    if (model_value_) {
        model_value_ = false;
        if (plain && model_.empty()) model_.assign(k);
        state_ = State::Outside;
        return;
    }
    // Called for every string of the response: compare views (length
    // first), never C strings.
    using namespace std::string_view_literals;
    after_ = KeyKind::None;
    if (plain && (k == "usage"sv || k == "usageMetadata"sv))
        after_ = KeyKind::Usage;
    else if (plain && model_.empty() && (k == "model"sv || k == "modelVersion"sv))
        after_ = KeyKind::Model;
    state_ = after_ == KeyKind::None ? State::Outside : State::AfterKey;
}

void UsageScanner::take(std::string_view object) {
    uint64_t prompt = 0, completion = 0, cached = 0, cache_read = 0, cache_creation = 0,
             thoughts = 0;
    ObjectReader rd{object};
    rd.members([&](std::string_view key) {
        uint64_t *slot = nullptr;
        if (key == "prompt_tokens" || key == "input_tokens" || key == "promptTokenCount")
            slot = &prompt;
        else if (key == "completion_tokens" || key == "output_tokens" ||
                 key == "candidatesTokenCount")
            slot = &completion;
        else if (key == "cache_read_input_tokens")
            slot = &cache_read;
        else if (key == "cache_creation_input_tokens")
            slot = &cache_creation;
        else if (key == "cachedContentTokenCount")
            slot = &cached;
        else if (key == "thoughtsTokenCount")
            slot = &thoughts;
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
    if (!rd.ok) return;
    known_ = true;
    prompt_ = std::max(prompt_, prompt);
    completion_ = std::max(completion_, completion);
    cached_tokens_ = std::max(cached_tokens_, cached);
    cache_read_ = std::max(cache_read_, cache_read);
    cache_creation_ = std::max(cache_creation_, cache_creation);
    thoughts_ = std::max(thoughts_, thoughts);
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

// ---------------------------------------------------------------- SSE

bool SseUsageDropper::is_usage_only_event(std::string_view event) {
    // Cheap test first: almost no event mentions usage at all.
    if (event.find("usage") == std::string_view::npos) return false;
    // The data of the event: its "data:" lines joined.
    std::string data;
    size_t i = 0;
    while (i < event.size()) {
        size_t nl = event.find('\n', i);
        std::string_view line = event.substr(i, nl == std::string_view::npos ? nl : nl - i);
        i = nl == std::string_view::npos ? event.size() : nl + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.substr(0, 5) != "data:") continue;
        line.remove_prefix(5);
        if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        if (!data.empty()) data.push_back('\n');
        data.append(line);
    }
    size_t first = data.find_first_not_of(" \t\r\n");
    if (first == std::string::npos || data[first] != '{') return false;
    if (!UsageScanner::scan(data).known) return false;
    // "choices" followed by an empty array, at any spacing.
    size_t at = 0;
    while ((at = data.find("\"choices\"", at)) != std::string::npos) {
        size_t j = at + 9;
        while (j < data.size() && is_ws(data[j])) j++;
        if (j < data.size() && data[j] == ':') {
            j++;
            while (j < data.size() && is_ws(data[j])) j++;
            if (j < data.size() && data[j] == '[') {
                j++;
                while (j < data.size() && is_ws(data[j])) j++;
                return j < data.size() && data[j] == ']';
            }
        }
        at += 9;
    }
    return false;
}

void SseUsageDropper::feed(std::string_view bytes, std::string *out) {
    size_t i = 0;
    while (i < bytes.size()) {
        // Find the blank line that ends the current event ("\n\n", CRs
        // ignored): jump from newline to newline.
        size_t endpos = std::string_view::npos;
        size_t j = i;
        while (j < bytes.size()) {
            if (last_ == '\n') {
                // Right after a newline: skip CRs, a second newline ends it.
                while (j < bytes.size() && bytes[j] == '\r') j++;
                if (j == bytes.size()) break;
                if (bytes[j] == '\n') {
                    last_ = 0;
                    endpos = j;
                    break;
                }
            }
            size_t nl = bytes.find('\n', j);
            if (nl == std::string_view::npos) {
                // Remember the last byte that is not a CR.
                for (size_t k = bytes.size(); k > j; k--) {
                    if (bytes[k - 1] != '\r') {
                        last_ = bytes[k - 1];
                        break;
                    }
                }
                j = bytes.size();
                break;
            }
            last_ = '\n';
            j = nl + 1;
        }
        size_t stop = endpos == std::string_view::npos ? bytes.size() : endpos + 1;
        std::string_view part = bytes.substr(i, stop - i);
        i = stop;
        if (passing_) {
            out->append(part);
            if (endpos != std::string_view::npos) passing_ = false;
            continue;
        }
        if (endpos != std::string_view::npos && event_.empty()) {
            // The whole event is in this buffer: examine it in place.
            if (part.size() <= kMaxEvent && is_usage_only_event(part))
                dropped_ = true;
            else
                out->append(part);
            continue;
        }
        event_.append(part);
        if (endpos != std::string_view::npos) {
            // Events over the cap pass unexamined, wherever the reads split.
            if (event_.size() <= kMaxEvent && is_usage_only_event(event_))
                dropped_ = true;
            else
                out->append(event_);
            event_.clear();
        } else if (event_.size() > kMaxEvent) {
            out->append(event_);
            event_.clear();
            passing_ = true;
        }
    }
}

void SseUsageDropper::finish(std::string *out) {
    out->append(event_);
    event_.clear();
    passing_ = false;
}

}  // namespace byok
