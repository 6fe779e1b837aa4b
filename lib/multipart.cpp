#include "lib/multipart.h"

#include <cstring>
#include <utility>

#include "lib/text.h"

namespace byok {

namespace {

constexpr size_t kMaxHeaderBlock = 16 * 1024;
constexpr size_t kMaxModel = 1024;

[[noreturn]] void malformed(const char *why) {
    throw Error(std::string("multipart body is malformed: ") + why);
}

// A header value "type; name=value; name="quoted\"value"": its parameters
// in order, names lower-cased, quoted values unescaped. The type comes first
// (with an empty name).
std::vector<std::pair<std::string, std::string>> header_params(std::string_view v) {
    std::vector<std::pair<std::string, std::string>> out;
    size_t i = v.find(';');
    out.emplace_back("", std::string(trim_ows(v.substr(0, i))));
    while (i < v.size()) {
        i++;  // past ';'
        size_t eq = i;
        while (eq < v.size() && v[eq] != '=' && v[eq] != ';') eq++;
        std::string name(trim_ows(v.substr(i, eq - i)));
        for (char &c : name) c = ascii_lower(c);
        std::string value;
        i = eq;
        if (i < v.size() && v[i] == '=') {
            i++;
            while (i < v.size() && is_ows(v[i])) i++;
            if (i < v.size() && v[i] == '"') {
                for (i++; i < v.size() && v[i] != '"'; i++) {
                    if (v[i] == '\\' && i + 1 < v.size()) i++;
                    value.push_back(v[i]);
                }
                while (i < v.size() && v[i] != ';') i++;  // past the closing quote
            } else {
                size_t end = v.find(';', i);
                if (end == std::string_view::npos) end = v.size();
                value = std::string(trim_ows(v.substr(i, end - i)));
                i = end;
            }
        }
        if (!name.empty()) out.emplace_back(std::move(name), std::move(value));
    }
    return out;
}

// The media type of a Content-Type, without its parameters (compared
// case-insensitively, in place: issue 18, no copy per request).
std::string_view media_type(std::string_view content_type) {
    return trim_ows(content_type.substr(0, content_type.find(';')));
}

}  // namespace

BodyKind body_kind(std::string_view content_type) {
    std::string_view t = media_type(content_type);
    if (iequals(t, "multipart/form-data")) return BodyKind::Multipart;
    if (t.empty() || iequals(t, "application/json") || iequals(t, "text/plain") ||
        iequals(t, "application/x-www-form-urlencoded") ||
        (t.size() > 5 && iequals(t.substr(t.size() - 5), "+json")))
        return BodyKind::Json;
    return BodyKind::Opaque;
}

std::string multipart_boundary(std::string_view content_type) {
    for (const auto &[name, value] : header_params(content_type)) {
        if (name != "boundary") continue;
        bool printable = true;
        for (unsigned char c : value) printable = printable && c >= 0x20 && c < 0x7f;
        if (value.empty() || value.size() > 70 || !printable || value.back() == ' ')
            throw Error("multipart body with an invalid boundary");
        return value;
    }
    throw Error("multipart body without a boundary in its Content-Type");
}

MultipartScanner::MultipartScanner(std::string_view boundary)
    : delim_("\r\n--" + std::string(boundary)), fail_(delim_.size(), 0) {
    // KMP: fail_[i] = length of the longest proper prefix of delim_[0..i]
    // that is also its suffix, so a partial match never rescans bytes.
    for (size_t i = 1, k = 0; i < delim_.size(); i++) {
        while (k > 0 && delim_[i] != delim_[k]) k = fail_[k - 1];
        if (delim_[i] == delim_[k]) k++;
        fail_[i] = static_cast<uint16_t>(k);
    }
}

void MultipartScanner::keep(std::string_view bytes) {
    if (!in_model_ || bytes.empty()) return;
    if (model_->model.size() + bytes.size() > kMaxModel)
        throw Error("multipart \"model\" field is longer than 1024 bytes");
    model_->model.append(bytes);
}

// Content bytes from p[i]; returns where the delimiter ended (or n). Bytes
// that turn out not to start a delimiter are released to keep().
size_t MultipartScanner::data(const char *p, size_t i, size_t n) {
    while (i < n) {
        if (matched_ == 0) {
            // Nothing pending: jump to the next CR, the only byte that can
            // start a delimiter (files pass at memchr speed).
            const void *cr = std::memchr(p + i, '\r', n - i);
            size_t j = cr == nullptr ? n : static_cast<const char *>(cr) - p;
            keep({p + i, j - i});
            i = j;
            if (i == n) break;
        }
        char c = p[i++];
        size_t before = matched_;
        while (matched_ > 0 && c != delim_[matched_]) matched_ = fail_[matched_ - 1];
        if (c == delim_[matched_]) matched_++;
        // The pending bytes were delim_[0..before) + c; all but the last
        // `matched_` of them are content.
        size_t released = before + 1 - matched_;
        if (released > before) {
            keep(std::string_view(delim_).substr(0, before));
            keep({&c, 1});
        } else {
            keep(std::string_view(delim_).substr(0, released));
        }
        if (matched_ == delim_.size()) {
            delimiter_found(offset_ + i - delim_.size());
            return i;
        }
    }
    return n;
}

void MultipartScanner::delimiter_found(size_t at) {
    if (in_model_) model_->end = at;
    in_model_ = false;
    matched_ = 0;
    st_ = St::AfterDelim;
}

void MultipartScanner::headers_done() {
    // headers_ ends with the empty line; unfold continuation lines.
    std::vector<std::string> lines;
    size_t at = 0;
    while (at < headers_.size()) {
        size_t eol = headers_.find("\r\n", at);
        std::string_view line(headers_.data() + at, eol - at);
        at = eol + 2;
        if (line.empty()) break;
        if (is_ows(line.front()) && !lines.empty()) {
            lines.back().append(" ").append(trim_ows(line));
        } else {
            lines.emplace_back(line);
        }
    }
    bool named_model = false, file = false;
    for (const std::string &line : lines) {
        size_t colon = line.find(':');
        if (colon == std::string::npos) malformed("a part header without ':'");
        if (!iequals(trim_ows(std::string_view(line).substr(0, colon)), "content-disposition"))
            continue;
        auto params = header_params(std::string_view(line).substr(colon + 1));
        if (!iequals(params[0].second, "form-data")) continue;
        for (const auto &[name, value] : params) {
            if (name == "name") named_model = value == "model";
            if (name == "filename" || name == "filename*") file = true;
        }
    }
    headers_.clear();
    if (!named_model || file) return;
    if (model_) throw Error("request body has more than one \"model\" field");
    model_ = ModelSpan{};
    model_->kind = BodyKind::Multipart;
    model_->begin = part_begin_;
    in_model_ = true;
}

void MultipartScanner::feed(std::string_view piece) {
    const char *p = piece.data();
    size_t n = piece.size();
    size_t i = 0;
    while (i < n) {
        switch (st_) {
            case St::Data:
                i = data(p, i, n);
                break;
            case St::AfterDelim:
                if (p[i] == '-') {
                    st_ = St::CloseDash;
                } else if (is_ows(p[i])) {
                    st_ = St::Padding;
                } else if (p[i] == '\r') {
                    st_ = St::ExpectLf;
                } else {
                    malformed("the boundary appears inside a part");
                }
                i++;
                break;
            case St::CloseDash:
                if (p[i++] != '-') malformed("the boundary appears inside a part");
                st_ = St::Epilogue;
                break;
            case St::Padding:
                if (p[i] == '\r') {
                    st_ = St::ExpectLf;
                } else if (!is_ows(p[i])) {
                    malformed("the boundary appears inside a part");
                }
                i++;
                break;
            case St::ExpectLf:
                if (p[i++] != '\n') malformed("a boundary line without CRLF");
                st_ = St::Headers;
                part_begin_ = offset_ + i;
                headers_.clear();
                break;
            case St::Headers: {
                // Up to the empty line, or the first CRLF when there are no
                // headers at all.
                while (i < n) {
                    headers_.push_back(p[i++]);
                    size_t h = headers_.size();
                    if ((h == 2 && headers_ == "\r\n") ||
                        (h >= 4 && headers_.compare(h - 4, 4, "\r\n\r\n") == 0)) {
                        headers_done();
                        st_ = St::Data;
                        matched_ = 0;
                        break;
                    }
                    if (h > kMaxHeaderBlock) malformed("a part's headers exceed 16 KiB");
                }
                break;
            }
            case St::Epilogue:
                i = n;
                break;
        }
    }
    offset_ += n;
}

std::optional<ModelSpan> MultipartScanner::finish() {
    if (st_ != St::Epilogue) malformed("it ends before its closing boundary");
    return model_;
}

BodyScanner::BodyScanner(std::string_view content_type)
    : BodyScanner(body_kind(content_type), content_type) {}

BodyScanner::BodyScanner(BodyKind kind, std::string_view content_type) : kind_(kind) {
    try {
        if (kind_ == BodyKind::Json) json_.emplace();
        if (kind_ == BodyKind::Multipart) multipart_.emplace(multipart_boundary(content_type));
    } catch (const Error &e) {
        throw BodyError("invalid_multipart", e.what());
    }
}

void BodyScanner::feed(std::string_view piece) {
    try {
        if (json_) json_->feed(piece);
        if (multipart_) multipart_->feed(piece);
    } catch (const Error &e) {
        throw BodyError(json_ ? "invalid_json" : "invalid_multipart", e.what());
    }
    opaque_len_ += piece.size();
}

std::optional<ModelSpan> BodyScanner::finish() {
    try {
        if (json_) return json_->finish();
        if (multipart_) return multipart_->finish();
    } catch (const Error &e) {
        throw BodyError(json_ ? "invalid_json" : "invalid_multipart", e.what());
    }
    return std::nullopt;
}

void BodyScanner::skip(size_t n) {
    if (reads_bytes()) throw Error("BodyScanner::skip: this body must be read");
    opaque_len_ += n;
}

size_t BodyScanner::offset() const { return opaque_len_; }

}  // namespace byok
