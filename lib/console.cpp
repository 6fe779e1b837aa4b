// The web console's serving rules (see lib/console.h).
#include "lib/console.h"

namespace byok::console {

std::string api_problem(std::string_view api) {
    if (api.empty() || api.front() != '/' || api.back() != '/')
        return "api= must be a path on this origin that starts and ends with '/'";
    if (api.size() > 200) return "api= is longer than 200 bytes";
    for (unsigned char ch : api) {
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '/' || ch == '-' || ch == '_' || ch == '.';
        if (!ok) return "api= may hold only letters, digits and / - _ .";
    }
    if (api.find("//") != std::string_view::npos || api.find("/../") != std::string_view::npos)
        return "api= must be a plain path (no '//' or '..')";
    return "";
}

std::string render_index(std::string_view tmpl, std::string_view api) {
    std::string out;
    size_t at = tmpl.find(kApiPlaceholder);
    if (at == std::string_view::npos) return std::string(tmpl);
    out.reserve(tmpl.size() + api.size());
    out.append(tmpl.substr(0, at));
    out.append(api);
    out.append(tmpl.substr(at + kApiPlaceholder.size()));
    return out;
}

const Asset *find(const Asset *table, size_t count, std::string_view rel) {
    if (rel.empty()) rel = kIndex;
    for (size_t i = 0; i < count; ++i)
        if (table[i].path == rel) return &table[i];
    return nullptr;
}

std::vector<Header> security_headers() {
    // No inline script or style anywhere in the console, so 'self' is all it
    // needs; the API is on the same origin (api_problem).
    return {
        {"Content-Security-Policy",
         "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
         "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
         "frame-ancestors 'none'"},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        {"X-Content-Type-Options", "nosniff"},
        {"Cross-Origin-Opener-Policy", "same-origin"},
    };
}

std::string_view cache_control(const Asset &a) {
    return a.immutable ? "public, max-age=31536000, immutable" : "no-cache";
}

}  // namespace byok::console
