#include "lib/routing.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace byok {

std::string_view route_name(Route r) {
    switch (r) {
        case Route::Byok:
            return "byok";
        case Route::System:
            return "system";
        case Route::Fallback:
            return "fallback";
        case Route::Denied:
            return "denied";
    }
    return "denied";
}

namespace {

// How the requested provider was found; decides how the model is rewritten.
struct Resolution {
    const Provider *provider = nullptr;
    std::string_view direct_model;  // model when calling `provider` itself (a view of in.model)
};

RouteDecision denied(int status, std::string code, std::string message) {
    RouteDecision d;
    d.route = Route::Denied;
    d.status = status;
    d.error_code = std::move(code);
    d.error_message = std::move(message);
    return d;
}

bool has_system_key(const RouteInput &in, std::string_view id) {
    return std::find(in.system_keys.begin(), in.system_keys.end(), id) != in.system_keys.end();
}

const KeyState *project_key(const RouteInput &in, std::string_view id) {
    for (const auto &k : in.project_keys) {
        if (k.first == id) return &k.second;
    }
    return nullptr;
}

// Model names appear in error messages; keep them short.
std::string quoted(std::string_view s) {
    if (s.size() > 100) return "'" + std::string(s.substr(0, 100)) + "...'";
    return "'" + std::string(s) + "'";
}

// The model as the fallback provider expects it: "<P>/<model>" unless the
// client already used the provider/model form.
std::string fallback_model(const Provider &p, std::string_view model) {
    if (model.empty() || model.find('/') != std::string_view::npos) return std::string(model);
    return p.id + "/" + std::string(model);
}

// Fallback provider usable for a request whose requested provider is `p_id`.
const Provider *usable_fallback(const RouteInput &in, std::string_view p_id) {
    if (in.fallback_provider.empty() || !in.native_provider.empty()) return nullptr;
    if (in.fallback_provider == p_id || !has_system_key(in, in.fallback_provider)) return nullptr;
    const Provider *f = in.catalog->find(in.fallback_provider);
    return f != nullptr && f->enabled ? f : nullptr;
}

void set_model(RouteDecision &d, const RouteInput &in, std::string_view model) {
    d.model_changed = model != in.model;
    d.model = model;
}

// The provider of a bodiless /v1 request, or null for the usual rules.
const Provider *default_provider(const RouteInput &in) {
    if (!in.default_provider.empty()) {
        const Provider *p = in.catalog->find(in.default_provider);
        if (p != nullptr) return p;
    }
    for (const Provider &p : in.catalog->providers()) {
        const KeyState *state = project_key(in, p.id);
        if (state != nullptr && *state == KeyState::Usable && p.enabled) return &p;
    }
    return nullptr;
}

// Returns a Denied decision in `out` when resolution itself fails.
bool resolve_provider(const RouteInput &in, Resolution &res, RouteDecision &out) {
    const Catalog &cat = *in.catalog;
    std::string_view model = in.model;
    res.direct_model = model;

    // Native passthrough: the path names the provider and the API shape;
    // nothing in the request can redirect it elsewhere.
    if (!in.native_provider.empty()) {
        res.provider = cat.find(in.native_provider);
        if (res.provider == nullptr) {
            out = denied(404, "unknown_provider", "unknown provider " + quoted(in.native_provider));
            return false;
        }
        return true;
    }
    if (in.bodiless && in.header_provider.empty() && model.empty()) {
        res.provider = default_provider(in);
        if (res.provider != nullptr) return true;
    }
    size_t slash = model.find('/');
    if (!in.header_provider.empty()) {
        res.provider = cat.find(in.header_provider);
        if (res.provider == nullptr) {
            out = denied(400, "unknown_provider",
                         "unknown provider " + quoted(in.header_provider) + " in x-byok-provider");
            return false;
        }
        // A redundant "<same id>/" prefix is stripped as in rule 2.
        if (slash != std::string_view::npos && model.substr(0, slash) == res.provider->id) {
            res.direct_model = model.substr(slash + 1);
        }
        return true;
    }
    if (slash != std::string_view::npos) {
        const Provider *p = cat.find(model.substr(0, slash));
        if (p != nullptr) {
            res.provider = p;
            res.direct_model = model.substr(slash + 1);
            return true;
        }
    }
    res.provider = cat.match_model(model);
    if (res.provider != nullptr) return true;

    res.provider = in.fallback_provider.empty() ? nullptr : cat.find(in.fallback_provider);
    if (res.provider == nullptr) {
        out = denied(400, "unknown_model",
                     model.empty() ? "no model given and no x-byok-provider header"
                                   : "no provider serves model " + quoted(model) +
                                         "; use \"<provider>/<model>\" or x-byok-provider");
        return false;
    }
    return true;
}

// Every key of `p` is unhealthy and the policy forbids other money: 429
// naming the soonest retry when a key comes back on its own, else 503.
RouteDecision keys_unhealthy(const RouteInput &in, const Provider &p) {
    int64_t retry = 0;
    for (const auto &[id, s] : in.keys_retry_in_s)
        if (id == p.id) retry = s;
    if (retry <= 0)
        return denied(503, "keys_unavailable",
                      "every " + p.id +
                          " key of the project was refused by the provider; "
                          "replace or re-test them");
    RouteDecision d = denied(429, "keys_unavailable",
                             "every " + p.id + " key of the project is cooling down; retry in " +
                                 std::to_string(retry) + " s");
    d.retry_after_s = retry;
    return d;
}

}  // namespace

RouteDecision decide_route(const RouteInput &in) {
    if (in.catalog == nullptr) throw Error("decide_route: no catalog");
    Resolution res;
    RouteDecision d;
    if (!resolve_provider(in, res, d)) return d;
    const Provider &p = *res.provider;
    // A local provider the operator did not enable is refused outright (no
    // fallback either: the client named something that is off here).
    if (!p.enabled) return denied(403, "provider_not_allowed", provider_not_allowed_message(p));

    const KeyState *state = project_key(in, p.id);
    if (state != nullptr && *state == KeyState::Usable && byok_allowed(in.tier)) {
        d.route = Route::Byok;
        d.provider = d.target = &p;
        set_model(d, in, res.direct_model);
        return d;
    }
    std::string reason = state == nullptr                ? "no_key"
                         : !byok_allowed(in.tier)        ? "tier"
                         : *state == KeyState::Inactive  ? "inactive"
                         : *state == KeyState::Expired   ? "expired"
                         : *state == KeyState::Unhealthy ? "key_unhealthy"
                                                         : "decrypt_error";
    if (reason == "key_unhealthy" && in.policy == Policy::Off) return keys_unhealthy(in, p);
    if (in.policy == Policy::Off) {
        return denied(403, "byok_denied",
                      "project has no usable " + p.id + " key (" + reason +
                          ") and its fallback policy is off");
    }
    if (reason == "decrypt_error" && in.policy == Policy::NoKey) {
        return denied(422, "key_unavailable",
                      "the project's " + p.id +
                          " key cannot be decrypted; fix or replace it (fallback policy "
                          "no_key does not cover this)");
    }
    if (has_system_key(in, p.id)) {
        d.route = Route::System;
        d.provider = d.target = &p;
        d.reason = reason;
        set_model(d, in, res.direct_model);
        return d;
    }
    if (const Provider *f = usable_fallback(in, p.id)) {
        d.route = Route::Fallback;
        d.provider = &p;
        d.target = f;
        d.reason = reason;
        set_model(d, in, fallback_model(p, in.model));
        return d;
    }
    std::string why = reason == "tier" ? std::string(kByokTierMessage)
                                       : "project has no usable " + p.id + " key (" + reason + ")";
    return denied(403, "no_credential", why + " and no operator key is available for " + p.id);
}

namespace {

// The provider a retry after `first` calls, or null when there is none
// (decide_retry's rules). `rate_limited`: the failure was the provider's 429.
// issue 18: retry_on asks this on every proxied request; it builds no
// decision (no reason or model string).
const Provider *retry_target(const RouteInput &in, const RouteDecision &first, bool rate_limited) {
    if (in.catalog == nullptr || in.policy != Policy::Auto || !in.native_provider.empty() ||
        in.client_retrying) {
        return nullptr;
    }
    if (!in.fallback_on_rate_limit && rate_limited) return nullptr;
    if ((first.route != Route::Byok && first.route != Route::System) || first.target == nullptr ||
        first.provider == nullptr) {
        return nullptr;
    }
    return usable_fallback(in, first.target->id);
}

}  // namespace

std::optional<RouteDecision> decide_retry(const RouteInput &in, const RouteDecision &first,
                                          std::string_view upstream_reason) {
    const Provider *f = retry_target(in, first, upstream_reason == "upstream_429");
    if (f == nullptr) return std::nullopt;
    RouteDecision d;
    d.route = Route::Fallback;
    d.provider = first.provider;
    d.target = f;
    d.reason = std::string(upstream_reason);
    set_model(d, in, fallback_model(*first.provider, in.model));
    return d;
}

RetryOn retry_on(const RouteInput &in, const RouteDecision &first) {
    if (retry_target(in, first, false) == nullptr) return RetryOn::Nothing;
    // A 429 differs from a 5xx in retry_target by this setting only.
    return in.fallback_on_rate_limit ? RetryOn::ServerErrorsAnd429 : RetryOn::ServerErrors;
}

std::optional<std::string> models_list_answer(const RouteInput &in, const RouteDecision &d,
                                              std::string_view method, std::string_view rest) {
    if (d.route != Route::Denied || d.error_code != "unknown_model" || !in.model.empty() ||
        !in.native_provider.empty() || !in.header_provider.empty() || method != "GET" ||
        rest.substr(0, rest.find('?')) != "/models")
        return std::nullopt;
    nlohmann::json data = nlohmann::json::array();
    if (byok_allowed(in.tier)) {
        for (const auto &p : in.catalog->providers()) {
            const KeyState *state = project_key(in, p.id);
            if (!p.enabled || state == nullptr || *state != KeyState::Usable) continue;
            for (const auto &glob : p.models)
                data.push_back({{"id", glob}, {"object", "model"}, {"owned_by", p.id}});
        }
    }
    return nlohmann::json{{"object", "list"}, {"data", data}}.dump();
}

}  // namespace byok
