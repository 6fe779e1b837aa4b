// byok_gateway's access-phase handler: a state machine that asks lib/gateway
// what to do at each step and carries it out — parse the request, find the
// gateway key (shm cache, else one Redis round trip), read the body when the
// model is needed, plan the route, resolve a tenant endpoint, point the proxy
// module at the provider, and re-enter from error_page for the fallback.
// No rule lives here: every decision is a lib/ call.
//
//   Start ──cache hit──────────────┐
//     └─miss─> WaitKey ──reply─────┤
//                                  v
//               (unified + body) WaitBody ──> plan ──> WaitResolve ──> Proxying
//                                                 └──────────────────────┘   │
//                                   error_page (429/5xx before any byte) ─> Fallback
#include "ngx_byok_module/ngx_byok_ctx.h"

#include "lib/util.h"

namespace {

using Stage = ByokGatewayCtx::Stage;

ByokMain *main_of(ngx_http_request_t *r) {
    return static_cast<ngx_byok_main_conf_t *>(
               ngx_http_get_module_main_conf(r, ngx_http_byok_module))
        ->m;
}

// What the route decision needs from the configuration: built once per
// configuration, on its first gateway request (issue 18: not per request).
const byok::GatewayConfig &gateway_config(ngx_http_request_t *r) {
    ByokMain *m = main_of(r);
    if (m->gateway) return *m->gateway;
    byok::GatewayConfig cfg;
    cfg.catalog = &m->catalog;
    cfg.ring = &m->ring;
    for (const auto &sk : m->system_keys) cfg.system_key_providers.push_back(sk.provider);
    cfg.system_key = [m](std::string_view p) { return m->system_key(p); };
    cfg.fallback_provider = m->fallback;
    ngx_byok_key_pool(&cfg);  // issue 14: several keys per provider, their health
    return m->gateway.emplace(std::move(cfg));
}

// issue 18: the request's provider keys come from the worker's locked key
// cache (the entry its snapshot came from, else found by the gateway key's
// hash), else they are decrypted.
byok::KeyOpener key_opener(const ByokGatewayCtx *ctx) {
    byok::KeyOpener o;
    o.open = [](const void *arg, const byok::KeyRing &ring, std::string_view pid,
                const byok::StoredKey &k, byok::SecretString *out) {
        auto *c = static_cast<const ByokGatewayCtx *>(arg);
        ngx_byok_keycache_open(c->sha, c->key_entry, ring, pid, k, out);
    };
    o.arg = ctx;
    return o;
}

// Resumes the phase handlers after an asynchronous step finished.
void resume(ByokGatewayCtx *ctx) {
    ngx_http_request_t *r = ctx->r;
    ngx_connection_t *c = r->connection;
    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}

// The gateway's own answers, in the error shape of the API the client speaks.
ngx_int_t fail(ngx_http_request_t *r, ByokGatewayCtx *ctx, const byok::GatewayError &e) {
    ctx->stage = Stage::Done;
    if (e.auth_failure) ngx_byok_count(BYOK_AUTH_FAILURE);
    ngx_int_t rc;
    try {
        std::vector<byok::Header> extra;
        if (e.retry_after > 0) extra.push_back({"Retry-After", std::to_string(e.retry_after)});
        rc = ngx_byok_send_json(
            r, e.status,
            byok::gateway_error_body(ctx->req.api, e.status, e.code, e.message, e.type), &extra);
    } catch (const std::exception &) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}

ngx_int_t internal_error(ngx_http_request_t *r, ByokGatewayCtx *ctx, std::string_view message) {
    auto e = byok::gateway_error(NGX_HTTP_INTERNAL_SERVER_ERROR, "internal_error", message);
    return fail(r, ctx, e);
}

// Puts the URI without its `key=` parameter into the request line,
// $request_uri and $args before any error can be logged, so neither
// access_log (whatever its log_format) nor error_log ever shows the key.
ngx_int_t drop_key_param(ngx_http_request_t *r, const std::string &uri) {
    std::string line = std::string(sv(r->method_name)) + " " + uri;
    if (r->http_protocol.len) line.append(" ").append(sv(r->http_protocol));
    auto *p = static_cast<u_char *>(ngx_pnalloc(r->pool, line.size()));
    if (p == nullptr) return NGX_ERROR;
    ngx_memcpy(p, line.data(), line.size());
    size_t q = uri.find('?');
    size_t path = q == std::string::npos ? uri.size() : q;
    r->request_line = {line.size(), p};
    r->unparsed_uri = {uri.size(), p + r->method_name.len + 1};
    r->args = {q == std::string::npos ? 0 : uri.size() - q - 1,
               r->unparsed_uri.data + path + (q == std::string::npos ? 0 : 1)};
    return NGX_OK;
}

void waiter_done(ByokRedisWaiter *w) {
    auto *ctx = static_cast<ByokGatewayCtx *>(w->data);
    ctx->waiter = nullptr;
    ctx->reply = std::move(w->reply);
    ctx->resumed = true;
    resume(ctx);
}

ngx_int_t after_snapshot(ngx_http_request_t *r, ByokGatewayCtx *ctx);
ngx_int_t plan(ngx_http_request_t *r, ByokGatewayCtx *ctx);
ngx_int_t proxy(ngx_http_request_t *r, ByokGatewayCtx *ctx);
ngx_int_t jump(ngx_http_request_t *r, std::string_view where);

ngx_int_t use_stale_or_fail(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    if (!ctx->stale_blob.empty()) {
        ctx->snap =
            std::make_shared<const byok::GatewaySnapshot>(byok::decode_snapshot(ctx->stale_blob));
        return after_snapshot(r, ctx);
    }
    return fail(r, ctx, byok::key_store_unavailable());
}

ngx_int_t on_lookup_reply(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    auto *mcf =
        static_cast<ngx_byok_main_conf_t *>(ngx_http_get_module_main_conf(r, ngx_http_byok_module));
    // issue 16: in cluster mode lib asks for a second step (Next) in the project's slot
    const byok::Layout &layout = main_of(r)->admin.layout;
    byok::LookupOutcome found =
        byok::read_lookup_reply(layout, byok::hex_encode(ctx->sha, sizeof(ctx->sha)), ctx->reply,
                                ctx->lookup_first ? &*ctx->lookup_first : nullptr);
    switch (found.kind) {
        case byok::LookupOutcome::Kind::Next:
            ctx->lookup_first = std::move(found);
            ctx->waiter = ngx_byok_redis_send(ctx->lookup_first->next, waiter_done, ctx);
            if (ctx->waiter == nullptr) return use_stale_or_fail(r, ctx);
            return NGX_AGAIN;  // WaitKey again
        case byok::LookupOutcome::Kind::Failed:
            return use_stale_or_fail(r, ctx);
        case byok::LookupOutcome::Kind::Unknown:
            ngx_byok_cache_charge_unknown(r->connection);
            break;
        case byok::LookupOutcome::Kind::Found:
            // issue 16: verdicts of other nodes stored before this one started
            for (const auto &[key_id, health] : found.health)
                ngx_byok_health_learn(found.project, key_id, health);
            break;
    }
    ctx->snap = std::make_shared<const byok::GatewaySnapshot>(std::move(found.snap));
    bool unknown = found.kind == byok::LookupOutcome::Kind::Unknown;
    ngx_byok_cache_put(ctx->sha, found.project, byok::encode_snapshot(*ctx->snap),
                       unknown ? byok::unknown_key_ttl(mcf->ttl) : mcf->ttl, ctx->cache_generation);
    return after_snapshot(r, ctx);
}

byok::GatewayRequestIn request_in(ngx_http_request_t *r) {
    byok::GatewayRequestIn in;
    in.uri = sv(r->unparsed_uri);
    ngx_byok_each_header(r->headers_in.headers, [&](const ngx_table_elt_t &h) {
        std::string_view value = sv(h.value);
        byok::RequestHeader kind = byok::request_header(ngx_byok_header_name(h));
        if (std::string_view *slot = byok::credential_slot(in.creds, kind)) {
            *slot = value;
        } else if (kind == byok::RequestHeader::RetryCount) {
            in.retry_count = value;
        } else if (kind == byok::RequestHeader::ContentType) {
            in.content_type = value;
        } else if (kind == byok::RequestHeader::ByokProvider) {
            in.provider_headers.push_back(value);
        }
        return true;
    });
    return in;
}

// Everything the request needs from the URI and headers, then the cache or
// the Redis lookup.
ngx_int_t start(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    byok::parse_gateway_request(request_in(r), &ctx->req);  // Start runs once: req is fresh
    if (ctx->req.clean_uri && drop_key_param(r, *ctx->req.clean_uri) != NGX_OK)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    if (ctx->req.error) return fail(r, ctx, *ctx->req.error);

    byok::sha256(ctx->req.key, ctx->sha);
    ctx->cache_generation = ngx_byok_cache_generation();
    // issue 18: a fresh hit comes decoded from the worker's snapshot cache
    switch (ngx_byok_cache_get_snapshot(ctx->sha, &ctx->snap, &ctx->stale_blob, &ctx->key_entry)) {
        case ByokCacheResult::Fresh:
            return after_snapshot(r, ctx);
        case ByokCacheResult::Stale:
            break;
        case ByokCacheResult::Miss:
            // A miss may be a guessed key costing a Redis call: refused while
            // this client address is over its unknown-key budget.
            if (int64_t wait = ngx_byok_cache_lookup_wait(r->connection))
                return fail(r, ctx, byok::too_many_unknown_keys(wait));
            break;
    }
    ctx->stage = Stage::WaitKey;
    ctx->resumed = false;
    ctx->waiter = ngx_byok_redis_send(
        byok::gateway_lookup_command(main_of(r)->admin.layout,
                                     byok::hex_encode(ctx->sha, sizeof(ctx->sha))),
        waiter_done, ctx);
    if (ctx->waiter == nullptr) return use_stale_or_fail(r, ctx);
    return NGX_AGAIN;
}

void body_ready(ngx_http_request_t *r) {
    ByokGatewayCtx *ctx = ngx_byok_gateway_ctx(r, false);
    r->main->count--;
    if (ctx == nullptr) return;
    ctx->body_read = true;
    if (ctx->waiting_body) {
        ctx->waiting_body = false;
        ctx->resumed = true;
        ngx_http_core_run_phases(r);
    }
}

ngx_int_t after_snapshot(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    if (auto e = byok::snapshot_error(*ctx->snap, ngx_time())) return fail(r, ctx, *e);
    bool has_body = r->headers_in.content_length_n > 0 || r->headers_in.chunked;
    if (ctx->req.unified && has_body && !ctx->body_read) {
        ctx->stage = Stage::WaitBody;
        ngx_int_t rc = ngx_http_read_client_request_body(r, body_ready);
        if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) return rc;
        if (!ctx->body_read) {
            ctx->waiting_body = true;
            return NGX_DONE;
        }
    }
    return plan(r, ctx);
}

// The route plan's bookkeeping: decrypt failures and a fallback are counted
// and logged here, once for both ways of reaching them.
void note_plan(ngx_http_request_t *r, ByokGatewayCtx *ctx, const byok::RoutePlan &p) {
    for (const auto &why : p.decrypt_failures) {
        ngx_byok_count(BYOK_DECRYPT_FAILURE);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0, BYOK_LOG "%s", why.c_str());
    }
    if (p.fallback_taken) {
        const byok::RouteDecision &d = p.decision;
        ngx_byok_count_fallback(d.reason);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      BYOK_LOG "fallback: project \"%s\" provider \"%s\" -> \"%s\" reason %s",
                      ctx->snap->project.c_str(), d.provider->id.c_str(), d.target->id.c_str(),
                      d.reason.c_str());
    }
}

// Takes the plan into the ctx; NGX_OK to proxy, else what the handler returns.
ngx_int_t take_plan(ngx_http_request_t *r, ByokGatewayCtx *ctx, byok::RoutePlan &&p) {
    note_plan(r, ctx, p);
    ctx->decision = std::move(p.decision);
    ctx->decided = p.decided;
    switch (p.action) {
        case byok::RoutePlan::Action::Answer:
            ctx->stage = Stage::Done;
            ngx_http_finalize_request(r, ngx_byok_send_json(r, NGX_HTTP_OK, p.answer));
            return NGX_DONE;
        case byok::RoutePlan::Action::Error:
            return fail(r, ctx, p.error);
        case byok::RoutePlan::Action::Proxy:
            break;
    }
    // Issue 13: project limits, before any upstream call (429 when spent).
    if (auto e = ngx_byok_limits_admit(r, ctx)) return fail(r, ctx, *e);
    // p.key wipes an earlier attempt's key as the plan goes; the first
    // attempt has none, and takes the key without a swap.
    if (ctx->key.empty())
        ctx->key.take(p.key);
    else
        ctx->key.swap(p.key);
    ctx->key_hint = p.key_hint;
    ctx->resolve_endpoint = p.resolve_endpoint;
    return NGX_OK;
}

void resolved(ByokGatewayCtx *ctx, const std::string &ip, const std::string &error) {
    ctx->pinned_ip = ip;
    ctx->resolve_error = error;
    ctx->resumed = true;
    if (ctx->waiting_resolve) resume(ctx);
}

// A custom endpoint is chosen by the tenant: resolve it ourselves, refuse
// private addresses (SPEC §10) and connect to the address that was checked.
ngx_int_t resolve_endpoint(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    if (auto e = byok::endpoint_error(*ctx->snap, ctx->decision, ctx->keys.current))
        return fail(r, ctx, *e);
    const byok::StoredKey *sk = byok::key_in_use(*ctx->snap, ctx->decision, ctx->keys.current);
    byok::Url url = byok::parse_url(sk->endpoint, "endpoint");
    ctx->stage = Stage::WaitResolve;
    ctx->resumed = false;
    ctx->waiting_resolve = false;
    ngx_int_t rc =
        ngx_byok_resolve_checked(r, url, [ctx](const std::string &ip, const std::string &error) {
            try {
                resolved(ctx, ip, error);
            } catch (const std::exception &) {
                ngx_http_finalize_request(ctx->r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            }
        });
    if (rc != NGX_OK) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    if (!ctx->resumed) {
        ctx->waiting_resolve = true;  // the answer arrives from a posted event
        return NGX_AGAIN;
    }
    return proxy(r, ctx);
}

ngx_int_t plan(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    if (ctx->body_read) {
        std::optional<byok::BodyError> bad;
        try {
            if (!ngx_byok_scan_body(r, ctx))
                return internal_error(r, ctx, "cannot read the request body");
        } catch (const byok::BodyError &e) {
            bad = e;
        }
        if (auto e = byok::body_error(bad ? &*bad : nullptr, ctx->model)) return fail(r, ctx, *e);
    }
    // Issue 17 item 7: a repeated Idempotency-Key is the client's own retry.
    ctx->req.client_retrying = ngx_byok_idempotency_repeat(r, ctx->sha) || ctx->req.client_retrying;
    std::string_view model = ctx->model ? std::string_view(ctx->model->model) : "";
    ngx_int_t rc = take_plan(
        r, ctx,
        byok::plan_route(gateway_config(r), *ctx->snap, ctx->req, sv(r->method_name),
                         ctx->body_read, model, &ctx->input, &ctx->keys, key_opener(ctx)));
    if (rc != NGX_OK) return rc;
    if (ctx->resolve_endpoint) return resolve_endpoint(r, ctx);
    return proxy(r, ctx);
}

ngx_int_t proxy(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    if (ctx->resolve_endpoint && ctx->pinned_ip.empty()) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      BYOK_LOG "custom endpoint of project \"%s\" refused: %s",
                      ctx->snap->project.c_str(), ctx->resolve_error.c_str());
        return fail(r, ctx, byok::endpoint_refused(ctx->resolve_error));
    }
    ngx_int_t rc = ngx_byok_setup_upstream(r, ctx);
    if (rc != NGX_OK) return rc;
    ctx->stage = Stage::Proxying;
    std::string_view where =
        byok::proxy_location(ctx->input, ctx->decision, ngx_byok_sibling_possible(ctx));
    return jump(r, where);
}

// Continues in the named location `where` ("" = stay in this one).
// issue 18 (s4-nginx): switched in place, see ngx_byok_enter_location.
ngx_int_t jump(ngx_http_request_t *r, std::string_view where) {
    return where.empty() ? NGX_DECLINED : ngx_byok_enter_location(r, where);
}

// Re-entry through error_page after the direct call failed before any byte.
ngx_int_t retry(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    ngx_byok_wipe_upstream_request(r);  // issue 18: the failed attempt's copy of the key
    int status = 0;
    bool got_bytes = false;
    if (r->upstream_states && r->upstream_states->nelts) {
        auto *st = static_cast<ngx_http_upstream_state_t *>(r->upstream_states->elts);
        ngx_http_upstream_state_t &last = st[r->upstream_states->nelts - 1];
        status = static_cast<int>(last.status);
        got_bytes = last.bytes_received > 0;
    }
    // Issue 14: the answer goes into the key's health; then, when it may be
    // the key's own fault, once more on a sibling key before any fallback.
    int answered = got_bytes ? status : 0;
    ngx_byok_health_observe(r, ctx, answered);
    ctx->keys.usable.clear();  // the health the decision read may have changed since
    if (byok::key_failure(answered) && ngx_byok_sibling_possible(ctx)) {
        if (auto sibling = byok::plan_sibling(gateway_config(r), *ctx->snap, ctx->decision,
                                              &ctx->keys, key_opener(ctx))) {
            ngx_int_t rc = take_plan(r, ctx, std::move(*sibling));
            if (rc != NGX_OK) return rc;
            rc = ngx_byok_setup_upstream(r, ctx);
            if (rc != NGX_OK) return rc;
            return jump(r, byok::sibling_location(ctx->input, ctx->decision));
        }
    }
    ctx->keys.current = {};  // what follows does not use a project key
    ngx_int_t rc = take_plan(
        r, ctx, byok::plan_retry(gateway_config(r), ctx->input, ctx->decision, status, got_bytes));
    if (rc != NGX_OK) return rc;
    ctx->stage = Stage::Fallback;
    rc = ngx_byok_setup_upstream(r, ctx);
    return rc == NGX_OK ? NGX_DECLINED : rc;
}

ngx_int_t dispatch(ngx_http_request_t *r, ByokGatewayCtx *ctx) {
    switch (ctx->stage) {
        case Stage::Start:
            return start(r, ctx);
        case Stage::WaitKey:
            if (!ctx->resumed) return NGX_AGAIN;
            ctx->resumed = false;
            return on_lookup_reply(r, ctx);
        case Stage::WaitBody:
            if (!ctx->body_read) return NGX_DONE;
            ctx->resumed = false;
            return plan(r, ctx);
        case Stage::WaitResolve:
            if (!ctx->resumed) return NGX_AGAIN;
            ctx->resumed = false;
            return proxy(r, ctx);
        case Stage::Proxying:  // back through error_page (jump() does not re-enter)
            return retry(r, ctx);
        case Stage::Fallback:
            return NGX_DECLINED;
        case Stage::Done:
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    return NGX_DECLINED;
}

}  // namespace

ngx_int_t ngx_byok_access_handler(ngx_http_request_t *r) {
    auto *lcf =
        static_cast<ngx_byok_loc_conf_t *>(ngx_http_get_module_loc_conf(r, ngx_http_byok_module));
    if (!lcf->gateway || r != r->main) return NGX_DECLINED;
    ByokGatewayCtx *ctx = ngx_byok_gateway_ctx(r, true);
    if (ctx == nullptr) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    try {
        return dispatch(r, ctx);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, BYOK_LOG "gateway: %s", e.what());
        return internal_error(r, ctx, "internal gateway error");
    }
}

ngx_int_t ngx_byok_gateway_init(ngx_conf_t *cf) {
    if (ngx_byok_variables_init(cf) != NGX_OK ||
        ngx_byok_add_phase_handler(cf, NGX_HTTP_ACCESS_PHASE, ngx_byok_access_handler) != NGX_OK ||
        ngx_byok_add_phase_handler(cf, NGX_HTTP_LOG_PHASE, ngx_byok_log_handler) != NGX_OK ||
        ngx_byok_filter_init(cf) != NGX_OK)
        return NGX_ERROR;
    return NGX_OK;
}
