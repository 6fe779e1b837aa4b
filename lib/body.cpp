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

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// The first quote, backslash or control byte (< 0x20) in p[i, n): where a
// plain run inside a JSON string stops. Sixteen bytes at a time where SSE2
// exists (every x86-64): the message texts are most of a body's bytes.
size_t string_stop(const char *p, size_t i, size_t n) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                  ctl = _mm_set1_epi8(0x1F);
    while (n - i >= 16) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + i));
        // max(v, 0x1F) == 0x1F exactly for the bytes <= 0x1F (unsigned).
        __m128i hit =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                         _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl));
        int mask = _mm_movemask_epi8(hit);
        if (mask != 0) return i + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
        i += 16;
    }
#endif
    while (i < n) {
        unsigned char d = static_cast<unsigned char>(p[i]);
        if (d == '"' || d == '\\' || d < 0x20) break;
        i++;
    }
    return i;
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

// A push-down automaton over bytes: the container stack is a bit per depth,
// every other piece of state is a few scalars, so a piece boundary can fall
// on any byte. Only top-level keys (kept up to 15 bytes) and the model value
// are decoded; escapes in them must be well-formed, lone surrogates included.
void ModelScanner::feed(std::string_view piece) {
    step(piece.data(), piece.size());
    offset_ += piece.size();
}

std::optional<ModelSpan> ModelScanner::finish() {
    if (st_ != St::AfterTop) invalid();
    return std::move(model_);
}

void ModelScanner::push(bool object) {
    if (depth_ >= kMaxDepth) invalid();
    if (object) {
        stack_ |= uint64_t{1} << depth_;
    } else {
        stack_ &= ~(uint64_t{1} << depth_);
    }
    depth_++;
    st_ = object ? St::FirstMember : St::FirstElement;
}

void ModelScanner::key_append(const char *p, size_t n) {
    n = std::min(n, kKeyKeep - key_len_);
    std::copy(p, p + n, key_ + key_len_);
    key_len_ += n;
}

void ModelScanner::end_string() {
    switch (str_) {
        case Str::TopKey: {
            std::string_view key(key_, key_len_);
            key_is_model_ = key == "model";
            key_is_stream_ = key == "stream";
            if (key == "stream_options") stream_.stream_options = true;
            st_ = St::AfterKey;
            break;
        }
        case Str::Key:
            st_ = St::AfterKey;
            break;
        case Str::Plain:
        case Str::Model:
            st_ = St::AfterValue;
            break;
    }
}

// A decoded \uXXXX (or the low half of a pair).
void ModelScanner::end_escape(uint32_t cp) {
    bool strict = str_ == Str::TopKey || str_ == Str::Model;
    st_ = St::Str;
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

void ModelScanner::start_value(char c) {
    bool is_model = key_is_model_;
    key_is_model_ = false;
    if (key_is_stream_) stream_.stream = c == 't';  // finish() checks it is `true`
    key_is_stream_ = false;
    switch (c) {
        case '{':
            push(true);
            return;
        case '[':
            push(false);
            return;
        case '"':
            st_ = St::Str;
            str_ = is_model ? Str::Model : Str::Plain;
            return;
        case 't':
            lit_ = "true";
            break;
        case 'f':
            lit_ = "false";
            break;
        case 'n':
            lit_ = "null";
            break;
        case '-':
            st_ = St::NumMinus;
            return;
        case '0':
            st_ = St::NumZero;
            return;
        default:
            if (c < '1' || c > '9') invalid();
            st_ = St::NumInt;
            return;
    }
    lit_at_ = 1;
    st_ = St::Literal;
}

// Inside a string at p[i]: consumes plain bytes in one run; returns the
// index after what was consumed.
size_t ModelScanner::string_run(const char *p, size_t i, size_t n) {
    size_t start = i;
    i = string_stop(p, i, n);
    if (str_ == Str::Model) {
        model_->model.append(p + start, i - start);
    } else if (str_ == Str::TopKey) {
        key_append(p + start, i - start);
    }
    if (i == n) return i;
    unsigned char c = static_cast<unsigned char>(p[i]);
    if (c < 0x20) invalid();
    if (c == '\\') {
        st_ = St::StrEscape;
    } else {
        if (str_ == Str::Model) model_->end = offset_ + i + 1;
        end_string();
    }
    return i + 1;
}

void ModelScanner::step(const char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        char c = p[i];
        switch (st_) {
            case St::BeforeTop:
                if (!is_ws(c)) {
                    if (c != '{') invalid();
                    push(true);
                    stream_.object_start = offset_ + i + 1;
                }
                i++;
                break;
            case St::FirstMember:
                if (c == '}') {
                    depth_--;
                    st_ = depth_ == 0 ? St::AfterTop : St::AfterValue;
                    i++;
                    break;
                }
                [[fallthrough]];
            case St::NextKey:
                if (!is_ws(c)) {
                    if (c != '"') invalid();
                    st_ = St::Str;
                    str_ = depth_ == 1 ? Str::TopKey : Str::Key;
                    key_len_ = 0;
                    i = string_run(p, i + 1, n);
                    break;
                }
                i++;
                break;
            case St::AfterKey:
                if (!is_ws(c)) {
                    if (c != ':') invalid();
                    if (key_is_model_) {
                        if (seen_model_) throw Error("request body has more than one \"model\"");
                        seen_model_ = true;
                    }
                    st_ = St::Value;
                }
                i++;
                break;
            case St::FirstElement:
                if (c == ']') {
                    depth_--;
                    st_ = depth_ == 0 ? St::AfterTop : St::AfterValue;
                    i++;
                    break;
                }
                [[fallthrough]];
            case St::Value:
                if (!is_ws(c)) {
                    if (key_is_model_ && c == '"') {
                        model_.emplace();
                        model_->begin = offset_ + i;
                    }
                    start_value(c);
                    if (st_ == St::Str) {
                        i = string_run(p, i + 1, n);
                        break;
                    }
                }
                i++;
                break;
            case St::AfterValue: {
                if (is_ws(c)) {
                    i++;
                    break;
                }
                bool object = (stack_ >> (depth_ - 1)) & 1;
                if (c == ',') {
                    st_ = object ? St::NextKey : St::Value;
                } else if (c == (object ? '}' : ']')) {
                    depth_--;
                    st_ = depth_ == 0 ? St::AfterTop : St::AfterValue;
                } else {
                    invalid();
                }
                i++;
                break;
            }
            case St::AfterTop:
                if (!is_ws(c)) invalid();
                i++;
                break;
            case St::Str:
                i = string_run(p, i, n);
                break;
            case St::StrEscape: {
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
                        break;
                    default:
                        invalid();
                }
                i++;
                if (c == 'u') {
                    st_ = St::StrHex;
                    break;
                }
                st_ = St::Str;
                if (str_ == Str::Model) {
                    model_->model.push_back(lit);
                } else if (str_ == Str::TopKey) {
                    key_append(&lit, 1);
                }
                break;
            }
            case St::StrHex: {
                int h = hex_digit(c);
                if (h < 0) invalid();
                hex_ = (hex_ << 4) | static_cast<uint32_t>(h);
                i++;
                if (--hex_left_ == 0) end_escape(hex_);
                break;
            }
            case St::StrLowSlash:
                if (c != '\\') invalid();
                st_ = St::StrLowU;
                i++;
                break;
            case St::StrLowU:
                if (c != 'u') invalid();
                hex_ = 0;
                hex_left_ = 4;
                st_ = St::StrHex;
                i++;
                break;
            case St::NumMinus:
                if (c == '0') {
                    st_ = St::NumZero;
                } else if (c >= '1' && c <= '9') {
                    st_ = St::NumInt;
                } else {
                    invalid();
                }
                i++;
                break;
            case St::NumZero:
            case St::NumInt:
            case St::NumFrac:
            case St::NumExp:
                if (c >= '0' && c <= '9' && st_ != St::NumZero) {
                    while (++i < n && p[i] >= '0' && p[i] <= '9') {
                    }
                } else if (c == '.' && (st_ == St::NumZero || st_ == St::NumInt)) {
                    st_ = St::NumFracStart;
                    i++;
                } else if ((c == 'e' || c == 'E') && st_ != St::NumExp) {
                    st_ = St::NumExpStart;
                    i++;
                } else {
                    st_ = St::AfterValue;  // the number ended; c is read again
                }
                break;
            case St::NumFracStart:
            case St::NumExpSign:
                if (c < '0' || c > '9') invalid();
                st_ = st_ == St::NumFracStart ? St::NumFrac : St::NumExp;
                i++;
                break;
            case St::NumExpStart:
                if (c == '+' || c == '-') {
                    st_ = St::NumExpSign;
                } else if (c >= '0' && c <= '9') {
                    st_ = St::NumExp;
                } else {
                    invalid();
                }
                i++;
                break;
            case St::Literal:
                if (c != lit_[lit_at_]) invalid();
                i++;
                if (lit_[++lit_at_] == '\0') st_ = St::AfterValue;
                break;
        }
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
