#include <criterion/criterion.h>

#include <fstream>
#include <sstream>
#include <string>

#include "lib/catalog.h"
#include "tests/unit/test_support.h"

using namespace byok;

namespace {

using byok::test::error_of;

std::string read_text(const char *path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool same_url(const Url &a, const Url &b) {
    return a.scheme == b.scheme && a.host == b.host && a.port == b.port && a.path == b.path &&
           a.host_is_ip == b.host_is_ip;
}

bool same_provider(const Provider &a, const Provider &b) {
    return a.id == b.id && a.name == b.name && same_url(a.base_url, b.base_url) &&
           same_url(a.openai_base, b.openai_base) && a.auth == b.auth && a.headers == b.headers &&
           a.key_prefix == b.key_prefix && a.key_min_length == b.key_min_length &&
           a.key_pattern == b.key_pattern && a.test_method == b.test_method &&
           a.test_path == b.test_path && a.models == b.models &&
           a.per_key_endpoint == b.per_key_endpoint && a.local == b.local &&
           a.enabled == b.enabled && a.pricing == b.pricing;
}

const char kMinimal[] =
    "providers:\n"
    "  local:\n"
    "    name: Local\n"
    "    base_url: http://10.0.0.5:8000/v1/\n";

std::string with_field(const std::string &line) {
    return std::string(kMinimal) + "    " + line + "\n";
}

}  // namespace

Test(catalog, builtin_covers_spec_providers) {
    Catalog c = Catalog::builtin();
    const char *ids[] = {"openai",     "anthropic",  "google", "groq",        "mistral",
                         "together",   "perplexity", "cohere", "huggingface", "deepseek",
                         "openrouter", "ollama",     "custom"};
    cr_assert_eq(c.providers().size(), sizeof ids / sizeof ids[0]);
    for (const char *id : ids) cr_assert_not_null(c.find(id), "%s", id);
    cr_assert_null(c.find("nope"));
}

Test(catalog, builtin_matches_spec_section_5) {
    Catalog c = Catalog::builtin();
    const Provider &o = *c.find("openai");
    cr_assert_eq(o.name, "OpenAI");
    cr_assert_eq(o.base_url.origin(), "https://api.openai.com");
    cr_assert_eq(o.base_url.path, "/v1");
    cr_assert_eq(o.auth, AuthStyle::Bearer);
    cr_assert_eq(o.key_prefix, "sk-");
    cr_assert_eq(o.test_method, "GET");
    cr_assert_eq(o.test_path, "/models");
    cr_assert(o.models == std::vector<std::string>(
                              {"gpt-*", "o1*", "o3*", "o4*", "text-embedding-*", "chatgpt-*"}));
    const Provider &a = *c.find("anthropic");
    cr_assert_eq(a.base_url.path, "");
    cr_assert_eq(a.openai_base.path, "/v1");
    cr_assert_eq(a.auth, AuthStyle::XApiKey);
    cr_assert(a.headers == (std::vector<std::pair<std::string, std::string>>{
                               {"anthropic-version", "2023-06-01"}}));
    cr_assert_eq(a.key_prefix, "sk-ant-");
    const Provider &r = *c.find("openrouter");
    cr_assert_eq(r.openai_base.origin() + r.openai_base.path, "https://openrouter.ai/api/v1");
    cr_assert_eq(r.key_prefix, "sk-or-");
    cr_assert_eq(r.test_path, "/key");
    const Provider &g = *c.find("google");
    cr_assert_eq(g.auth, AuthStyle::XGoogApiKey);
    cr_assert_eq(g.openai_base.path, "/v1beta/openai");
    const Provider &l = *c.find("ollama");
    cr_assert_eq(l.base_url.scheme, "http");
    cr_assert_eq(l.base_url.port, 11434);
    cr_assert(l.base_url.host_is_ip);
    cr_assert_eq(l.base_url.authority(), "127.0.0.1:11434");
    cr_assert(c.find("custom")->per_key_endpoint);
    cr_assert_eq(c.find("huggingface")->key_prefix, "hf_");
}

// The built-in catalog is conf/providers.yaml itself, embedded at build time:
// byte for byte the shipped file, and parsed by the operator's parser.
Test(catalog, builtin_is_the_shipped_yaml) {
    cr_assert_eq(std::string(builtin_catalog_yaml), read_text("conf/providers.yaml"));
    Catalog file = Catalog::load_file("conf/providers.yaml");
    Catalog def = Catalog::builtin();
    cr_assert_eq(file.providers().size(), def.providers().size());
    for (size_t i = 0; i < def.providers().size(); i++) {
        cr_assert(same_provider(file.providers()[i], def.providers()[i]), "provider %s differs",
                  def.providers()[i].id.c_str());
    }
}

Test(catalog, model_matching) {
    Catalog c = Catalog::builtin();
    struct {
        const char *model, *provider;
    } cases[] = {
        {"gpt-4o", "openai"},
        {"o3-mini", "openai"},
        {"o1", "openai"},
        {"text-embedding-3-small", "openai"},
        {"claude-3-5-sonnet", "anthropic"},
        {"gemini-2.0-flash", "google"},
        {"mistral-large-latest", "mistral"},
        {"codestral-latest", "mistral"},
        {"sonar-pro", "perplexity"},
        {"command-r-plus", "cohere"},
        {"deepseek-chat", "deepseek"},
        {"llama-3.1-8b", nullptr},
        {"", nullptr},
        {"xgpt-4", nullptr},
    };
    for (const auto &t : cases) {
        const Provider *p = c.match_model(t.model);
        if (t.provider == nullptr) {
            cr_assert_null(p, "%s", t.model);
        } else {
            cr_assert_not_null(p, "%s", t.model);
            cr_assert_eq(p->id, t.provider, "%s", t.model);
        }
    }
}

Test(catalog, glob) {
    cr_assert(glob_match("gpt-*", "gpt-4o"));
    cr_assert(glob_match("gpt-*", "gpt-"));
    cr_assert_not(glob_match("gpt-*", "gpt"));
    cr_assert(glob_match("o?-mini", "o3-mini"));
    cr_assert(glob_match("*", ""));
    cr_assert(glob_match("a*b*c", "aXXbYYbc"));
    cr_assert_not(glob_match("a*b*c", "aXXbYYb"));
    cr_assert(glob_match("exact", "exact"));
    cr_assert_not(glob_match("exact", "exact2"));
    cr_assert_not(glob_match("", "x"));
}

Test(catalog, yaml_defaults) {
    Catalog c = Catalog::parse_yaml(kMinimal, "p.yaml");
    const Provider &p = *c.find("local");
    cr_assert_eq(p.base_url.host, "10.0.0.5");
    cr_assert_eq(p.base_url.port, 8000);
    cr_assert_eq(p.base_url.path, "/v1");
    cr_assert(p.base_url.host_is_ip);
    cr_assert(same_url(p.openai_base, p.base_url));
    cr_assert_eq(p.auth, AuthStyle::Bearer);
    cr_assert(p.headers.empty());
    cr_assert(p.key_prefix.empty());
    cr_assert(p.test_path.empty());
    cr_assert(p.models.empty());
    cr_assert_not(p.per_key_endpoint);
}

Test(catalog, invalid_catalogs_name_file_provider_field) {
    struct {
        std::string text, err;
    } cases[] = {
        {with_field("auth: basic"),
         "p.yaml: provider 'local': field 'auth': expected one of bearer, x-api-key, "
         "x-goog-api-key, api-key"},
        {with_field("colour: blue"), "p.yaml: provider 'local': field 'colour': unknown field"},
        {with_field("models: gpt-*"),
         "p.yaml: provider 'local': field 'models': expected a list of glob patterns"},
        {with_field("per_key_endpoint: maybe"),
         "p.yaml: provider 'local': field 'per_key_endpoint': expected true or false"},
        {with_field("test: { method: GET }"),
         "p.yaml: provider 'local': field 'test.path': missing"},
        {with_field("test: { method: GET, path: /x, body: 1 }"),
         "p.yaml: provider 'local': field 'test.body': unknown field"},
        {with_field("openai_base: ftp://x"),
         "p.yaml: provider 'local': field 'openai_base': expected an absolute http(s) URL"},
        {with_field("openai_base: https://u:p@x/v1"),
         "p.yaml: provider 'local': field 'openai_base': URL must not contain userinfo"},
        {with_field("headers: { \"bad name\": x }"),
         "p.yaml: provider 'local': field 'headers': invalid header name 'bad name'"},
        {"providers:\n  local:\n    base_url: https://x\n",
         "p.yaml: provider 'local': field 'name': missing"},
        {"providers:\n  local:\n    name: L\n",
         "p.yaml: provider 'local': field 'base_url': missing"},
        {"providers:\n  Bad!:\n    name: L\n    base_url: https://x\n",
         "p.yaml: provider 'Bad!': id must match [a-z0-9][a-z0-9_-]{0,63}"},
        {"provider:\n  x: {}\n", "p.yaml: unknown top-level field 'provider'"},
        {"providers: {}\n", "p.yaml: no providers defined"},
        {"- a\n", "p.yaml: expected a mapping with 'providers'"},
    };
    for (const auto &t : cases) {
        std::string err = error_of([&] { Catalog::parse_yaml(t.text, "p.yaml"); });
        cr_assert_eq(err, t.err, "got: %s", err.c_str());
    }
    std::string syntax = error_of([] { Catalog::parse_yaml("providers: [", "p.yaml"); });
    cr_assert_eq(syntax.rfind("p.yaml: ", 0), 0u, "%s", syntax.c_str());
    std::string missing = error_of([] { Catalog::load_file("/tmp/byok-no-such-catalog.yaml"); });
    cr_assert_eq(missing, "/tmp/byok-no-such-catalog.yaml: cannot open provider catalog");
}

Test(catalog, parse_url) {
    Url u = parse_url("HTTPS://API.Example.com:8443/a/b/", "u");
    cr_assert_eq(u.scheme, "https");
    cr_assert_eq(u.host, "api.example.com");
    cr_assert_eq(u.port, 8443);
    cr_assert_eq(u.path, "/a/b");
    cr_assert_not(u.host_is_ip);
    cr_assert_eq(u.origin(), "https://api.example.com:8443");
    Url v6 = parse_url("http://[::1]:8080", "u");
    cr_assert_eq(v6.host, "::1");
    cr_assert(v6.host_is_ip);
    cr_assert_eq(v6.authority(), "[::1]:8080");
    Url d = parse_url("https://x.test", "u");
    cr_assert_eq(d.port, 443);
    cr_assert_eq(d.authority(), "x.test");
    for (const char *bad :
         {"x.test", "https://", "https://x?q=1", "https://x#f", "https://x:0", "https://x:99999",
          "https://x:", "https://[::1", "https://a b", "https://x/\r\n", "https://u@x"}) {
        cr_assert_neq(error_of([&] { parse_url(bad, "endpoint"); }), "<no error>", "%s", bad);
        cr_assert_eq(error_of([&] { parse_url(bad, "endpoint"); }).rfind("endpoint: ", 0), 0u);
    }
}

Test(catalog, key_format) {
    Catalog c = Catalog::builtin();
    const Provider &a = *c.find("anthropic");
    check_key_format(a, "sk-ant-abcdef1234567890");
    std::string secret = "sk-secretvalue123";
    std::string err = error_of([&] { check_key_format(a, secret); });
    cr_assert_eq(err,
                 "key for Anthropic must be 'sk-ant-' followed by at least 13 characters of "
                 "[A-Za-z0-9_-]");
    cr_assert_eq(error_of([&] { check_key_format(a, ""); }), "key is empty");
    cr_assert_eq(error_of([&] { check_key_format(a, "sk-ant-a b"); }),
                 "key must be printable ASCII without spaces");
    cr_assert_eq(error_of([&] { check_key_format(a, "sk-ant-a\n"); }),
                 "key must be printable ASCII without spaces");
    cr_assert_eq(error_of([&] { check_key_format(a, "sk-ant-" + std::string(600, 'x')); }),
                 "key is too long (at most 512 bytes)");
    check_key_format(*c.find("ollama"), "anything");
}

Test(catalog, i11_07_placeholder_and_short_keys_are_refused_naming_the_shape) {
    Catalog c = Catalog::builtin();
    const Provider &o = *c.find("openai");
    const std::string want =
        "key for OpenAI must be 'sk-' followed by at least 17 characters of [A-Za-z0-9_-]";
    for (const char *bad : {"sk-...", "sk-", "x", "s", "sk-abc", "sk-proj-....................",
                            "sk-1234567890123456\x21",
                            "sk-"
                            "\u00e9"
                            "1234567890123456789"}) {
        cr_assert_eq(error_of([&] { check_key_format(o, bad); }).rfind("key ", 0), 0u, "%s", bad);
    }
    for (const char *bad : {"sk-...", "sk-", "x", "sk-abc", "sk-1234567890123456!"}) {
        cr_assert_eq(error_of([&] { check_key_format(o, bad); }), want, "%s", bad);
    }
    check_key_format(o, "sk-proj-abcDEF_123-4567890");
    check_key_format(o, "sk-12345678901234567");  // exactly 20
    cr_assert_eq(error_of([&] { check_key_format(*c.find("custom"), "x"); }),
                 "key for Custom OpenAI-compatible endpoint must be at least 8 characters");
    for (const auto &p : c.providers()) {
        if (p.id == "ollama") continue;  // ollama ignores the key
        cr_assert_geq(p.key_min_length, 8u, "%s has no minimum", p.id.c_str());
        cr_assert_neq(error_of([&] { check_key_format(p, p.key_prefix + "..."); }), "",
                      "%s takes a placeholder", p.id.c_str());
    }
}

Test(catalog, i11_07_key_class_rule) {
    cr_assert(valid_key_pattern("[A-Za-z0-9_-]"));
    cr_assert(valid_key_pattern("[-a]"));
    for (const char *bad : {"", "[]", "A-Z", "[z-a]", "[a b]", "[a\\]", "[[a]"}) {
        cr_assert_not(valid_key_pattern(bad), "%s", bad);
    }
    for (char ch : std::string("aZ09_-")) cr_assert(in_key_class("[A-Za-z0-9_-]", ch));
    for (char ch : std::string(".!~ ")) cr_assert_not(in_key_class("[A-Za-z0-9_-]", ch));
    cr_assert(in_key_class("[-a]", '-'));
    cr_assert_not(in_key_class("[a-c]", 'd'));
}

Test(catalog, i11_07_yaml_key_shape_fields) {
    Catalog c = Catalog::parse_yaml(with_field("key_min_length: 24\n    key_pattern: \"[a-f0-9]\""),
                                    "p.yaml");
    const Provider &p = *c.find("local");
    cr_assert_eq(p.key_min_length, 24u);
    cr_assert_eq(p.key_pattern, "[a-f0-9]");
    cr_assert_eq(error_of([&] { check_key_format(p, "0123456789abcdef0123456g"); }),
                 "key for Local must be at least 24 characters of [a-f0-9]");
    cr_assert_eq(
        error_of([&] { Catalog::parse_yaml(with_field("key_min_length: many"), "p.yaml"); }),
        "p.yaml: provider 'local': field 'key_min_length': expected a number from 0 to 512");
    cr_assert_eq(
        error_of([&] { Catalog::parse_yaml(with_field("key_pattern: \"a*\""), "p.yaml"); }),
        "p.yaml: provider 'local': field 'key_pattern': expected a character class such "
        "as \"[A-Za-z0-9_-]\"");
    cr_assert_eq(Catalog::parse_yaml(kMinimal, "p.yaml").find("local")->key_min_length, 0u);
}

Test(catalog, i11_09_key_hint_is_ascii) {
    Catalog c = Catalog::builtin();
    cr_assert_eq(key_hint(*c.find("anthropic"), "sk-ant-api03-abcdefx9Qa"), "sk-ant-...x9Qa");
    cr_assert_eq(key_hint(*c.find("anthropic"), "sk-ant-1234567"), "sk-ant-...");
    cr_assert_eq(key_hint(*c.find("anthropic"), "sk-ant-12345678"), "sk-ant-...5678");
    cr_assert_eq(key_hint(*c.find("ollama"), "abcdefgh"), "...efgh");
    cr_assert_eq(key_hint(*c.find("ollama"), "abc"), "...");
}

Test(catalog, i11_09_stored_unicode_hint_becomes_ascii) {
    cr_assert_eq(ascii_key_hint("sk-\u2026x9Qa"), "sk-...x9Qa");
    cr_assert_eq(ascii_key_hint("\u2026\u2026"), "......");
    cr_assert_eq(ascii_key_hint("sk-...x9Qa"), "sk-...x9Qa");
    cr_assert_eq(ascii_key_hint(""), "");
}

Test(catalog, upstream_headers) {
    Catalog c = Catalog::builtin();
    auto o = upstream_headers(*c.find("openai"), "sk-k");
    cr_assert_eq(o.size(), 1u);
    cr_assert_eq(o[0].name, "Authorization");
    cr_assert_eq(o[0].value, "Bearer sk-k");
    auto a = upstream_headers(*c.find("anthropic"), "sk-ant-k");
    cr_assert_eq(a.size(), 2u);
    cr_assert_eq(a[0].name, "x-api-key");
    cr_assert_eq(a[0].value, "sk-ant-k");
    cr_assert_eq(a[1].name, "anthropic-version");
    cr_assert_eq(a[1].value, "2023-06-01");
    auto g = upstream_headers(*c.find("google"), "AIzak");
    cr_assert_eq(g[0].name, "x-goog-api-key");
    cr_assert_eq(g[0].value, "AIzak");
    Catalog y = Catalog::parse_yaml(
        with_field("auth: api-key\n    headers: { x-a: \"1\", x-b: \"2\" }"), "p.yaml");
    auto h = upstream_headers(*y.find("local"), "k");
    cr_assert_eq(h.size(), 3u);
    cr_assert_eq(h[0].name, "api-key");
    cr_assert_eq(h[0].value, "k");
    cr_assert_eq(h[1].name, "x-a");
    cr_assert_eq(h[2].name, "x-b");
    cr_assert_eq(auth_style_name(AuthStyle::XGoogApiKey), "x-goog-api-key");
}

Test(catalog, i10_06_shipped_ollama_is_local_and_off_until_allowed) {
    Catalog c = Catalog::builtin();
    const Provider *o = c.find("ollama");
    cr_assert(o->local && !o->enabled);
    cr_assert(!Catalog::load_file("conf/providers.yaml").find("ollama")->enabled);
    for (const auto &p : c.providers())
        if (p.id != "ollama") cr_assert(p.enabled && !p.local, "%s", p.id.c_str());
    c.allow_local([](std::string_view h) { return h == "10.9.9.9"; });
    cr_assert(!c.find("ollama")->enabled);
    c.allow_local([](std::string_view h) { return h == "127.0.0.1"; });
    cr_assert(c.find("ollama")->enabled);
    // An operator's own entry without `local` is trusted as written.
    Catalog own = Catalog::parse_yaml(std::string(kMinimal), "own.yaml");
    cr_assert(own.find("local")->enabled);
    cr_assert(!Catalog::parse_yaml(with_field("local: true"), "own.yaml").find("local")->enabled);
    cr_assert_eq(error_of([] { Catalog::parse_yaml(with_field("local: maybe"), "x.yaml"); }),
                 "x.yaml: provider 'local': field 'local': expected true or false");
}

Test(catalog, i13_pricing_parses_exactly_and_first_glob_wins) {
    Catalog c = Catalog::parse_yaml(
        with_field("pricing: { \"m-mini*\": { input: 0.15, output: 0.60, cached_input: 0.075 },"
                   " \"m-*\": { input: 2.5, output: 10 } }"),
        "p.yaml");
    const Provider &p = c.providers()[0];
    const ModelPrice *mini = p.price("m-mini-2024");
    cr_assert(mini != nullptr);
    cr_assert_eq(mini->input, 150000);
    cr_assert_eq(mini->output, 600000);
    cr_assert_eq(mini->cached_input, 75000);
    const ModelPrice *big = p.price("m-large");
    cr_assert(big != nullptr);
    cr_assert_eq(big->cached_input, big->input);  // defaults to input
    cr_assert_eq(big->output, 10000000);
    cr_assert(p.price("other") == nullptr);
    cr_assert_eq(format_price(75000), "0.075");
    cr_assert_eq(format_price(10000000), "10");
    cr_assert(Catalog::builtin().find("openai")->price("gpt-4o-mini") != nullptr);
}

Test(catalog, i13_pricing_errors_name_the_field) {
    struct Row {
        const char *field, *want;
    } rows[] = {
        {"pricing: { m: { input: 0.1234567, output: 1 } }",
         "p.yaml: provider 'local': field 'pricing.m.input': price '0.1234567' has over 6 "
         "decimals"},
        {"pricing: { m: { input: 1 } }",
         "p.yaml: provider 'local': field 'pricing.m': needs input and output"},
        {"pricing: { m: { input: 1, output: 1, x: 1 } }",
         "p.yaml: provider 'local': field 'pricing.m.x': unknown field"},
    };
    for (const Row &row : rows) {
        std::string err = error_of([&] { Catalog::parse_yaml(with_field(row.field), "p.yaml"); });
        cr_assert_eq(err, std::string(row.want), "%s", err.c_str());
    }
}

// Issue 17 item 2: the native root is the base URL of each provider's own
// SDK, so `<gateway>/<id>` is the SDK's base URL with nothing else changed.
Test(catalog, i17_02_native_roots_are_the_official_sdk_base_urls) {
    Catalog c = Catalog::builtin();
    struct Row {
        const char *id, *native, *unified;
    } rows[] = {
        {"openai", "https://api.openai.com/v1", "https://api.openai.com/v1"},
        {"anthropic", "https://api.anthropic.com", "https://api.anthropic.com/v1"},
        {"google", "https://generativelanguage.googleapis.com",
         "https://generativelanguage.googleapis.com/v1beta/openai"},
        {"groq", "https://api.groq.com", "https://api.groq.com/openai/v1"},
        {"mistral", "https://api.mistral.ai", "https://api.mistral.ai/v1"},
        {"together", "https://api.together.xyz/v1", "https://api.together.xyz/v1"},
        {"perplexity", "https://api.perplexity.ai", "https://api.perplexity.ai"},
        {"cohere", "https://api.cohere.com", "https://api.cohere.ai/compatibility/v1"},
        {"deepseek", "https://api.deepseek.com", "https://api.deepseek.com/v1"},
        {"openrouter", "https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1"},
    };
    for (const Row &row : rows) {
        const Provider &p = *c.find(row.id);
        cr_assert_eq(p.base_url.origin() + p.base_url.path, row.native, "%s", row.id);
        cr_assert_eq(p.openai_base.origin() + p.openai_base.path, row.unified, "%s", row.id);
    }
}

// Issue 17 item 6: the catalog's fixed headers are defaults the client may
// override (anthropic-version, anthropic-beta); the auth header is not.
Test(catalog, i17_06_fixed_headers_are_defaults_auth_is_not) {
    Catalog c = Catalog::builtin();
    auto a = upstream_headers(*c.find("anthropic"), "sk-ant-k");
    cr_assert_eq(a[0].name, "x-api-key");
    cr_assert_not(a[0].default_only);
    cr_assert_eq(a[1].name, "anthropic-version");
    cr_assert(a[1].default_only);
}

// Issue 18: the hit path's header views point into the provider and the key
// (no copies) and spell the same headers as upstream_headers.
Test(catalog, i18_upstream_header_refs_are_views_of_the_same_headers) {
    Catalog c = Catalog::builtin();
    std::string key = "sk-ant-key-0001";
    for (const char *id : {"openai", "anthropic", "google"}) {
        const Provider &p = *c.find(id);
        UpstreamHeaders refs = upstream_header_refs(p, key);
        cr_assert_eq(refs.auth.value.data(), key.data(), "%s: the key is not copied", id);
        cr_assert_not(refs.auth.default_only);
        std::vector<Header> copies = upstream_headers(p, key);
        size_t i = 0;
        refs.each([&](const HeaderRef &h) {
            cr_assert_lt(i, copies.size());
            cr_assert_eq(std::string(h.name), copies[i].name);
            cr_assert_eq(std::string(h.prefix) + std::string(h.value), copies[i].value);
            cr_assert_eq(h.default_only, copies[i].default_only);
            if (i > 0) cr_assert_eq(h.value.data(), p.headers[i - 1].second.data());
            ++i;
        });
        cr_assert_eq(i, copies.size(), "%s", id);
    }
}
