#include "lib/body.h"

#include "lib/util.h"

namespace byok {

namespace {

constexpr int kMaxDepth = 64;

[[noreturn]] void invalid() { throw Error("request body is not valid JSON"); }

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
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

// Single pass over the body: validates everything, unescapes only the
// strings the caller asks for (top-level keys containing escapes and the
// model value).
class Scanner {
  public:
    explicit Scanner(std::string_view s) : s_(s) {}

    std::optional<ModelSpan> run() {
        ws();
        if (peek() != '{') invalid();
        object(1, true);
        ws();
        if (i_ != s_.size()) invalid();
        return std::move(model_);
    }

  private:
    char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
    bool at_end() const { return i_ >= s_.size(); }

    void ws() {
        while (i_ < s_.size()) {
            char c = s_[i_];
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
            i_++;
        }
    }

    void expect(char c) {
        if (peek() != c || at_end()) invalid();
        i_++;
    }

    uint32_t hex4() {
        if (s_.size() - i_ < 4) invalid();
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            int h = hex_digit(s_[i_++]);
            if (h < 0) invalid();
            v = (v << 4) | static_cast<uint32_t>(h);
        }
        return v;
    }

    // Scans a string starting at the opening quote. When `out` is non-null
    // the unescaped value is written there (surrogate pairs must be paired).
    void string(std::string *out) {
        expect('"');
        for (;;) {
            if (at_end()) invalid();
            unsigned char c = static_cast<unsigned char>(s_[i_]);
            if (c == '"') {
                i_++;
                return;
            }
            if (c < 0x20) invalid();
            if (c != '\\') {
                // Copy a run of plain characters at once.
                size_t start = i_;
                while (i_ < s_.size()) {
                    unsigned char d = static_cast<unsigned char>(s_[i_]);
                    if (d == '"' || d == '\\' || d < 0x20) break;
                    i_++;
                }
                if (out) out->append(s_.data() + start, i_ - start);
                continue;
            }
            i_++;
            if (at_end()) invalid();
            char e = s_[i_++];
            char lit = 0;
            switch (e) {
                case '"':
                case '\\':
                case '/':
                    lit = e;
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
                case 'u': {
                    uint32_t cp = hex4();
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        if (s_.size() - i_ < 6 || s_[i_] != '\\' || s_[i_ + 1] != 'u') {
                            if (out) invalid();  // lone high surrogate in a value we use
                            break;
                        }
                        size_t save = i_;
                        i_ += 2;
                        uint32_t lo = hex4();
                        if (lo < 0xDC00 || lo > 0xDFFF) {
                            if (out) invalid();
                            i_ = save;  // rescan the second escape on its own
                            break;
                        }
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                        if (out) invalid();  // lone low surrogate
                        break;
                    }
                    if (out) append_utf8(*out, cp);
                    break;
                }
                default:
                    invalid();
            }
            if (lit && out) out->push_back(lit);
        }
    }

    void number() {
        if (peek() == '-') i_++;
        if (peek() == '0') {
            i_++;
        } else if (peek() >= '1' && peek() <= '9') {
            while (peek() >= '0' && peek() <= '9') i_++;
        } else {
            invalid();
        }
        if (peek() == '.') {
            i_++;
            if (!(peek() >= '0' && peek() <= '9')) invalid();
            while (peek() >= '0' && peek() <= '9') i_++;
        }
        if (peek() == 'e' || peek() == 'E') {
            i_++;
            if (peek() == '+' || peek() == '-') i_++;
            if (!(peek() >= '0' && peek() <= '9')) invalid();
            while (peek() >= '0' && peek() <= '9') i_++;
        }
    }

    void literal(std::string_view word) {
        if (s_.substr(i_, word.size()) != word) invalid();
        i_ += word.size();
    }

    void value(int depth) {
        switch (peek()) {
            case '{':
                object(depth + 1, false);
                break;
            case '[':
                array(depth + 1);
                break;
            case '"':
                string(nullptr);
                break;
            case 't':
                literal("true");
                break;
            case 'f':
                literal("false");
                break;
            case 'n':
                literal("null");
                break;
            default:
                number();
        }
    }

    void array(int depth) {
        if (depth > kMaxDepth) invalid();
        expect('[');
        ws();
        if (peek() == ']') {
            i_++;
            return;
        }
        for (;;) {
            ws();
            value(depth);
            ws();
            if (peek() == ',') {
                i_++;
                continue;
            }
            expect(']');
            return;
        }
    }

    bool key_is_model() {
        size_t start = i_;
        string(nullptr);
        std::string_view raw = s_.substr(start + 1, i_ - start - 2);
        if (raw.find('\\') == std::string_view::npos) return raw == "model";
        std::string key;
        i_ = start;
        string(&key);
        return key == "model";
    }

    void object(int depth, bool top) {
        if (depth > kMaxDepth) invalid();
        expect('{');
        ws();
        if (peek() == '}') {
            i_++;
            return;
        }
        for (;;) {
            ws();
            if (peek() != '"') invalid();
            bool is_model = top ? key_is_model() : (string(nullptr), false);
            ws();
            expect(':');
            ws();
            if (is_model) {
                if (seen_model_) throw Error("request body has more than one \"model\"");
                seen_model_ = true;
                if (peek() == '"') {
                    ModelSpan span;
                    span.begin = i_;
                    string(&span.model);
                    span.end = i_;
                    model_ = std::move(span);
                } else {
                    value(depth);
                }
            } else {
                value(depth);
            }
            ws();
            if (peek() == ',') {
                i_++;
                continue;
            }
            expect('}');
            return;
        }
    }

    std::string_view s_;
    size_t i_ = 0;
    bool seen_model_ = false;
    std::optional<ModelSpan> model_;
};

}  // namespace

std::optional<ModelSpan> find_model(std::string_view body) { return Scanner(body).run(); }

std::string replace_model(std::string_view body, const ModelSpan &span, std::string_view model) {
    static constexpr char kHex[] = "0123456789abcdef";
    if (span.begin >= span.end || span.end > body.size()) {
        throw Error("replace_model: span outside the body");
    }
    std::string out;
    out.reserve(body.size() + model.size() + 8);
    out.append(body.substr(0, span.begin));
    out.push_back('"');
    for (unsigned char c : model) {
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(static_cast<char>(c));
        } else if (c < 0x20) {
            out.append("\\u00");
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    out.push_back('"');
    out.append(body.substr(span.end));
    return out;
}

}  // namespace byok
