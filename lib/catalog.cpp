#include "lib/catalog.h"

#include <arpa/inet.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <optional>
#include <sstream>

#include "lib/layout.h"
#include "lib/text.h"

namespace byok {

std::string_view auth_style_name(AuthStyle a) {
    switch (a) {
        case AuthStyle::Bearer:
            return "bearer";
        case AuthStyle::XApiKey:
            return "x-api-key";
        case AuthStyle::XGoogApiKey:
            return "x-goog-api-key";
        case AuthStyle::ApiKey:
            return "api-key";
    }
    return "bearer";
}

namespace {

std::optional<AuthStyle> parse_auth_style(std::string_view s) {
    for (AuthStyle a :
         {AuthStyle::Bearer, AuthStyle::XApiKey, AuthStyle::XGoogApiKey, AuthStyle::ApiKey}) {
        if (auth_style_name(a) == s) return a;
    }
    return std::nullopt;
}

bool has_control(std::string_view s) {
    for (unsigned char c : s) {
        if (c <= 0x20 || c == 0x7f) return true;
    }
    return false;
}

}  // namespace

namespace {
bool default_port(const Url &u) {
    return u.port == 0 || u.port == (u.scheme == "https" ? 443 : 80);
}
}  // namespace

std::string Url::authority() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    if (!default_port(*this)) h += ":" + std::to_string(port);
    return h;
}

bool Url::authority_is_host() const {
    return host.find(':') == std::string::npos && default_port(*this);
}

std::string Url::origin() const { return scheme + "://" + authority(); }

Url parse_url(std::string_view s, std::string_view what) {
    auto fail = [&](std::string_view why) -> Error {
        return Error(std::string(what) + ": " + std::string(why));
    };
    if (has_control(s)) throw fail("URL contains spaces or control characters");
    Url u;
    size_t sep = s.find("://");
    if (sep == std::string_view::npos) throw fail("expected an absolute http(s) URL");
    for (char c : s.substr(0, sep)) u.scheme.push_back(ascii_lower(c));
    if (u.scheme != "http" && u.scheme != "https") {
        throw fail("expected an absolute http(s) URL");
    }
    std::string_view rest = s.substr(sep + 3);
    if (rest.find_first_of("?#") != std::string_view::npos) {
        throw fail("URL must not have a query or fragment");
    }
    size_t slash = rest.find('/');
    std::string_view auth = rest.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
    if (auth.find('@') != std::string_view::npos) throw fail("URL must not contain userinfo");

    std::string_view host, port;
    if (!auth.empty() && auth.front() == '[') {
        size_t close = auth.find(']');
        if (close == std::string_view::npos) throw fail("invalid IPv6 literal");
        host = auth.substr(1, close - 1);
        std::string_view after = auth.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') throw fail("invalid host");
            port = after.substr(1);
            if (port.empty()) throw fail("invalid port");
        }
        in6_addr a6{};
        if (inet_pton(AF_INET6, std::string(host).c_str(), &a6) != 1) {
            throw fail("invalid IPv6 literal");
        }
        u.host_is_ip = true;
    } else {
        size_t colon = auth.find(':');
        host = auth.substr(0, colon);
        if (colon != std::string_view::npos) {
            port = auth.substr(colon + 1);
            if (port.empty()) throw fail("invalid port");
        }
        for (char c : host) {
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-';
            if (!ok) throw fail("invalid host");
        }
    }
    if (host.empty()) throw fail("URL has no host");
    for (char c : host) u.host.push_back(ascii_lower(c));
    if (!u.host_is_ip) {
        in_addr a4{};
        u.host_is_ip = inet_pton(AF_INET, u.host.c_str(), &a4) == 1;
    }
    if (!port.empty()) {
        if (port.size() > 5) throw fail("invalid port");
        int p = 0;
        for (char c : port) {
            if (c < '0' || c > '9') throw fail("invalid port");
            p = p * 10 + (c - '0');
        }
        if (p < 1 || p > 65535) throw fail("invalid port");
        u.port = p;
    } else {
        u.port = u.scheme == "https" ? 443 : 80;
    }
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    u.path = std::string(path);
    return u;
}

bool glob_match(std::string_view pattern, std::string_view s) {
    // Iterative matcher with single-star backtracking: linear enough for
    // catalog patterns and never recursive on attacker-controlled input.
    size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
    while (i < s.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == s[i])) {
            p++;
            i++;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            mark = i;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            i = ++mark;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') p++;
    return p == pattern.size();
}

const Provider *Catalog::find(std::string_view id) const {
    for (const auto &p : providers_) {
        if (p.id == id) return &p;
    }
    return nullptr;
}

const Provider *Catalog::match_model(std::string_view model) const {
    if (model.empty()) return nullptr;
    for (const auto &p : providers_) {
        for (const auto &g : p.models) {
            if (glob_match(g, model)) return &p;
        }
    }
    return nullptr;
}

int64_t parse_price(std::string_view s) {
    std::string_view in = s;
    int64_t whole = 0, frac = 0;
    int digits = 0, decimals = -1;
    for (char c : s) {
        if (c == '.' && decimals < 0) {
            decimals = 0;
            continue;
        }
        if (c < '0' || c > '9') throw Error("price '" + std::string(in) + "' is not a number");
        if (decimals < 0) {
            if (++digits > 6) throw Error("price '" + std::string(in) + "' is too large");
            whole = whole * 10 + (c - '0');
        } else {
            if (++decimals > 6) throw Error("price '" + std::string(in) + "' has over 6 decimals");
            frac = frac * 10 + (c - '0');
        }
    }
    if (digits == 0 && decimals <= 0)
        throw Error("price '" + std::string(in) + "' is not a number");
    for (int d = decimals < 0 ? 0 : decimals; d < 6; d++) frac *= 10;
    return whole * 1000000 + frac;
}

std::string format_price(int64_t units) {
    std::string frac = std::to_string(1000000 + units % 1000000).substr(1);
    while (!frac.empty() && frac.back() == '0') frac.pop_back();
    return std::to_string(units / 1000000) + (frac.empty() ? "" : "." + frac);
}

const ModelPrice *Provider::price(std::string_view model) const {
    if (model.empty()) return nullptr;
    for (const auto &p : pricing) {
        if (glob_match(p.pattern, model)) return &p;
    }
    return nullptr;
}

// ---------------------------------------------------------------- built-in

// conf/providers.yaml itself (embedded at build time), read like any other.
Catalog Catalog::builtin() { return parse_yaml(builtin_catalog_yaml, "built-in providers.yaml"); }

void Catalog::allow_local(const std::function<bool(std::string_view host)> &allowed) {
    for (auto &p : providers_)
        p.enabled = !p.local || (allowed(p.base_url.host) && allowed(p.openai_base.host));
}

std::string provider_not_allowed_message(const Provider &p) {
    return "provider '" + p.id +
           "' runs on the gateway's own network and is off: the operator enables it by listing "
           "its host in byok_allow_endpoint";
}

// ---------------------------------------------------------------- YAML

namespace {

bool valid_header_name(std::string_view n) {
    if (n.empty()) return false;
    for (char c : n) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok) return false;
    }
    return true;
}

struct FieldReader {
    const std::string &origin;
    const std::string &id;

    Error err(std::string_view field, std::string_view why) const {
        return Error(origin + ": provider '" + id + "': field '" + std::string(field) +
                     "': " + std::string(why));
    }
    std::string scalar(const YAML::Node &n, std::string_view field) const {
        if (!n.IsScalar()) throw err(field, "expected a string");
        return n.Scalar();
    }
};

Provider parse_provider(const std::string &origin, const std::string &id, const YAML::Node &n) {
    FieldReader r{origin, id};
    if (!valid_id(id)) {
        throw Error(origin + ": provider '" + id + "': id must match [a-z0-9][a-z0-9_-]{0,63}");
    }
    if (!n.IsMap()) throw Error(origin + ": provider '" + id + "': expected a mapping");
    Provider p;
    p.id = id;
    bool have_name = false, have_base = false, have_openai = false;
    for (const auto &kv : n) {
        std::string f = kv.first.IsScalar() ? kv.first.Scalar() : "?";
        const YAML::Node &v = kv.second;
        if (f == "name") {
            p.name = r.scalar(v, f);
            if (p.name.empty()) throw r.err(f, "must not be empty");
            have_name = true;
        } else if (f == "base_url" || f == "openai_base") {
            std::string s = r.scalar(v, f);
            Url u;
            try {
                u = parse_url(s, "x");
            } catch (const Error &e) {
                throw r.err(f, std::string(e.what()).substr(3));
            }
            if (f == "base_url") {
                p.base_url = u;
                have_base = true;
            } else {
                p.openai_base = u;
                have_openai = true;
            }
        } else if (f == "auth") {
            auto a = parse_auth_style(r.scalar(v, f));
            if (!a) throw r.err(f, "expected one of bearer, x-api-key, x-goog-api-key, api-key");
            p.auth = *a;
        } else if (f == "headers") {
            if (v.IsNull()) continue;
            if (!v.IsMap()) throw r.err(f, "expected a mapping of header names to values");
            for (const auto &h : v) {
                std::string name = r.scalar(h.first, f);
                std::string value = r.scalar(h.second, f);
                if (!valid_header_name(name)) throw r.err(f, "invalid header name '" + name + "'");
                if (!safe_header_value(value)) {
                    throw r.err(f, "header '" + name + "' has control characters");
                }
                p.headers.emplace_back(name, value);
            }
        } else if (f == "key_prefix") {
            if (v.IsNull()) continue;
            p.key_prefix = r.scalar(v, f);
            if (has_control(p.key_prefix)) throw r.err(f, "must be printable without spaces");
        } else if (f == "key_min_length") {
            std::string len = r.scalar(v, f);
            if (len.empty() || len.size() > 3 ||
                len.find_first_not_of("0123456789") != std::string::npos || std::stoi(len) > 512) {
                throw r.err(f, "expected a number from 0 to 512");
            }
            p.key_min_length = static_cast<size_t>(std::stoi(len));
        } else if (f == "key_pattern") {
            if (v.IsNull()) continue;
            p.key_pattern = r.scalar(v, f);
            if (!valid_key_pattern(p.key_pattern)) {
                throw r.err(f, "expected a character class such as \"[A-Za-z0-9_-]\"");
            }
        } else if (f == "test") {
            if (v.IsNull()) continue;
            if (!v.IsMap()) throw r.err(f, "expected { method, path }");
            for (const auto &t : v) {
                std::string tf = r.scalar(t.first, f);
                if (tf == "method") {
                    std::string m = r.scalar(t.second, "test.method");
                    if (m != "GET" && m != "POST" && m != "HEAD") {
                        throw r.err("test.method", "expected GET, POST or HEAD");
                    }
                    p.test_method = m;
                } else if (tf == "path") {
                    std::string path = r.scalar(t.second, "test.path");
                    if (path.empty() || path[0] != '/' || has_control(path)) {
                        throw r.err("test.path", "expected a path starting with '/'");
                    }
                    p.test_path = path;
                } else {
                    throw r.err("test." + tf, "unknown field");
                }
            }
            if (p.test_path.empty()) throw r.err("test.path", "missing");
        } else if (f == "models") {
            if (v.IsNull()) continue;
            if (!v.IsSequence()) throw r.err(f, "expected a list of glob patterns");
            for (const auto &m : v) {
                std::string g = r.scalar(m, f);
                if (g.empty() || has_control(g)) throw r.err(f, "invalid pattern");
                p.models.push_back(g);
            }
        } else if (f == "pricing") {
            if (v.IsNull()) continue;
            if (!v.IsMap()) throw r.err(f, "expected a mapping of model globs to prices");
            for (const auto &m : v) {
                ModelPrice mp;
                mp.pattern = r.scalar(m.first, f);
                if (mp.pattern.empty() || has_control(mp.pattern))
                    throw r.err(f, "invalid pattern");
                std::string at = "pricing." + mp.pattern;
                if (!m.second.IsMap()) throw r.err(at, "expected { input, output, cached_input }");
                bool have_in = false, have_out = false, have_cached = false;
                for (const auto &pf : m.second) {
                    std::string name = r.scalar(pf.first, at);
                    int64_t *slot = name == "input"          ? &mp.input
                                    : name == "output"       ? &mp.output
                                    : name == "cached_input" ? &mp.cached_input
                                                             : nullptr;
                    if (slot == nullptr) throw r.err(at + "." + name, "unknown field");
                    try {
                        *slot = parse_price(r.scalar(pf.second, at + "." + name));
                    } catch (const Error &e) {
                        throw r.err(at + "." + name, e.what());
                    }
                    (name == "input" ? have_in : name == "output" ? have_out : have_cached) = true;
                }
                if (!have_in || !have_out) throw r.err(at, "needs input and output");
                if (!have_cached) mp.cached_input = mp.input;
                p.pricing.push_back(std::move(mp));
            }
        } else if (f == "per_key_endpoint" || f == "local") {
            std::string s = r.scalar(v, f);
            if (s != "true" && s != "false") throw r.err(f, "expected true or false");
            (f == "local" ? p.local : p.per_key_endpoint) = s == "true";
        } else {
            throw r.err(f, "unknown field");
        }
    }
    if (!have_name) throw r.err("name", "missing");
    if (!have_base) throw r.err("base_url", "missing");
    if (!have_openai) p.openai_base = p.base_url;
    p.enabled = !p.local;  // until allow_local() says otherwise
    return p;
}

}  // namespace

Catalog Catalog::parse_yaml(std::string_view text, const std::string &origin) {
    YAML::Node root;
    try {
        root = YAML::Load(std::string(text));
    } catch (const YAML::Exception &e) {
        throw Error(origin + ": " + e.what());
    }
    if (!root.IsMap()) throw Error(origin + ": expected a mapping with 'providers'");
    Catalog c;
    bool have_providers = false;
    try {
        for (const auto &kv : root) {
            std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "?";
            if (key != "providers") throw Error(origin + ": unknown top-level field '" + key + "'");
            have_providers = true;
            if (!kv.second.IsMap()) throw Error(origin + ": 'providers' must be a mapping");
            for (const auto &pv : kv.second) {
                std::string id = pv.first.IsScalar() ? pv.first.Scalar() : "?";
                if (c.find(id) != nullptr) {
                    throw Error(origin + ": provider '" + id + "': defined twice");
                }
                c.providers_.push_back(parse_provider(origin, id, pv.second));
            }
        }
    } catch (const YAML::Exception &e) {
        throw Error(origin + ": " + e.what());
    }
    if (!have_providers || c.providers_.empty()) throw Error(origin + ": no providers defined");
    return c;
}

Catalog Catalog::load_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open provider catalog");
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw Error(path + ": read failed");
    return parse_yaml(ss.str(), path);
}

std::string operator_provider_problem(const Catalog &c, std::string_view id) {
    const Provider *p = c.find(id);
    if (p == nullptr) return "is not in the provider catalog";
    if (p->per_key_endpoint)
        return "takes its endpoint from each project's key; the operator's key cannot go there";
    return {};
}

}  // namespace byok
