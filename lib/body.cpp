#include "lib/body.h"

#include <algorithm>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "lib/util.h"

namespace byok {

namespace {

constexpr int kMaxDepth = 64;

[[noreturn]] void invalid() { throw Error("request body is not valid JSON"); }

inline bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A run of JSON whitespace at p (its first byte must be one, else the body
// is invalid): where it ends. Pretty-printed bodies indent every line.
inline const char *skip_ws(const char *p, const char *end) {
    if (!is_ws(*p)) invalid();
    do p++;
    while (p < end && is_ws(*p));
    return p;
}

// Past the spaces at p: `json.dumps` writes one after each ':' and ','
// (other whitespace goes through the states).
inline const char *ws_run(const char *p, const char *end) {
    while (p < end && *p == ' ') p++;
    return p;
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

inline bool is_string_stop(unsigned char c) { return c == '"' || c == '\\' || c < 0x20; }

#if defined(__SSE2__)
// Bit i set when byte i of the 16 at p is a quote, a backslash or a control
// byte (< 0x20).
inline unsigned string_stops16(const char *p) {
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                  ctl = _mm_set1_epi8(0x1F);
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    // max(v, 0x1F) == 0x1F exactly for the bytes <= 0x1F (unsigned).
    __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                               _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl));
    return static_cast<unsigned>(_mm_movemask_epi8(hit));
}
#endif

// The first quote, backslash or control byte in [p, end): where a plain
// run inside a JSON string stops. Sixteen bytes at a time where SSE2 exists
// (every x86-64), the last few too, by reading the 16 that end at `end`
// when the piece that starts at `begin` has that many: text is most of a
// body's bytes, and most strings are shorter than 16 bytes. The byte loop
// is the whole answer for pieces under 16 bytes (and without SSE2).
inline const char *string_stop(const char *p, const char *end, const char *begin) {
#if defined(__SSE2__)
    while (end - p >= 16) {
        unsigned mask = string_stops16(p);
        if (mask != 0) return p + __builtin_ctz(mask);
        p += 16;
    }
    if (p < end && end - begin >= 16) {
        unsigned mask = string_stops16(end - 16) >> (16 - (end - p));
        return mask != 0 ? p + __builtin_ctz(mask) : end;
    }
#endif
    while (p < end && !is_string_stop(static_cast<unsigned char>(*p))) p++;
    return p;
}

void append_utf8(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

}  // namespace

inline void ModelScanner::push(bool object) {
    if (depth_ >= kMaxDepth) invalid();
    if (object) {
        stack_ |= uint64_t{1} << depth_;
    } else {
        stack_ &= ~(uint64_t{1} << depth_);
    }
    depth_++;
    st_ = object ? St::FirstMember : St::FirstElement;
}

inline void ModelScanner::pop() {
    depth_--;
    st_ = depth_ == 0 ? St::AfterTop : St::AfterValue;
}

// The first byte of a value, at `offset` in the body.
inline void ModelScanner::start_value(char c, size_t offset) {
    if (key_is_stream_) stream_.stream = c == 't';  // finish() checks it is `true`
    key_is_stream_ = false;
    switch (c) {
        case '"':
            if (key_is_model_) {
                model_.emplace();
                model_->begin = offset;
                str_ = Str::Model;
                st_ = St::DecodedStr;
            } else {
                str_ = Str::Plain;
                st_ = St::ValueStr;
            }
            break;
        case '{':
            push(true);
            break;
        case '[':
            push(false);
            break;
        case 't':
            start_literal("true");
            break;
        case 'f':
            start_literal("false");
            break;
        case 'n':
            start_literal("null");
            break;
        case '-':
            st_ = St::NumMinus;
            break;
        case '0':
            st_ = St::NumZero;
            break;
        default:
            if (c < '1' || c > '9') invalid();
            st_ = St::NumInt;
            break;
    }
    key_is_model_ = false;
}

// A push-down automaton: the container stack is a bit per depth, every
// other piece of state is a few scalars, so a piece boundary can fall on any
// byte. Each state reads as far as it can in one go (issue 18): a string's
// plain bytes up to the next quote, backslash or control byte, a
// whitespace run, a number's digits. Only top-level keys and the model
// value are decoded; escapes in them must be well-formed, lone surrogates
// included. After a throw the scanner is spent.
void ModelScanner::feed(std::string_view piece) {
    const char *const begin = piece.data(), *const end = begin + piece.size();
    const char *p = begin;
    while (p < end) {
        const char c = *p;
        switch (st_) {
            case St::BeforeTop:
                if (c != '{') {
                    p = skip_ws(p, end);
                    break;
                }
                push(true);
                stream_.object_start = offset_ + static_cast<size_t>(p - begin) + 1;
                p++;
                break;
            case St::FirstMember:
                if (c == '}') {
                    pop();
                    p++;
                    break;
                }
                [[fallthrough]];
            case St::NextKey:
                if (c != '"') {
                    p = skip_ws(p, end);
                    break;
                }
                if (depth_ == 1) {
                    str_ = Str::TopKey;
                    key_len_ = 0;
                    st_ = St::DecodedStr;
                    p++;
                    break;
                }
                p = compact_members(p, end, begin);
                break;
            case St::KeyStr:
            case St::ValueStr: {
                const char *q = string_stop(p, end, begin);
                if (q == end) return done(piece);
                if (*q == '"') {
                    st_ = st_ == St::KeyStr ? St::AfterKey : St::AfterValue;
                } else if (*q == '\\') {
                    st_ = St::StrEscape;
                } else {
                    invalid();  // a control byte
                }
                p = q + 1;
                break;
            }
            case St::DecodedStr:
                p = decoded_run(p, end, begin);
                break;
            case St::AfterKey:
                if (c != ':') {
                    p = skip_ws(p, end);
                    break;
                }
                if (key_is_model_) {
                    if (seen_model_) throw Error("request body has more than one \"model\"");
                    seen_model_ = true;
                }
                st_ = St::Value;
                p = ws_run(p + 1, end);
                break;
            case St::FirstElement:
                if (c == ']') {
                    pop();
                    p++;
                    break;
                }
                [[fallthrough]];
            case St::Value:
                if (is_ws(c)) {
                    p = skip_ws(p, end);
                    break;
                }
                start_value(c, offset_ + static_cast<size_t>(p - begin));
                p++;
                break;
            case St::AfterValue:
                if (c == ',') {
                    st_ = in_object() ? St::NextKey : St::Value;
                    p = ws_run(p + 1, end);
                    break;
                }
                if (c == '}' || c == ']') {
                    if (c != (in_object() ? '}' : ']')) invalid();
                    pop();
                } else {
                    p = skip_ws(p, end);
                    break;
                }
                p++;
                break;
            case St::AfterTop:
                p = skip_ws(p, end);
                break;
            case St::StrEscape:
                escape(c);
                p++;
                break;
            case St::StrHex: {
                int h = hex_digit(c);
                if (h < 0) invalid();
                hex_ = (hex_ << 4) | static_cast<uint32_t>(h);
                p++;
                if (--hex_left_ == 0) end_escape(hex_);
                break;
            }
            case St::StrLowSlash:
                if (c != '\\') invalid();
                st_ = St::StrLowU;
                p++;
                break;
            case St::StrLowU:
                if (c != 'u') invalid();
                hex_ = 0;
                hex_left_ = 4;
                st_ = St::StrHex;
                p++;
                break;
            case St::NumMinus:
                if (c == '0') {
                    st_ = St::NumZero;
                } else if (c >= '1' && c <= '9') {
                    st_ = St::NumInt;
                } else {
                    invalid();
                }
                p++;
                break;
            case St::NumZero:
            case St::NumInt:
            case St::NumFrac:
            case St::NumExp:
                if (c >= '0' && c <= '9' && st_ != St::NumZero) {
                    while (++p < end && *p >= '0' && *p <= '9') {
                    }
                } else if (c == '.' && (st_ == St::NumZero || st_ == St::NumInt)) {
                    st_ = St::NumFracStart;
                    p++;
                } else if ((c == 'e' || c == 'E') && st_ != St::NumExp) {
                    st_ = St::NumExpStart;
                    p++;
                } else {
                    st_ = St::AfterValue;  // the number ended; c is read again
                }
                break;
            case St::NumFracStart:
            case St::NumExpSign:
                if (c < '0' || c > '9') invalid();
                st_ = st_ == St::NumFracStart ? St::NumFrac : St::NumExp;
                p++;
                break;
            case St::NumExpStart:
                if (c == '+' || c == '-') {
                    st_ = St::NumExpSign;
                } else if (c >= '0' && c <= '9') {
                    st_ = St::NumExp;
                } else {
                    invalid();
                }
                p++;
                break;
            case St::Literal:
                if (c != lit_[lit_at_]) invalid();
                p++;
                if (lit_[++lit_at_] == '\0') st_ = St::AfterValue;
                break;
        }
    }
    done(piece);
}

std::optional<ModelSpan> ModelScanner::finish() {
    if (st_ != St::AfterTop) invalid();
    return std::move(model_);
}

// The common shape of a nested object's members, "key": "text" pairs (the
// messages of a chat body, compact or with spaces between tokens), read
// without a state dispatch per token. p is at a key's opening quote;
// returns at the first byte this does not take, with st_ the state that
// reads it (a string it stopped in is read again from its start).
const char *ModelScanner::compact_members(const char *p, const char *end, const char *begin) {
    auto stop = [this](St st, const char *at) {
        st_ = st;
        return at;
    };
    for (;;) {
        const char *q = string_stop(p + 1, end, begin);
        if (q == end || *q != '"') {
            str_ = Str::Key;
            return stop(St::KeyStr, p + 1);
        }
        p = ws_run(q + 1, end);
        if (p == end || *p != ':') return stop(St::AfterKey, p);
        p = ws_run(p + 1, end);
        if (p == end || *p != '"') return stop(St::Value, p);
        q = string_stop(p + 1, end, begin);
        if (q == end || *q != '"') {
            str_ = Str::Plain;
            return stop(St::ValueStr, p + 1);
        }
        p = ws_run(q + 1, end);
        if (p == end || *p != ',') return stop(St::AfterValue, p);
        p = ws_run(p + 1, end);
        if (p == end || *p != '"') return stop(St::NextKey, p);
    }
}

void ModelScanner::key_append(const char *p, size_t n) {
    n = std::min(n, kKeyKeep - key_len_);
    std::copy(p, p + n, key_ + key_len_);
    key_len_ += n;
}

void ModelScanner::top_key(std::string_view key) {
    key_is_model_ = key == "model";
    key_is_stream_ = key == "stream";
    if (key == "stream_options") stream_.stream_options = true;
    st_ = St::AfterKey;
}

void ModelScanner::start_literal(const char *lit) {
    lit_ = lit;
    lit_at_ = 1;
    st_ = St::Literal;
}

// Inside a top-level key or the model value at p (of the piece that starts
// at `begin`): decodes its plain bytes in one run, then reads the byte that
// stopped it; returns where the scan goes on. A key wholly in the piece is
// compared in place.
const char *ModelScanner::decoded_run(const char *p, const char *end, const char *begin) {
    const char *q = string_stop(p, end, begin);
    size_t n = static_cast<size_t>(q - p);
    if (str_ == Str::Model) {
        model_->model.append(p, n);
    } else if (key_len_ == 0 && q != end && *q == '"') {
        top_key(std::string_view(p, n));
        return q + 1;
    } else {
        key_append(p, n);
    }
    if (q == end) return q;
    if (*q == '\\') {
        st_ = St::StrEscape;
    } else if (*q != '"') {
        invalid();  // a control byte
    } else if (str_ == Str::TopKey) {
        top_key(std::string_view(key_, key_len_));
    } else {
        model_->end = offset_ + static_cast<size_t>(q - begin) + 1;
        st_ = St::AfterValue;
    }
    return q + 1;
}

// The string state an escape returns to.
ModelScanner::St ModelScanner::string_state() const {
    switch (str_) {
        case Str::Key:
            return St::KeyStr;
        case Str::Plain:
            return St::ValueStr;
        default:
            return St::DecodedStr;
    }
}

// The byte after a backslash.
void ModelScanner::escape(char c) {
    char lit = 0;
    switch (c) {
        case '"':
        case '\\':
        case '/':
            lit = c;
            break;
        case 'b':
            lit = '\b';
            break;
        case 'f':
            lit = '\f';
            break;
        case 'n':
            lit = '\n';
            break;
        case 'r':
            lit = '\r';
            break;
        case 't':
            lit = '\t';
            break;
        case 'u':
            hex_ = 0;
            hex_left_ = 4;
            st_ = St::StrHex;
            return;
        default:
            invalid();
    }
    st_ = string_state();
    if (str_ == Str::Model) {
        model_->model.push_back(lit);
    } else if (str_ == Str::TopKey) {
        key_append(&lit, 1);
    }
}

// A decoded \uXXXX (or the low half of a pair).
void ModelScanner::end_escape(uint32_t cp) {
    bool strict = str_ == Str::TopKey || str_ == Str::Model;
    st_ = string_state();
    if (high_ != 0) {
        if (cp < 0xDC00 || cp > 0xDFFF) invalid();
        cp = 0x10000 + ((high_ - 0xD800) << 10) + (cp - 0xDC00);
        high_ = 0;
    } else if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (!strict) return;  // validated elsewhere only as four hex digits
        high_ = cp;
        st_ = St::StrLowSlash;
        return;
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        if (strict) invalid();  // lone low surrogate in a value we use
        return;
    }
    if (!strict) return;
    std::string utf8;
    append_utf8(utf8, cp);
    if (str_ == Str::Model) {
        model_->model += utf8;
    } else {
        key_append(utf8.data(), utf8.size());
    }
}

std::optional<ModelSpan> find_model(std::string_view body) {
    ModelScanner s;
    s.feed(body);
    return s.finish();
}

std::string model_token(std::string_view model) { return json_string(model); }

std::string model_token(const ModelSpan &span, std::string_view model) {
    if (span.kind != BodyKind::Multipart) return model_token(model);
    // The value is sent raw: the gateway admits only models without control
    // bytes (so no CRLF can end the part early), as it does for headers.
    std::string out = "Content-Disposition: form-data; name=\"model\"\r\n\r\n";
    out.append(model);
    return out;
}

std::string span_filler(const ModelSpan &span) {
    size_t n = span.end - span.begin;
    // A multipart span holds at least the Content-Disposition line that
    // names the field and the blank line (> 40 bytes), so the padding line
    // always fits.
    if (span.kind != BodyKind::Multipart || n < 8) return std::string(n, ' ');
    return "X-Pad:" + std::string(n - 8, ' ') + "\r\n";
}

std::string replace_model(std::string_view body, const ModelSpan &span, std::string_view model) {
    if (span.begin >= span.end || span.end > body.size()) {
        throw Error("replace_model: span outside the body");
    }
    std::string out(body.substr(0, span.begin));
    out += model_token(span, model);
    out.append(body.substr(span.end));
    return out;
}

}  // namespace byok
