#include "lib/gateway.h"

#include <nlohmann/json.hpp>

#include "lib/record.h"
#include "lib/util.h"

namespace byok {

std::string_view gateway_error_type(int status) {
    if (status == 429) return "rate_limit_error";
    if (status == 404) return "invalid_request_error";
    return error_type(status);
}

GatewayError gateway_error(int status, std::string_view code, std::string_view message) {
    GatewayError e;
    e.status = status;
    e.code = std::string(code);
    e.message = std::string(message);
    e.type = std::string(gateway_error_type(status));
    return e;
}

namespace {

GatewayError unauthorized(std::string_view message) {
    GatewayError e = gateway_error(401, "invalid_api_key", message);
    e.auth_failure = true;
    return e;
}

}  // namespace

void parse_gateway_request(const GatewayRequestIn &in, GatewayRequest *out) {
    GatewayRequest &req = *out;
    ClientCredentials creds = in.creds;
    size_t q = in.uri.find('?');
    std::string_view path = in.uri.substr(0, q);
    std::string args;  // built only when there is a query (issue 18)
    if (q != std::string_view::npos) args = strip_key_param(in.uri.substr(q + 1), &creds.query_key);
    // A `key=` parameter leaves the request line before anything is logged.
    if (args.size() + 1 + path.size() < in.uri.size())
        req.clean_uri = std::string(path) + (args.empty() ? "" : "?" + args);

    std::string_view rest;
    if (path == "/v1" || path.substr(0, 4) == "/v1/") {
        req.unified = true;
        rest = path.substr(3);
    } else {
        size_t slash = path.find('/', 1);
        req.native_provider =
            std::string(path.substr(1, slash == std::string_view::npos ? slash : slash - 1));
        rest = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
        req.api = api_family(req.native_provider);
        if (req.native_provider.empty()) {
            req.error = gateway_error(404, "not_found",
                                      "use /v1/... or /<provider>/... with a gateway key");
            return;
        }
    }
    if (args.empty()) {
        req.rest = rest.empty() ? std::string_view("/") : rest;
    } else if (!req.clean_uri && !rest.empty()) {
        // Nothing was dropped: the rest and the whole query follow in `in`.
        req.rest = std::string_view(rest.data(), in.uri.data() + in.uri.size() - rest.data());
    } else {
        req.rest_built = std::make_shared<const std::string>(
            std::string(rest.empty() ? "/" : rest) + "?" + args);
        req.rest = *req.rest_built;
    }
    if (!safe_header_value(req.rest) || req.rest.find(' ') != std::string::npos) {
        req.error = gateway_error(400, "invalid_request", "invalid characters in the request URI");
        return;
    }
    for (std::string_view p : in.provider_headers) {
        if (!safe_header_value(p)) {
            req.error = gateway_error(400, "invalid_header", "invalid x-byok-provider header");
            return;
        }
        req.header_provider = std::string(p);
    }
    req.client_retrying = client_is_retrying(in.retry_count);
    req.content_type = in.content_type;
    req.body_kind = body_kind(in.content_type);
    GatewayKeyLookup found = find_gateway_key(creds, req.api);
    if (!found.error.empty()) {
        req.error = unauthorized(found.error);
        return;
    }
    req.key = found.key;
}

GatewayRequest parse_gateway_request(const GatewayRequestIn &in) {
    GatewayRequest req;
    parse_gateway_request(in, &req);
    return req;
}

GatewayError too_many_unknown_keys(int64_t retry_after) {
    GatewayError e = gateway_error(429, "rate_limited",
                                   "too many requests with unknown gateway API keys; retry later");
    e.auth_failure = true;
    e.retry_after = retry_after;
    return e;
}

namespace {

bool hashes_or_nil(const Reply &reply, size_t n) {
    if (reply.type != Reply::Type::Array || reply.elements.size() != n) return false;
    for (const Reply &e : reply.elements)
        if (e.type != Reply::Type::Array && e.type != Reply::Type::Nil) return false;
    return true;
}

// The key's project, or nullopt when the hash names none (an unknown key).
std::optional<std::string> project_of(const FieldMap &apikey) {
    auto pid = apikey.find("project");
    if (pid == apikey.end() || !valid_id(pid->second)) return std::nullopt;
    return pid->second;
}

LookupOutcome found(FieldMap apikey, const Reply &project, const Reply &keys, const Reply &health) {
    LookupOutcome out;
    out.kind = LookupOutcome::Kind::Found;
    out.project = *project_of(apikey);
    out.snap = build_snapshot(apikey, to_fields(project), to_fields(keys));
    for (const auto &[id, wire] : to_fields(health))
        if (auto h = decode_health(wire); h && valid_key_id(id)) out.health.emplace_back(id, *h);
    return out;
}

}  // namespace

LookupOutcome read_lookup_reply(const Reply &reply) {
    LookupOutcome out;
    if (!hashes_or_nil(reply, 4)) return out;
    FieldMap apikey = to_fields(reply.elements[0]);
    if (!project_of(apikey)) {
        out.kind = LookupOutcome::Kind::Unknown;  // snap stays Unknown
        return out;
    }
    return found(std::move(apikey), reply.elements[1], reply.elements[2], reply.elements[3]);
}

KeyMetaVerdict gateway_key_meta(std::string_view meta_json, std::string_view sha_hex) {
    auto m = nlohmann::json::parse(meta_json, nullptr, false);
    if (!m.is_object()) return KeyMetaVerdict::Missing;
    auto hash = m.find("hash");
    if (hash == m.end() || !hash->is_string() || hash->get_ref<const std::string &>() != sha_hex)
        return KeyMetaVerdict::Missing;
    auto revoked = m.find("revoked");
    if (revoked != m.end() && !(revoked->is_boolean() && !revoked->get<bool>()))
        return KeyMetaVerdict::Revoked;
    return KeyMetaVerdict::Ok;
}

LookupOutcome read_lookup_reply(const Layout &layout, const std::string &sha_hex,
                                const Reply &reply, const LookupOutcome *first) {
    if (!layout.cluster()) return read_lookup_reply(reply);
    LookupOutcome out;
    if (first == nullptr) {  // the gateway key's hash
        if (reply.type != Reply::Type::Array && reply.type != Reply::Type::Nil) return out;
        out.apikey = to_fields(reply);
        auto pid = project_of(out.apikey);
        if (!pid) {
            out.kind = LookupOutcome::Kind::Unknown;
            return out;
        }
        auto id = out.apikey.find("id");
        out.kind = LookupOutcome::Kind::Next;
        out.next = gateway_lookup_project_command(
            layout, *pid, id == out.apikey.end() ? std::string() : id->second);
        return out;
    }
    // {project, keys, key_health, metadata}: the metadata is a string or nil.
    if (reply.type != Reply::Type::Array || reply.elements.size() != 4) return out;
    const Reply &meta = reply.elements[3];
    if (meta.type != Reply::Type::String && meta.type != Reply::Type::Nil) return out;
    Reply hashes = reply;
    hashes.elements.pop_back();
    if (!hashes_or_nil(hashes, 3)) return out;
    FieldMap apikey = first->apikey;
    switch (gateway_key_meta(meta.type == Reply::Type::String ? meta.str : "", sha_hex)) {
        case KeyMetaVerdict::Missing:
            out.kind = LookupOutcome::Kind::Unknown;  // being minted, or left over
            return out;
        case KeyMetaVerdict::Revoked:
            apikey["revoked"] = "1";  // the metadata is the authority
            break;
        case KeyMetaVerdict::Ok:
            break;
    }
    return found(std::move(apikey), reply.elements[0], reply.elements[1], reply.elements[2]);
}

int64_t unknown_key_ttl(int64_t ttl) { return ttl < 10 ? ttl : 10; }

GatewayError key_store_unavailable() {
    return gateway_error(503, "key_store_unavailable",
                         "the key store is unavailable; try again shortly");
}

std::optional<GatewayError> snapshot_error(const GatewaySnapshot &snap, int64_t now_s) {
    if (snap.status == GatewaySnapshot::Status::Unknown)
        return unauthorized("unknown gateway API key");
    if (snap.status == GatewaySnapshot::Status::Revoked)
        return unauthorized("this gateway API key has been revoked");
    if (now_s > 0 && key_expired(snap.key_expires_at, now_s))
        return unauthorized("this gateway API key has expired");
    return std::nullopt;
}

std::optional<GatewayError> body_error(const BodyError *bad,
                                       const std::optional<ModelSpan> &model) {
    if (bad != nullptr) return gateway_error(400, bad->code, bad->what());
    if (model && !safe_header_value(model->model))
        return gateway_error(400, "invalid_model", "invalid characters in \"model\"");
    return std::nullopt;
}

namespace {

// The operator's key for the decided target (routes system and fallback).
void take_operator_key(const GatewayConfig &cfg, RoutePlan *plan) {
    const RouteDecision &d = plan->decision;
    const SecretString *sys = cfg.system_key(d.target->id);
    if (sys == nullptr) {
        plan->action = RoutePlan::Action::Error;
        plan->error = gateway_error(403, "no_credential", "no credential for this provider");
        return;
    }
    plan->key = SecretString(sys->view());
    plan->key_hint = {};
    plan->fallback_taken = d.route == Route::Fallback;
    plan->resolve_endpoint = d.target->per_key_endpoint;
    plan->action = RoutePlan::Action::Proxy;
}

// Without a key pool: the provider's first key not tried yet.
const StoredKey *first_untried(const GatewaySnapshot &snap, std::string_view provider,
                               KeyAttempts *attempts) {
    for (const auto &k : snap.keys) {
        if (k.provider != provider || attempts->tried_id(k.id)) continue;
        if (!k.is_active && !k.malformed) continue;
        attempts->tried.push_back(k.id);
        return &k;
    }
    return nullptr;
}

// Opens the next key of `target` (issue 14: the pool's choice among the
// usable keys); a key that does not decrypt is noted and the next one tried.
bool open_project_key(const GatewayConfig &cfg, const GatewaySnapshot &snap,
                      const std::string &target, KeyAttempts *attempts, RoutePlan *plan,
                      const KeyOpener &opener) {
    attempts->provider = target;
    for (;;) {
        const StoredKey *sk = cfg.keys.pick ? cfg.keys.pick(snap, target, attempts)
                                            : first_untried(snap, target, attempts);
        if (sk == nullptr) return false;
        try {
            if (sk->malformed) throw Error("the stored record is malformed");
            if (!plan->key.empty()) plan->key.clear();  // wiped, never overwritten in place
            if (opener.open)
                opener.open(opener.arg, *cfg.ring, snap.project, *sk, &plan->key);
            else
                plan->key = open_stored_key(*cfg.ring, snap.project, *sk);
            plan->key_hint = sk->key_hint;
            attempts->current = sk->id;
            attempts->observed = false;
            return true;
        } catch (const Error &e) {
            plan->decrypt_failures.push_back("stored key of project \"" + snap.project +
                                             "\" for provider \"" + target +
                                             "\" does not decrypt: " + e.what());
            if (sk->malformed) return false;  // a malformed set holds no other key
        }
    }
}

}  // namespace

RoutePlan plan_route(const GatewayConfig &cfg, const GatewaySnapshot &snap,
                     const GatewayRequest &req, std::string_view method, bool body_read,
                     std::string_view model, RouteInput *in, KeyAttempts *attempts,
                     const KeyOpener &opener) {
    in->catalog = cfg.catalog;
    in->tier = snap.tier;
    in->policy = snap.policy;
    in->project_keys.clear();
    in->keys_retry_in_s.clear();
    std::optional<KeyAttempts> local;  // built only for a caller that keeps none
    if (attempts == nullptr) attempts = &local.emplace();
    attempts->usable.clear();
    // A malformed record goes through the decrypt attempt below like any
    // other undecryptable one, so it is logged and counted the same way.
    if (cfg.keys.states) {
        cfg.keys.states(snap, in, attempts);
    } else {
        for (const auto &k : snap.keys) {
            bool listed = false;  // one row per provider: its first key's state
            for (const auto &pk : in->project_keys) listed = listed || pk.first == k.provider;
            if (listed) continue;
            in->project_keys.emplace_back(
                k.provider, k.malformed || k.is_active ? KeyState::Usable : KeyState::Inactive);
        }
    }
    in->system_keys.clear();
    for (const std::string &id : cfg.system_key_providers) in->system_keys.push_back(id);
    in->fallback_provider = cfg.fallback_provider;
    in->fallback_on_rate_limit = snap.fallback_on_rate_limit;
    in->client_retrying = req.client_retrying;
    // An upload or an opaque body names no model but in a multipart field.
    in->bodiless = req.unified && (!body_read || req.body_kind != BodyKind::Json);
    in->default_provider = snap.default_provider;
    in->native_provider = req.native_provider;
    in->header_provider = req.header_provider;
    in->model = model;

    RoutePlan plan;
    for (int attempt = 0; attempt < 2; attempt++) {
        plan.decision = decide_route(*in);
        if (plan.decision.route != Route::Byok) break;
        const std::string &target = plan.decision.target->id;
        if (open_project_key(cfg, snap, target, attempts, &plan, opener)) break;
        for (auto &pk : in->project_keys)
            if (pk.first == target) pk.second = KeyState::DecryptError;
    }
    plan.decided = true;
    const RouteDecision &d = plan.decision;
    if (auto list = models_list_answer(*in, d, method, req.rest)) {
        plan.action = RoutePlan::Action::Answer;
        plan.answer = std::move(*list);
        return plan;
    }
    if (d.route == Route::Denied) {
        plan.action = RoutePlan::Action::Error;
        plan.error = gateway_error(d.status ? d.status : 403, d.error_code, d.error_message);
        plan.error.retry_after = d.retry_after_s;  // all keys cooling (issue 14)
        return plan;
    }
    if (d.route != Route::Byok) {
        take_operator_key(cfg, &plan);
        return plan;
    }
    plan.action = RoutePlan::Action::Proxy;
    plan.resolve_endpoint = d.target->per_key_endpoint;
    return plan;
}

bool key_failure(int status) {
    return status == 0 || status == 401 || status == 402 || status == 403 || status == 429 ||
           status >= 500;
}

std::optional<RoutePlan> plan_sibling(const GatewayConfig &cfg, const GatewaySnapshot &snap,
                                      const RouteDecision &first, KeyAttempts *attempts,
                                      const KeyOpener &opener) {
    if (first.route != Route::Byok || attempts->retried) return std::nullopt;
    attempts->retried = true;
    attempts->usable.clear();  // the first attempt's answer may have changed the health
    RoutePlan plan;
    plan.decided = true;
    plan.decision = first;
    if (!open_project_key(cfg, snap, first.target->id, attempts, &plan, opener))
        return std::nullopt;
    plan.action = RoutePlan::Action::Proxy;
    plan.resolve_endpoint = first.target->per_key_endpoint;
    return plan;
}

std::string upstream_failure_reason(int status, bool got_bytes) {
    if (got_bytes && status) return "upstream_" + std::to_string(status);
    return "upstream_error";
}

RoutePlan plan_retry(const GatewayConfig &cfg, const RouteInput &in, const RouteDecision &first,
                     int status, bool got_bytes) {
    std::string reason = upstream_failure_reason(status, got_bytes);
    RoutePlan plan;
    plan.decided = true;
    plan.decision = first;
    auto next = decide_retry(in, first, reason);
    if (!next) {
        plan.action = RoutePlan::Action::Error;
        // The provider's own status, as a server error of the API.
        plan.error = gateway_error(status ? status : 502, "upstream_error",
                                   "the provider failed: " + reason);
        plan.error.type = "api_error";
        return plan;
    }
    plan.decision = std::move(*next);
    take_operator_key(cfg, &plan);
    return plan;
}

UpstreamPlan plan_upstream(const GatewayRequest &req, const GatewaySnapshot &snap,
                           const RouteDecision &d, const SecretString &key,
                           const std::optional<ModelSpan> &model, bool body_rewritten,
                           std::string_view key_id) {
    const Provider &target = *d.target;
    UpstreamPlan up;
    up.provider_base = req.unified ? &target.openai_base : &target.base_url;
    if (target.per_key_endpoint) {
        // plan_route asked for the tenant's endpoint to be resolved and
        // checked; the glue connects to that address.
        up.endpoint = parse_url(key_in_use(snap, d, key_id)->endpoint, "endpoint");
        up.pin = true;
    }
    up.rest = req.rest;
    if (!up.base().authority_is_host()) up.host_built = up.base().authority();
    up.headers = upstream_header_refs(target, key.view());
    // Only a changed model costs anything; a body an earlier attempt
    // rewrote gets the client's model back.
    if (model && (d.model_changed || body_rewritten))
        up.model_token = model_token(*model, d.model_changed ? d.model : model->model);
    return up;
}

const StoredKey *key_in_use(const GatewaySnapshot &snap, const RouteDecision &d,
                            std::string_view key_id) {
    if (const StoredKey *k = snap.find_key(d.target->id, key_id); k && !key_id.empty()) return k;
    return snap.find_key(d.target->id);
}

std::optional<GatewayError> endpoint_error(const GatewaySnapshot &snap, const RouteDecision &d,
                                           std::string_view key_id) {
    const StoredKey *sk = key_in_use(snap, d, key_id);
    if (sk == nullptr || sk->endpoint.empty())
        return gateway_error(422, "no_endpoint", "no endpoint configured for this provider");
    return std::nullopt;
}

GatewayError endpoint_refused(std::string_view why) {
    return gateway_error(502, "endpoint_refused",
                         "the custom endpoint was refused: " + std::string(why));
}

std::string_view proxy_location(const RouteInput &in, const RouteDecision &d, bool sibling_left) {
    // Each location intercepts exactly the failures a retry may follow; the
    // others reach the client as the provider sent them.
    if (sibling_left) return "@byok_keys";
    switch (retry_on(in, d)) {
        case RetryOn::ServerErrorsAnd429:
            return "";
        case RetryOn::ServerErrors:
            return "@byok_fallback_5xx";
        case RetryOn::Nothing:
            break;
    }
    return "@byok_direct";
}

std::string_view sibling_location(const RouteInput &in, const RouteDecision &d) {
    switch (retry_on(in, d)) {
        case RetryOn::ServerErrorsAnd429:
            return "@byok_retry";
        case RetryOn::ServerErrors:
            return "@byok_fallback_5xx";
        case RetryOn::Nothing:
            break;
    }
    return "@byok_direct";
}

}  // namespace byok
