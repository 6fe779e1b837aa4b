// Provider catalog (SPEC §5): providers.yaml or the built-in default.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/util.h"

namespace byok {

enum class AuthStyle { Bearer, XApiKey, XGoogApiKey, ApiKey };
std::string_view auth_style_name(AuthStyle a);  // "bearer", "x-api-key", ...

// An absolute http(s) URL split for nginx: scheme://host[:port]/path.
struct Url {
    std::string scheme;  // "http" or "https"
    std::string host;    // lower-case host name or IP literal (IPv6 without [])
    int port = 0;        // explicit or scheme default
    std::string path;    // without trailing '/', may be empty
    bool host_is_ip = false;

    // "host" or "host:port" when the port is not the scheme default; IPv6 in [].
    std::string authority() const;
    // The authority is the host alone (no port to add, not IPv6): a caller
    // may use `host` as it is, without building authority().
    bool authority_is_host() const;
    // "scheme://authority" — what proxy_pass gets in front of the path.
    std::string origin() const;
};
// Throws Error naming `what` when the URL is not absolute http(s), has
// userinfo, a query or fragment, or control characters.
Url parse_url(std::string_view s, std::string_view what);

// A model's list price in USD per 1M tokens, held exactly as integer
// millionths of a micro-dollar per token (0.15 $/1M → 150000), so
// cost = tokens × price / 1e6 micro-dollars with no floating point.
struct ModelPrice {
    std::string pattern;  // model glob ('*' and '?')
    int64_t input = 0;
    int64_t output = 0;
    int64_t cached_input = 0;  // defaults to input when not given
    bool operator==(const ModelPrice &o) const {
        return pattern == o.pattern && input == o.input && output == o.output &&
               cached_input == o.cached_input;
    }
};
// "0.15" → 150000; at most 6 decimals, >= 0, < 1e6. Throws Error.
int64_t parse_price(std::string_view usd_per_million);
// 150000 → "0.15"
std::string format_price(int64_t units);

struct Provider {
    std::string id;
    std::string name;
    Url base_url;     // native root, for /<id>/...
    Url openai_base;  // root for the unified /v1/...
    AuthStyle auth = AuthStyle::Bearer;
    std::vector<std::pair<std::string, std::string>> headers;  // fixed extra headers
    std::string key_prefix;                                    // may be empty
    // Shape of a real key, checked when a key is saved: at least this many
    // bytes in all (prefix included), and, when key_pattern is set (a
    // bracket class such as "[A-Za-z0-9_-]"), every byte after the prefix
    // in that class. Stops placeholders like "sk-..." before they are stored.
    size_t key_min_length = 0;
    std::string key_pattern;
    std::string test_method = "GET";
    std::string test_path;            // relative to openai_base; empty = no live test
    std::vector<std::string> models;  // glob patterns ('*' and '?')
    bool per_key_endpoint = false;    // "custom": base URLs come from the key's endpoint
    // Runs on the gateway's own host or network (YAML `local: true`; the
    // built-in ollama). Such a provider is offered to tenants only when the
    // operator lists its hosts in byok_allow_endpoint (see allow_local).
    bool local = false;
    bool enabled = true;              // false: local and not allowed by the operator
    std::vector<ModelPrice> pricing;  // first matching pattern wins

    // The price of `model` (as sent upstream), or nullptr when unpriced.
    const ModelPrice *price(std::string_view model) const;
};

// The 403 `provider_not_allowed` message for a provider that is not enabled.
std::string provider_not_allowed_message(const Provider &p);

class Catalog {
  public:
    // Schema of SPEC §5. Errors name the file, the provider and the field,
    // e.g. "providers.yaml: provider 'openai': field 'auth': expected one of
    // bearer, x-api-key, x-goog-api-key, api-key".
    static Catalog load_file(const std::string &path);
    static Catalog parse_yaml(std::string_view text, const std::string &origin);
    // conf/providers.yaml as shipped (builtin_catalog_yaml), parsed by
    // parse_yaml: openai, anthropic, google, groq, mistral, together,
    // perplexity, cohere, huggingface, deepseek, openrouter, ollama, custom.
    static Catalog builtin();

    const Provider *find(std::string_view id) const;
    // First provider (catalog order) one of whose `models` globs matches.
    const Provider *match_model(std::string_view model) const;
    const std::vector<Provider> &providers() const { return providers_; }
    // Enables each `local` provider only if `allowed(host)` holds for the
    // hosts of both its base URLs; other providers stay enabled.
    void allow_local(const std::function<bool(std::string_view host)> &allowed);

  private:
    std::vector<Provider> providers_;
};

// The text of conf/providers.yaml at build time (generated by
// scripts/embed_catalog.py into build/gen/builtin_catalog.cpp).
extern const std::string_view builtin_catalog_yaml;

bool glob_match(std::string_view pattern, std::string_view s);

// Why the operator's own key (byok_system_key, byok_fallback) may not go to
// provider `id`, or "" when it may: the provider must be in the catalog and
// must not take its endpoint from each project's key — the operator's key
// would otherwise travel to an address a tenant chose.
std::string operator_provider_problem(const Catalog &c, std::string_view id);

// Format check on add (SPEC §7): non-empty, <= 512 bytes, printable ASCII
// without spaces, then the provider's shape: starts with key_prefix, at least
// key_min_length bytes, the rest within key_pattern. A key of the wrong shape
// gets one message naming the expected shape (key_shape). Throws Error with
// a message that does not contain the key.
void check_key_format(const Provider &p, std::string_view key);
// "'sk-' followed by at least 17 characters of [A-Za-z0-9_-]", or "" when the
// provider expects no particular shape.
std::string key_shape(const Provider &p);
// Whether `c` is in a bracket class "[...]" of single characters and a-z
// style ranges. False for a malformed class (see valid_key_pattern).
bool in_key_class(std::string_view cls, char c);
bool valid_key_pattern(std::string_view cls);

// key_prefix + "..." + last 4 characters ("sk-ant-...x9Qa", ASCII so access
// logs stay unescaped); keys too short to hide anything (< prefix + 8 chars)
// show only the prefix and "...".
std::string key_hint(const Provider &p, std::string_view key);
// A stored hint with the ASCII "..." in place of U+2026 (records written
// before the hint became ASCII); applied once, where key records are parsed.
std::string ascii_key_hint(std::string hint);

// The one header builder used for proxied traffic and for live key tests:
// the provider's auth header carrying `key`, then its fixed headers. The
// fixed headers are defaults (e.g. anthropic-version): a client that sends
// its own value keeps it, so a newer API version or a beta flag it asks
// for reaches the provider. The auth header always replaces the client's.
struct Header {
    std::string name;
    std::string value;          // may hold the secret; callers wipe it
    bool default_only = false;  // the client's header of this name wins
};
std::vector<Header> upstream_headers(const Provider &p, std::string_view key);

// The same headers as views into `p` and `key` (issue 18: the hit path copies
// them once, into the request's pool, and builds no strings). A value is
// `prefix` followed by `value`; the auth header (the one not default_only)
// holds the key.
struct HeaderRef {
    std::string_view name, prefix, value;
    bool default_only = false;
};
struct UpstreamHeaders {
    HeaderRef auth;
    const std::vector<std::pair<std::string, std::string>> *fixed = nullptr;
    template <class F>
    void each(F f) const {
        f(auth);
        if (fixed != nullptr)
            for (const auto &h : *fixed) f(HeaderRef{h.first, {}, h.second, true});
    }
};
UpstreamHeaders upstream_header_refs(const Provider &p, std::string_view key);

}  // namespace byok
