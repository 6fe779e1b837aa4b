// Provider keys against the catalog (SPEC §7): shape check, hint, and the
// one upstream header builder. Declared in lib/catalog.h.
#include "lib/catalog.h"

namespace byok {

void check_key_format(const Provider &p, std::string_view key) {
    if (key.empty()) throw Error("key is empty");
    if (key.size() > 512) throw Error("key is too long (at most 512 bytes)");
    for (unsigned char c : key) {
        if (c <= 0x20 || c >= 0x7f) {
            throw Error("key must be printable ASCII without spaces");
        }
    }
    bool shaped =
        key.size() >= p.key_min_length && key.substr(0, p.key_prefix.size()) == p.key_prefix;
    for (size_t i = p.key_prefix.size(); shaped && !p.key_pattern.empty() && i < key.size(); i++) {
        shaped = in_key_class(p.key_pattern, key[i]);
    }
    if (!shaped) throw Error("key for " + p.name + " must be " + key_shape(p));
}

std::string key_shape(const Provider &p) {
    size_t rest =
        p.key_min_length > p.key_prefix.size() ? p.key_min_length - p.key_prefix.size() : 1;
    std::string shape = p.key_prefix.empty() ? "" : "'" + p.key_prefix + "' followed by ";
    shape += "at least " + std::to_string(rest) + (rest == 1 ? " character" : " characters");
    if (!p.key_pattern.empty()) shape += " of " + p.key_pattern;
    return shape;
}

// A bracket class is checked byte by byte with no allocation, so the rule
// costs nothing like a regex would; "a-z" is a range, a '-' first or last is
// literal.
bool in_key_class(std::string_view cls, char c) {
    if (cls.size() < 3 || cls.front() != '[' || cls.back() != ']') return false;
    std::string_view body = cls.substr(1, cls.size() - 2);
    for (size_t i = 0; i < body.size(); i++) {
        if (i + 2 < body.size() && body[i + 1] == '-') {
            if (c >= body[i] && c <= body[i + 2]) return true;
            i += 2;
        } else if (body[i] == c) {
            return true;
        }
    }
    return false;
}

bool valid_key_pattern(std::string_view cls) {
    if (cls.size() < 3 || cls.front() != '[' || cls.back() != ']') return false;
    std::string_view body = cls.substr(1, cls.size() - 2);
    for (size_t i = 0; i < body.size(); i++) {
        unsigned char c = static_cast<unsigned char>(body[i]);
        if (c <= 0x20 || c >= 0x7f || c == '[' || c == ']' || c == '\\') return false;
        if (i + 2 < body.size() && body[i + 1] == '-') {
            if (body[i + 2] < body[i]) return false;
            i += 2;
        }
    }
    return true;
}

std::string key_hint(const Provider &p, std::string_view key) {
    // ASCII "..." so access logs carrying $byok_key_hint need no escaping.
    std::string hint = p.key_prefix + "...";
    if (key.size() >= p.key_prefix.size() + 8) hint.append(key.substr(key.size() - 4));
    return hint;
}

std::string ascii_key_hint(std::string hint) {
    static constexpr std::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026, older records
    for (size_t at = hint.find(kEllipsis); at != std::string::npos; at = hint.find(kEllipsis, at)) {
        hint.replace(at, kEllipsis.size(), "...");
        at += 3;
    }
    return hint;
}

UpstreamHeaders upstream_header_refs(const Provider &p, std::string_view key) {
    UpstreamHeaders out;
    out.fixed = &p.headers;
    switch (p.auth) {
        case AuthStyle::Bearer:
            out.auth = {"Authorization", "Bearer ", key};
            break;
        case AuthStyle::XApiKey:
            out.auth = {"x-api-key", {}, key};
            break;
        case AuthStyle::XGoogApiKey:
            out.auth = {"x-goog-api-key", {}, key};
            break;
        case AuthStyle::ApiKey:
            out.auth = {"api-key", {}, key};
            break;
    }
    return out;
}

std::vector<Header> upstream_headers(const Provider &p, std::string_view key) {
    std::vector<Header> out;
    out.reserve(1 + p.headers.size());
    upstream_header_refs(p, key).each([&](const HeaderRef &h) {
        Header copy{std::string(h.name), std::string(), h.default_only};
        copy.value.reserve(h.prefix.size() + h.value.size());
        copy.value.append(h.prefix).append(h.value);
        out.push_back(std::move(copy));
    });
    return out;
}

}  // namespace byok
