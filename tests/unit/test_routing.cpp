#include <criterion/criterion.h>

#include <string>
#include <vector>

#include "lib/routing.h"

using namespace byok;

// Decision tables leave trailing expectation fields at their defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace {

const Catalog &catalog() {
    static const Catalog c = Catalog::builtin();
    return c;
}

using Keys = KeyStateRows;  // views of string literals
using Ids = ProviderIds;

constexpr KeyState U = KeyState::Usable;
constexpr KeyState I = KeyState::Inactive;
constexpr KeyState D = KeyState::DecryptError;

struct Req {
    Tier tier = Tier::Pro;
    Policy policy = Policy::Auto;
    Keys keys;
    Ids system = {"openrouter"};
    std::string fallback = "openrouter";
    std::string native, header, model;
};

struct Want {
    Route route;
    std::string provider, target, reason, model;
    bool changed = false;
    int status = 0;
    std::string code;
};

struct Case {
    const char *name;
    Req req;
    Want want;
};

RouteInput input(const Req &r) {
    RouteInput in;
    in.catalog = &catalog();
    in.tier = r.tier;
    in.policy = r.policy;
    in.project_keys = r.keys;
    in.system_keys = r.system;
    in.fallback_provider = r.fallback;
    in.native_provider = r.native;
    in.header_provider = r.header;
    in.model = r.model;
    return in;
}

void check(const char *name, const RouteDecision &d, const Want &w) {
    cr_assert_eq(route_name(d.route), route_name(w.route), "%s: route", name);
    if (w.route == Route::Denied) {
        cr_assert_eq(d.status, w.status, "%s: status %d", name, d.status);
        cr_assert_eq(d.error_code, w.code, "%s: code %s", name, d.error_code.c_str());
        cr_assert_not(d.error_message.empty(), "%s: message", name);
        return;
    }
    cr_assert_not_null(d.provider, "%s", name);
    cr_assert_not_null(d.target, "%s", name);
    cr_assert_eq(d.provider->id, w.provider, "%s: provider %s", name, d.provider->id.c_str());
    cr_assert_eq(d.target->id, w.target, "%s: target %s", name, d.target->id.c_str());
    cr_assert_eq(d.reason, w.reason, "%s: reason '%s'", name, d.reason.c_str());
    cr_assert_eq(d.model, w.model, "%s: model '%s'", name, d.model.c_str());
    cr_assert_eq(d.model_changed, w.changed, "%s: model_changed", name);
    cr_assert_eq(d.status, 0, "%s", name);
}

Req req(std::string model, Keys keys = {}) {
    Req r;
    r.model = std::move(model);
    r.keys = std::move(keys);
    return r;
}

template <class F>
Req with(Req r, F f) {
    f(r);
    return r;
}

const Route BY = Route::Byok, SY = Route::System, FB = Route::Fallback, DN = Route::Denied;

}  // namespace

Test(routing, decision_table) {
    const Case cases[] = {
        // --- provider resolution
        {"glob -> byok", req("gpt-4o", {{"openai", U}}), {BY, "openai", "openai", "", "gpt-4o"}},
        {"glob anthropic",
         req("claude-3-5-sonnet", {{"anthropic", U}}),
         {BY, "anthropic", "anthropic", "", "claude-3-5-sonnet"}},
        {"prefix stripped going direct",
         req("openai/gpt-4o", {{"openai", U}}),
         {BY, "openai", "openai", "", "gpt-4o", true}},
        {"prefix beats glob",
         req("groq/gpt-oss-20b", {{"groq", U}}),
         {BY, "groq", "groq", "", "gpt-oss-20b", true}},
        {"header beats glob",
         with(req("gpt-4o", {{"groq", U}}), [](Req &r) { r.header = "groq"; }),
         {BY, "groq", "groq", "", "gpt-4o"}},
        {"header strips own prefix",
         with(req("openai/gpt-4o", {{"openai", U}}), [](Req &r) { r.header = "openai"; }),
         {BY, "openai", "openai", "", "gpt-4o", true}},
        {"header keeps other prefix",
         with(req("openai/gpt-4o", {{"openrouter", U}}), [](Req &r) { r.header = "openrouter"; }),
         {BY, "openrouter", "openrouter", "", "openai/gpt-4o"}},
        {"unknown header",
         with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.header = "nope"; }),
         {DN, "", "", "", "", false, 400, "unknown_provider"}},
        {"unresolved -> fallback provider system",
         req("meta-llama/llama-3-70b"),
         {SY, "openrouter", "openrouter", "no_key", "meta-llama/llama-3-70b"}},
        {"unresolved -> fallback provider byok",
         req("llama-3-70b", {{"openrouter", U}}),
         {BY, "openrouter", "openrouter", "", "llama-3-70b"}},
        {"unresolved, no fallback",
         with(req("llama-3-70b"), [](Req &r) { r.fallback = ""; }),
         {DN, "", "", "", "", false, 400, "unknown_model"}},
        {"unresolved, fallback without system key",
         with(req("llama-3-70b"), [](Req &r) { r.system = {}; }),
         {DN, "", "", "", "", false, 403, "no_credential"}},
        {"no model, no header -> fallback provider",
         req(""),
         {SY, "openrouter", "openrouter", "no_key", ""}},
        {"no model, header, no key -> fallback",
         with(req(""), [](Req &r) { r.header = "openai"; }),
         {FB, "openai", "openrouter", "no_key", ""}},
        // --- credential choice
        {"no key -> fallback renamed",
         req("gpt-4o"),
         {FB, "openai", "openrouter", "no_key", "openai/gpt-4o", true}},
        {"prefixed model kept on fallback",
         req("openai/gpt-4o"),
         {FB, "openai", "openrouter", "no_key", "openai/gpt-4o"}},
        {"tier free -> fallback",
         with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.tier = Tier::Free; }),
         {FB, "openai", "openrouter", "tier", "openai/gpt-4o", true}},
        {"tier starter is enough",
         with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.tier = Tier::Starter; }),
         {BY, "openai", "openai", "", "gpt-4o"}},
        {"inactive -> fallback",
         req("gpt-4o", {{"openai", I}}),
         {FB, "openai", "openrouter", "inactive", "openai/gpt-4o", true}},
        {"decrypt_error auto -> fallback",
         req("gpt-4o", {{"openai", D}}),
         {FB, "openai", "openrouter", "decrypt_error", "openai/gpt-4o", true}},
        {"decrypt_error no_key -> 502",
         with(req("gpt-4o", {{"openai", D}}), [](Req &r) { r.policy = Policy::NoKey; }),
         {DN, "", "", "", "", false, 422, "key_unavailable"}},
        {"decrypt_error no_key ignores system key",
         with(req("gpt-4o", {{"openai", D}}),
              [](Req &r) {
                  r.policy = Policy::NoKey;
                  r.system = {"openai", "openrouter"};
              }),
         {DN, "", "", "", "", false, 422, "key_unavailable"}},
        {"no_key policy, no key -> fallback",
         with(req("gpt-4o"), [](Req &r) { r.policy = Policy::NoKey; }),
         {FB, "openai", "openrouter", "no_key", "openai/gpt-4o", true}},
        {"no_key policy, inactive -> fallback",
         with(req("gpt-4o", {{"openai", I}}), [](Req &r) { r.policy = Policy::NoKey; }),
         {FB, "openai", "openrouter", "inactive", "openai/gpt-4o", true}},
        {"off, no key -> 403 even with operator keys",
         with(req("gpt-4o"),
              [](Req &r) {
                  r.policy = Policy::Off;
                  r.system = {"openai", "openrouter"};
              }),
         {DN, "", "", "", "", false, 403, "byok_denied"}},
        {"off, decrypt_error -> 403",
         with(req("gpt-4o", {{"openai", D}}), [](Req &r) { r.policy = Policy::Off; }),
         {DN, "", "", "", "", false, 403, "byok_denied"}},
        {"off, usable key -> byok",
         with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.policy = Policy::Off; }),
         {BY, "openai", "openai", "", "gpt-4o"}},
        {"off, unresolved model -> 403",
         with(req("llama-3"), [](Req &r) { r.policy = Policy::Off; }),
         {DN, "", "", "", "", false, 403, "byok_denied"}},
        {"system key for P",
         with(req("gpt-4o"),
              [](Req &r) {
                  r.system = {"openai", "openrouter"};
              }),
         {SY, "openai", "openai", "no_key", "gpt-4o"}},
        {"system key for P, tier free",
         with(req("gpt-4o", {{"openai", U}}),
              [](Req &r) {
                  r.tier = Tier::Free;
                  r.system = {"openai"};
              }),
         {SY, "openai", "openai", "tier", "gpt-4o"}},
        {"system key, prefixed model stripped",
         with(req("openai/gpt-4o"), [](Req &r) { r.system = {"openai"}; }),
         {SY, "openai", "openai", "no_key", "gpt-4o", true}},
        {"fallback off -> 502",
         with(req("gpt-4o"), [](Req &r) { r.fallback = ""; }),
         {DN, "", "", "", "", false, 403, "no_credential"}},
        {"fallback without system key -> 502",
         with(req("gpt-4o"), [](Req &r) { r.system = {}; }),
         {DN, "", "", "", "", false, 403, "no_credential"}},
        {"fallback provider not openrouter",
         with(req("gpt-4o"),
              [](Req &r) {
                  r.fallback = "groq";
                  r.system = {"groq"};
              }),
         {FB, "openai", "groq", "no_key", "openai/gpt-4o", true}},
        {"project key for fallback provider does not pay for fallback",
         with(req("gpt-4o", {{"openrouter", U}}), [](Req &r) { r.system = {}; }),
         {DN, "", "", "", "", false, 403, "no_credential"}},
        // --- native passthrough
        {"native byok",
         with(req("claude-x", {{"anthropic", U}}), [](Req &r) { r.native = "anthropic"; }),
         {BY, "anthropic", "anthropic", "", "claude-x"}},
        {"native ignores header and globs",
         with(req("claude-x", {{"openai", U}}),
              [](Req &r) {
                  r.native = "openai";
                  r.header = "anthropic";
              }),
         {BY, "openai", "openai", "", "claude-x"}},
        {"native keeps prefixed model",
         with(req("openai/gpt-4o", {{"openai", U}}), [](Req &r) { r.native = "openai"; }),
         {BY, "openai", "openai", "", "openai/gpt-4o"}},
        {"native unknown -> 404",
         with(req(""), [](Req &r) { r.native = "nope"; }),
         {DN, "", "", "", "", false, 404, "unknown_provider"}},
        {"native, no key, system key for P",
         with(req(""),
              [](Req &r) {
                  r.native = "anthropic";
                  r.system = {"anthropic"};
              }),
         {SY, "anthropic", "anthropic", "no_key", ""}},
        {"native never falls back",
         with(req("claude-x"), [](Req &r) { r.native = "anthropic"; }),
         {DN, "", "", "", "", false, 403, "no_credential"}},
        {"native off -> 403",
         with(req(""),
              [](Req &r) {
                  r.native = "anthropic";
                  r.policy = Policy::Off;
              }),
         {DN, "", "", "", "", false, 403, "byok_denied"}},
    };
    for (const auto &c : cases) check(c.name, decide_route(input(c.req)), c.want);
}

Test(routing, denied_messages_are_clear) {
    Req r = req("gpt-4o");
    r.policy = Policy::Off;
    RouteDecision d = decide_route(input(r));
    cr_assert(d.error_message.find("openai") != std::string::npos, "%s", d.error_message.c_str());
    cr_assert(d.error_message.find("off") != std::string::npos, "%s", d.error_message.c_str());
    r = req("llama-3");
    r.fallback = "";
    d = decide_route(input(r));
    cr_assert(d.error_message.find("llama-3") != std::string::npos, "%s", d.error_message.c_str());
    r = req("gpt-4o", {{"openai", U}});
    r.tier = Tier::Free;
    r.system = {};
    d = decide_route(input(r));
    cr_assert(d.error_message.find("starter tier") != std::string::npos, "%s",
              d.error_message.c_str());
}

Test(routing, retry_table) {
    struct RetryCase {
        const char *name;
        Req req;
        bool expect;
        Want want;
    };
    const RetryCase cases[] = {
        {"byok 429 -> fallback",
         req("gpt-4o", {{"openai", U}}),
         true,
         {FB, "openai", "openrouter", "upstream_429", "openai/gpt-4o", true}},
        {"prefixed model stays as sent",
         req("openai/gpt-4o", {{"openai", U}}),
         true,
         {FB, "openai", "openrouter", "upstream_429", "openai/gpt-4o", false}},
        {"system -> fallback",
         with(req("gpt-4o"),
              [](Req &r) {
                  r.system = {"openai", "openrouter"};
              }),
         true,
         {FB, "openai", "openrouter", "upstream_429", "openai/gpt-4o", true}},
        {"no_key policy: no retry",
         with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.policy = Policy::NoKey; }),
         false,
         {}},
        {"off policy: no retry",
         with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.policy = Policy::Off; }),
         false,
         {}},
        {"native: no retry",
         with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.native = "openai"; }),
         false,
         {}},
        {"already fallback: no retry", req("gpt-4o"), false, {}},
        {"target is the fallback provider: no retry",
         req("llama-3", {{"openrouter", U}}),
         false,
         {}},
        {"fallback without system key: no retry",
         with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.system = {}; }),
         false,
         {}},
        {"fallback off: no retry",
         with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.fallback = ""; }),
         false,
         {}},
    };
    for (const auto &c : cases) {
        RouteInput in = input(c.req);
        RouteDecision first = decide_route(in);
        auto retry = decide_retry(in, first, "upstream_429");
        cr_assert_eq(retry.has_value(), c.expect, "%s (first route %s)", c.name,
                     std::string(route_name(first.route)).c_str());
        if (c.expect) check(c.name, *retry, c.want);
    }
    Req denied = req("gpt-4o");
    denied.fallback = "";
    RouteInput in = input(denied);
    cr_assert_not(decide_retry(in, decide_route(in), "upstream_error").has_value());
}

Test(routing, route_names) {
    cr_assert_eq(route_name(Route::Byok), "byok");
    cr_assert_eq(route_name(Route::System), "system");
    cr_assert_eq(route_name(Route::Fallback), "fallback");
    cr_assert_eq(route_name(Route::Denied), "denied");
}

Test(routing, i10_06_local_provider_not_allowed_is_refused_everywhere) {
    Catalog cat = Catalog::builtin();  // ollama: local, off until allowed
    for (const char *how : {"native", "header", "prefix"}) {
        RouteInput in;
        in.catalog = &cat;
        in.tier = Tier::Pro;
        in.project_keys = {{"ollama", KeyState::Usable}};
        in.system_keys = {"openrouter"};
        in.fallback_provider = "openrouter";
        std::string_view h(how);
        if (h == "native") in.native_provider = "ollama";
        if (h == "header") in.header_provider = "ollama";
        in.model = h == "prefix" ? "ollama/llama3" : "llama3";
        RouteDecision d = decide_route(in);
        cr_assert_eq(route_name(d.route), "denied", "%s", how);
        cr_assert_eq(d.status, 403, "%s", how);
        cr_assert_eq(d.error_code, "provider_not_allowed", "%s", how);
    }
    cat.allow_local([](std::string_view host) { return host == "127.0.0.1"; });
    RouteInput in;
    in.catalog = &cat;
    in.tier = Tier::Pro;
    in.project_keys = {{"ollama", KeyState::Usable}};
    in.native_provider = "ollama";
    cr_assert_eq(route_name(decide_route(in).route), "byok");
}

// Issue 17 item 7: a client that retries by itself gets no fallback retry
// on top, and a project can keep its provider's 429 (and Retry-After).
Test(routing, i17_07_retry_on_client_retrying_and_rate_limit_setting) {
    struct RetryCase {
        const char *name;
        bool client_retrying, fallback_on_rate_limit;
        RetryOn want;
        bool retry_429, retry_5xx;  // decide_retry for upstream_429 / upstream_503
    } cases[] = {
        {"defaults: 429 and 5xx fall back", false, true, RetryOn::ServerErrorsAnd429, true, true},
        {"client retrying: nothing", true, true, RetryOn::Nothing, false, false},
        {"client retrying, 429 off: nothing", true, false, RetryOn::Nothing, false, false},
        {"429 off: 5xx only", false, false, RetryOn::ServerErrors, false, true},
    };
    for (const auto &c : cases) {
        Req r = req("gpt-4o", {{"openai", U}});  // RouteInput holds views into it
        RouteInput in = input(r);
        in.client_retrying = c.client_retrying;
        in.fallback_on_rate_limit = c.fallback_on_rate_limit;
        RouteDecision first = decide_route(in);
        cr_assert_eq(route_name(first.route), "byok", "%s", c.name);
        cr_assert_eq(static_cast<int>(retry_on(in, first)), static_cast<int>(c.want), "%s", c.name);
        cr_assert_eq(decide_retry(in, first, "upstream_429").has_value(), c.retry_429, "%s",
                     c.name);
        cr_assert_eq(decide_retry(in, first, "upstream_503").has_value(), c.retry_5xx, "%s",
                     c.name);
    }
    Req native_req = with(req("gpt-4o", {{"openai", U}}), [](Req &r) { r.native = "openai"; });
    RouteInput native = input(native_req);
    cr_assert_eq(static_cast<int>(retry_on(native, decide_route(native))),
                 static_cast<int>(RetryOn::Nothing));
}

// Issue 17 item 4: a bodiless /v1 request (GET /v1/models) goes to the
// project's default_provider, else the first catalog provider it has a
// usable key for, else the usual rules — not to the operator's fallback.
Test(routing, i17_04_bodiless_requests_go_to_the_projects_provider) {
    struct BodilessCase {
        const char *name;
        Keys keys;
        const char *default_provider, *header;
        bool bodiless;
        const char *route, *provider;
    } cases[] = {
        {"first keyed provider in catalog order",
         {{"google", U}, {"anthropic", U}},
         "",
         "",
         true,
         "byok",
         "anthropic"},
        {"default_provider setting wins",
         {{"anthropic", U}},
         "google",
         "",
         true,
         "system",
         "google"},
        {"inactive key is skipped",
         {{"anthropic", I}, {"google", U}},
         "",
         "",
         true,
         "byok",
         "google"},
        {"no key: the fallback provider as before", {}, "", "", true, "system", "openrouter"},
        {"unknown setting: first keyed provider",
         {{"google", U}},
         "nosuch",
         "",
         true,
         "byok",
         "google"},
        {"x-byok-provider still wins",
         {{"anthropic", U}},
         "google",
         "openai",
         true,
         "system",
         "openai"},
        {"a body without model: unchanged",
         {{"anthropic", U}},
         "",
         "",
         false,
         "system",
         "openrouter"},
    };
    for (const auto &c : cases) {
        Req r = req("", c.keys);
        r.system = {"openrouter", "openai", "google"};
        r.header = c.header;
        RouteInput in = input(r);
        in.bodiless = c.bodiless;
        in.default_provider = c.default_provider;
        RouteDecision d = decide_route(in);
        cr_assert_eq(route_name(d.route), c.route, "%s: route %s", c.name,
                     std::string(route_name(d.route)).c_str());
        cr_assert_eq(d.provider->id, c.provider, "%s: provider %s", c.name, d.provider->id.c_str());
        cr_assert_not(d.model_changed, "%s", c.name);
    }
}

Test(routing, i11_08_models_list_without_a_route_lists_the_project_providers) {
    Req r;
    r.fallback = "";
    r.system = {};
    r.keys = {{"openai", U}, {"anthropic", I}, {"mistral", U}};
    RouteInput in = input(r);
    RouteDecision d = decide_route(in);
    cr_assert_eq(d.route, Route::Denied);
    auto body = models_list_answer(in, d, "GET", "/models");
    cr_assert(body.has_value());
    cr_assert(body->find(R"({"data":[{"id":"gpt-*","object":"model","owned_by":"openai"},)") == 0,
              "%s", body->c_str());
    cr_assert(body->find(R"({"id":"mistral-*","object":"model","owned_by":"mistral"})") !=
              std::string::npos);
    cr_assert(body->find("claude") == std::string::npos);  // inactive key
    cr_assert(body->find(R"("object":"list")") != std::string::npos);
    cr_assert(models_list_answer(in, d, "GET", "/models?x=1").has_value());
    cr_assert_not(models_list_answer(in, d, "POST", "/models").has_value());
    cr_assert_not(models_list_answer(in, d, "GET", "/chat/completions").has_value());
    // Free tier: BYOK keys are not usable, so none are listed.
    r.tier = Tier::Free;
    RouteInput free_in = input(r);
    cr_assert_eq(*models_list_answer(free_in, decide_route(free_in), "GET", "/models"),
                 R"({"data":[],"object":"list"})");
    // With a fallback the request is routed: no local answer.
    Req fb;
    fb.keys = {{"openai", U}};
    RouteInput fb_in = input(fb);
    cr_assert_not(models_list_answer(fb_in, decide_route(fb_in), "GET", "/models").has_value());
}
