// byok_gateway: the access-phase handler (authenticate, load the project,
// read the body when the model is needed, decide, decrypt, point the proxy
// module at the provider), the fallback re-entry from error_page, the
// variables, the x-byok-* response headers and the log-phase accounting.
#include "ngx_byok_module/ngx_byok.h"

#include "lib/body.h"
#include "lib/client_api.h"
#include "lib/multipart.h"
#include "lib/util.h"

namespace {

using Stage = ByokRequestCtx::Stage;

ngx_http_output_header_filter_pt g_next_header_filter;

void ctx_cleanup(void *data) { static_cast<ByokRequestCtx *>(data)->~ByokRequestCtx(); }

ByokMain *main_of(ngx_http_request_t *r) {
    return static_cast<ngx_byok_main_conf_t *>(
               ngx_http_get_module_main_conf(r, ngx_http_byok_module))
        ->m;
}

// Headers that carry client credentials or gateway controls; never forwarded.
bool is_client_secret_header(const ngx_table_elt_t &h) {
    return ngx_byok_header_is(h, "authorization") || ngx_byok_header_is(h, "x-api-key") ||
           ngx_byok_header_is(h, "api-key") || ngx_byok_header_is(h, "x-goog-api-key") ||
           ngx_byok_header_is(h, "x-byok-provider") || ngx_byok_header_is(h, "proxy-authorization");
}

// A `key=` parameter holds a gateway key: it leaves the request line,
// $request_uri and $args here, before any error can be logged, so neither
// access_log (whatever its log_format) nor error_log ever shows it.
ngx_int_t drop_key_param(ngx_http_request_t *r, std::string_view path, const std::string &args) {
    std::string uri(path);
    if (!args.empty()) uri.append("?").append(args);
    std::string line = std::string(sv(r->method_name)) + " " + uri;
    if (r->http_protocol.len) line.append(" ").append(sv(r->http_protocol));
    auto *p = static_cast<u_char *>(ngx_pnalloc(r->pool, line.size()));
    if (p == nullptr) return NGX_ERROR;
    ngx_memcpy(p, line.data(), line.size());
    r->request_line = {line.size(), p};
    r->unparsed_uri = {uri.size(), p + r->method_name.len + 1};
    r->args = {args.size(), r->unparsed_uri.data + path.size() + (args.empty() ? 0 : 1)};
    return NGX_OK;
}

// The gateway's own errors, in the error shape of the API the client speaks.
ngx_int_t fail(ngx_http_request_t *r, ByokRequestCtx *ctx, ngx_uint_t status, std::string_view code,
               std::string_view message, std::string_view type = "invalid_request_error") {
    ctx->stage = Stage::Done;
    ngx_int_t rc;
    try {
        rc = ngx_byok_send_json(r, status,
                                byok::gateway_error_body(ctx->api, status, code, message, type));
    } catch (const std::exception &) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}

ngx_int_t too_many_lookups(ngx_http_request_t *r, ByokRequestCtx *ctx, int64_t retry_after) {
    ngx_byok_count(BYOK_AUTH_FAILURE);
    ctx->stage = Stage::Done;
    std::vector<byok::Header> extra = {{"Retry-After", std::to_string(retry_after)}};
    std::string body = byok::json_error(
        "rate_limited", "too many requests with unknown gateway API keys; retry later",
        "rate_limit_error");
    ngx_http_finalize_request(r, ngx_byok_send_json(r, NGX_HTTP_TOO_MANY_REQUESTS, body, &extra));
    return NGX_DONE;
}

ngx_int_t unauthorized(ngx_http_request_t *r, ByokRequestCtx *ctx, std::string_view message) {
    ngx_byok_count(BYOK_AUTH_FAILURE);
    return fail(r, ctx, NGX_HTTP_UNAUTHORIZED, "invalid_api_key", message, "authentication_error");
}

void waiter_done(ByokRedisWaiter *w) {
    auto *ctx = static_cast<ByokRequestCtx *>(w->data);
    ctx->waiter = nullptr;
    ctx->reply = std::move(w->reply);
    ctx->resumed = true;
    ngx_http_request_t *r = ctx->r;
    ngx_connection_t *c = r->connection;
    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}

ngx_int_t send_redis(ngx_http_request_t *r, ByokRequestCtx *ctx, Stage stage,
                     const std::vector<std::string> &argv) {
    ctx->waiter = ngx_byok_redis_send(argv, waiter_done, ctx);
    if (ctx->waiter == nullptr) {
        ctx->reply = byok::admin::Reply{};
        ctx->reply.type = byok::admin::Reply::Type::Unavailable;
        ctx->resumed = true;
        ctx->stage = stage;
        return NGX_DECLINED;  // caller continues synchronously
    }
    ctx->stage = stage;
    ctx->resumed = false;
    return NGX_AGAIN;
}

byok::FieldMap to_map(const byok::admin::Reply &rep) {
    byok::FieldMap m;
    for (size_t i = 0; i + 1 < rep.elements.size(); i += 2)
        m[rep.elements[i].str] = rep.elements[i + 1].str;
    return m;
}

bool redis_failed(const byok::admin::Reply &rep) {
    return rep.type == byok::admin::Reply::Type::Unavailable ||
           rep.type == byok::admin::Reply::Type::Error;
}

ngx_int_t after_snapshot(ngx_http_request_t *r, ByokRequestCtx *ctx);
ngx_int_t decide(ngx_http_request_t *r, ByokRequestCtx *ctx);
ngx_int_t resolve_endpoint(ngx_http_request_t *r, ByokRequestCtx *ctx);
ngx_int_t after_resolve(ngx_http_request_t *r, ByokRequestCtx *ctx);
ngx_int_t proxy_decision(ngx_http_request_t *r, ByokRequestCtx *ctx);

ngx_int_t use_stale_or_fail(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    if (!ctx->stale_blob.empty()) {
        ctx->snap = byok::decode_snapshot(ctx->stale_blob);
        return after_snapshot(r, ctx);
    }
    return fail(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE, "key_store_unavailable",
                "the key store is unavailable; try again shortly", "api_error");
}

// One round trip on a cache miss: the gateway-key hash, then the project's
// settings and encrypted key records, read atomically. The key names are
// built from Layout templates split around the project id (ARGV), so the
// layout stays defined in one place.
const char *kLookupScript =
    "local a = redis.call('HGETALL', KEYS[1])\n"
    "local pid\n"
    "for i = 1, #a, 2 do if a[i] == 'project' then pid = a[i + 1] end end\n"
    "if not pid then return {a, {}, {}} end\n"
    "return {a, redis.call('HGETALL', ARGV[1] .. pid .. ARGV[2]),\n"
    "        redis.call('HGETALL', ARGV[3] .. pid .. ARGV[4])}";

std::vector<std::string> lookup_command(const byok::Layout &layout, const std::string &sha_hex) {
    static const std::string marker = "\x01";
    auto split = [](const std::string &key) {
        size_t at = key.find(marker);
        return std::make_pair(key.substr(0, at), key.substr(at + marker.size()));
    };
    auto [project_head, project_tail] = split(layout.project(marker));
    auto [keys_head, keys_tail] = split(layout.keys(marker));
    return {"EVAL",       kLookupScript, "1",       layout.apikey(sha_hex),
            project_head, project_tail,  keys_head, keys_tail};
}

ngx_int_t on_lookup_reply(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    if (redis_failed(ctx->reply) || ctx->reply.elements.size() != 3)
        return use_stale_or_fail(r, ctx);
    auto *mcf =
        static_cast<ngx_byok_main_conf_t *>(ngx_http_get_module_main_conf(r, ngx_http_byok_module));
    byok::FieldMap apikey = to_map(ctx->reply.elements[0]);
    auto pid = apikey.find("project");
    if (pid == apikey.end() || !byok::valid_id(pid->second)) {
        ngx_byok_cache_charge_unknown(r->connection);
        ctx->snap = byok::GatewaySnapshot{};  // Unknown; cached briefly against floods
        ngx_byok_cache_put(ctx->sha, "", byok::encode_snapshot(ctx->snap), ngx_min(mcf->ttl, 10),
                           ctx->cache_generation);
        return after_snapshot(r, ctx);
    }
    ctx->snap = byok::build_snapshot(apikey, to_map(ctx->reply.elements[1]),
                                     to_map(ctx->reply.elements[2]));
    ngx_byok_cache_put(ctx->sha, pid->second, byok::encode_snapshot(ctx->snap), mcf->ttl,
                       ctx->cache_generation);
    return after_snapshot(r, ctx);
}

// Everything the request needs from the URI and headers; no Redis yet.
ngx_int_t start(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    ByokMain *m = main_of(r);
    std::string_view raw = sv(r->unparsed_uri);
    size_t q = raw.find('?');
    std::string_view path = raw.substr(0, q);
    byok::ClientCredentials creds;
    std::string args = q == std::string_view::npos
                           ? ""
                           : byok::strip_key_param(raw.substr(q + 1), &creds.query_key);
    if (args.size() + 1 + path.size() < raw.size() && drop_key_param(r, path, args) != NGX_OK)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    std::string_view rest;
    if (path == "/v1" || path.substr(0, 4) == "/v1/") {
        ctx->unified = true;
        rest = path.substr(3);
    } else {
        size_t slash = path.find('/', 1);
        ctx->native_provider =
            std::string(path.substr(1, slash == std::string_view::npos ? slash : slash - 1));
        rest = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
        ctx->api = byok::api_family(ctx->native_provider);
        if (ctx->native_provider.empty())
            return fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                        "use /v1/... or /<provider>/... with a gateway key");
    }
    ctx->rest = std::string(rest.empty() ? "/" : rest);
    if (!args.empty()) ctx->rest += "?" + args;
    if (!byok::safe_header_value(ctx->rest) || ctx->rest.find(' ') != std::string::npos)
        return fail(r, ctx, NGX_HTTP_BAD_REQUEST, "invalid_request",
                    "invalid characters in the request URI");

    bool bad_provider_header = false;
    ngx_byok_each_header(r->headers_in.headers, [&](const ngx_table_elt_t &h) {
        std::string_view value = sv(h.value);
        if (ngx_byok_header_is(h, "authorization")) {
            creds.authorization = value;
        } else if (ngx_byok_header_is(h, "x-api-key")) {
            creds.x_api_key = value;
        } else if (ngx_byok_header_is(h, "api-key")) {
            creds.api_key = value;
        } else if (ngx_byok_header_is(h, "x-goog-api-key")) {
            creds.x_goog_api_key = value;
        } else if (ngx_byok_header_is(h, "x-stainless-retry-count")) {
            ctx->client_retrying = byok::client_is_retrying(value);
        } else if (ngx_byok_header_is(h, "x-byok-provider")) {
            bad_provider_header = !byok::safe_header_value(value);
            ctx->header_provider = std::string(value);
        }
        return !bad_provider_header;
    });
    if (bad_provider_header)
        return fail(r, ctx, NGX_HTTP_BAD_REQUEST, "invalid_header",
                    "invalid x-byok-provider header");
    byok::GatewayKeyLookup found = byok::find_gateway_key(creds, ctx->api);
    if (!found.error.empty()) return unauthorized(r, ctx, found.error);
    std::string_view key = found.key;

    byok::sha256(key, ctx->sha);
    ctx->sha_hex = byok::hex_encode(ctx->sha, sizeof(ctx->sha));

    std::string blob;
    ctx->cache_generation = ngx_byok_cache_generation();
    switch (ngx_byok_cache_get(ctx->sha, &blob)) {
        case ByokCacheResult::Fresh:
            ctx->snap = byok::decode_snapshot(blob);
            return after_snapshot(r, ctx);
        case ByokCacheResult::Stale:
            ctx->stale_blob = std::move(blob);
            break;
        case ByokCacheResult::Miss:
            // A miss may be a guessed key costing a Redis call: refused while
            // this client address is over its unknown-key budget.
            if (int64_t wait = ngx_byok_cache_lookup_wait(r->connection)) {
                return too_many_lookups(r, ctx, wait);
            }
            break;
    }
    ngx_int_t rc =
        send_redis(r, ctx, Stage::WaitKey, lookup_command(m->admin.layout, ctx->sha_hex));
    if (rc == NGX_DECLINED) return use_stale_or_fail(r, ctx);
    return rc;
}

void body_ready(ngx_http_request_t *r) {
    ByokRequestCtx *ctx = ngx_byok_request_ctx(r, false);
    r->main->count--;
    if (ctx == nullptr) return;
    ctx->body_read = true;
    if (ctx->waiting_body) {
        ctx->waiting_body = false;
        ctx->resumed = true;
        ngx_http_core_run_phases(r);
    }
}

// Feeds the request body to the model scanner buffer by buffer: memory
// buffers in place, file buffers in bounded pieces through one reused
// buffer, so a body nginx spilled to its temp file never comes back into
// worker memory whole. An empty body is not validated (nothing to route on).
// The Content-Type picks the format (JSON, multipart upload, or opaque).
// Throws byok::BodyError for a bad body; false when the temp file is unreadable.
constexpr size_t kFilePiece = 64 * 1024;

bool scan_body(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    if (r->request_body == nullptr || r->request_body->bufs == nullptr) return true;
    ctx->orig_bufs = r->request_body->bufs;
    byok::BodyScanner scanner(r->headers_in.content_type ? sv(r->headers_in.content_type->value)
                                                         : std::string_view());
    ctx->body_kind = scanner.kind();
    u_char *piece = nullptr;
    bool ok = true;
    for (ngx_chain_t *cl = ctx->orig_bufs; cl && ok; cl = cl->next) {
        ngx_buf_t *b = cl->buf;
        if (ngx_buf_in_memory(b)) {
            scanner.feed({(const char *)b->pos, (size_t)(b->last - b->pos)});
            continue;
        }
        if (!b->in_file) continue;
        if (!scanner.reads_bytes()) {  // an opaque body stays on disk
            scanner.skip((size_t)(b->file_last - b->file_pos));
            continue;
        }
        if (piece == nullptr) piece = static_cast<u_char *>(ngx_palloc(r->pool, kFilePiece));
        if (piece == nullptr) return false;
        for (off_t at = b->file_pos; at < b->file_last && ok;) {
            size_t want = (size_t)ngx_min((off_t)kFilePiece, b->file_last - at);
            ok = ngx_read_file(b->file, piece, want, at) == (ssize_t)want;
            if (ok) scanner.feed({(const char *)piece, want});
            at += want;
        }
    }
    if (piece != nullptr) ngx_pfree(r->pool, piece);
    if (!ok) return false;
    ctx->body_len = scanner.offset();
    if (ctx->body_len > 0) ctx->model = scanner.finish();
    return true;
}

ngx_int_t after_snapshot(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    if (ctx->snap.status == byok::GatewaySnapshot::Status::Unknown)
        return unauthorized(r, ctx, "unknown gateway API key");
    if (ctx->snap.status == byok::GatewaySnapshot::Status::Revoked)
        return unauthorized(r, ctx, "this gateway API key has been revoked");

    bool has_body = r->headers_in.content_length_n > 0 || r->headers_in.chunked;
    if (ctx->unified && has_body && !ctx->body_read) {
        ctx->stage = Stage::WaitBody;
        ngx_int_t rc = ngx_http_read_client_request_body(r, body_ready);
        if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) return rc;
        if (!ctx->body_read) {
            ctx->waiting_body = true;
            return NGX_DONE;
        }
    }
    return decide(r, ctx);
}

// Writes `bytes` over a temp file from offset `at`.
bool blank_in_file(ngx_file_t *file, off_t at, std::string_view bytes) {
    off_t keep = file->offset;  // the request-body code's own write position
    bool ok =
        ngx_write_file(file, (u_char *)bytes.data(), bytes.size(), at) == (ssize_t)bytes.size();
    file->offset = keep;
    return ok;
}

// The body chain with the model value replaced by `token`, built from the
// client's buffers without copying them: slices before the value, one small
// buffer with the token, slices after. Bytes of the old value that sit in
// memory are sliced out; bytes in the temp file are overwritten in place
// with the format's filler (JSON whitespace, a multipart padding header;
// nginx keeps a spilled body whole in the file, so a span is never half in
// memory), so the file pieces stay contiguous from offset 0 — nginx's
// upstream retry (ngx_http_upstream_reinit) rewinds file pieces assuming
// exactly that, and memory slices get start = pos for the same reason.
ngx_int_t splice_model(ngx_http_request_t *r, ByokRequestCtx *ctx, const std::string &token,
                       ngx_chain_t **out, off_t *len) {
    const off_t s = (off_t)ctx->model->begin, e = (off_t)ctx->model->end;
    ngx_chain_t *head = nullptr, **tail = &head;
    off_t total = 0;
    bool inserted = false;
    const std::string filler = byok::span_filler(*ctx->model);
    auto emit = [&](ngx_buf_t *b) -> bool {
        ngx_chain_t *cl = ngx_alloc_chain_link(r->pool);
        if (cl == nullptr) return false;
        b->last_buf = 0;
        b->last_in_chain = 0;
        cl->buf = b;
        cl->next = nullptr;
        *tail = cl;
        tail = &cl->next;
        total += ngx_buf_size(b);
        return true;
    };
    auto piece = [&](const ngx_buf_t *src, off_t from, off_t to) -> ngx_buf_t * {
        auto *b = static_cast<ngx_buf_t *>(ngx_palloc(r->pool, sizeof(ngx_buf_t)));
        if (b == nullptr) return nullptr;
        *b = *src;
        if (ngx_buf_in_memory(src)) {
            b->start = b->pos = src->pos + from;
            b->end = b->last = src->pos + to;
            b->in_file = 0;
        } else {
            b->file_pos = src->file_pos + from;
            b->file_last = src->file_pos + to;
        }
        return b;
    };
    auto insert_token = [&]() -> bool {
        inserted = true;
        ngx_buf_t *b = ngx_create_temp_buf(r->pool, token.size());
        if (b == nullptr) return false;
        b->last = ngx_cpymem(b->pos, token.data(), token.size());
        return emit(b);
    };

    off_t at = 0;
    ngx_buf_t *last = nullptr;
    for (ngx_chain_t *cl = ctx->orig_bufs; cl; cl = cl->next) {
        ngx_buf_t *src = cl->buf;
        last = src;
        off_t size = ngx_buf_size(src);
        bool memory = ngx_buf_in_memory(src);
        if (size == 0 || (!memory && !src->in_file)) continue;
        // Up to three parts of this buffer: before, inside and after the value.
        off_t cut[4] = {0, ngx_max(0, ngx_min(size, s - at)), ngx_max(0, ngx_min(size, e - at)),
                        size};
        for (int part = 0; part < 3; part++) {
            off_t from = cut[part], to = cut[part + 1];
            if (from == to) continue;
            if (part == 2 && !inserted && !insert_token()) return NGX_ERROR;
            if (part == 1 && memory) continue;  // the old value, left out
            if (part == 1) {
                std::string_view fill(filler);
                if (!blank_in_file(src->file, src->file_pos + from,
                                   fill.substr((size_t)(at + from - s), (size_t)(to - from))))
                    return NGX_ERROR;
                ctx->body_blanked = true;
            }
            ngx_buf_t *b = piece(src, from, to);
            if (b == nullptr || !emit(b)) return NGX_ERROR;
        }
        at += size;
    }
    if (!inserted && !insert_token()) return NGX_ERROR;
    if (last != nullptr) {
        for (ngx_chain_t *cl = head; cl; cl = cl->next) {
            if (cl->next == nullptr) {
                cl->buf->last_buf = last->last_buf;
                cl->buf->last_in_chain = last->last_in_chain;
            }
        }
    }
    *out = head;
    *len = total;
    return NGX_OK;
}

// Points the proxy at `d.target` with `key`, rewriting headers and body.
ngx_int_t setup_upstream(ngx_http_request_t *r, ByokRequestCtx *ctx, const byok::RouteDecision &d) {
    const byok::Provider &target = *d.target;
    byok::Url base = ctx->unified ? target.openai_base : target.base_url;
    std::string origin = base.origin();
    if (target.per_key_endpoint) {
        // decide() resolved and checked the tenant's endpoint first.
        base = byok::parse_url(ctx->snap.find_key(target.id)->endpoint, "endpoint");
        origin = ngx_byok_pinned_origin(base, ctx->pinned_ip);
    }
    ctx->upstream = origin + base.path + ctx->rest;
    ctx->upstream_host = base.authority();

    if (ngx_byok_install_headers(r, ctx, byok::upstream_headers(target, ctx->key.view()), true) !=
        NGX_OK)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    if (ctx->body_read && r->request_body != nullptr && ctx->orig_bufs != nullptr) {
        // Only a changed model costs anything; otherwise the client's buffers
        // go upstream as they are (restored if a first attempt rewrote them).
        ngx_chain_t *bufs = ctx->orig_bufs;
        off_t len = (off_t)ctx->body_len;
        if (ctx->model && (d.model_changed || ctx->body_blanked)) {
            const std::string &model = d.model_changed ? d.model : ctx->model->model;
            if (splice_model(r, ctx, byok::model_token(*ctx->model, model), &bufs, &len) != NGX_OK)
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        if (ngx_byok_meter_prepare_body(r, ctx, &bufs, &len) != NGX_OK)
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        r->request_body->bufs = bufs;
        r->headers_in.content_length_n = len;
        r->headers_in.chunked = 0;
    }
    return NGX_OK;
}

// The operator's key for the decided target (routes system and fallback);
// a fallback is counted and logged here, once for both ways of reaching it.
// NGX_OK, or NGX_DONE when the error response has been sent.
ngx_int_t take_operator_key(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    const byok::RouteDecision &d = ctx->decision;
    const byok::SecretString *sys = main_of(r)->system_key(d.target->id);
    if (sys == nullptr)
        return fail(r, ctx, NGX_HTTP_FORBIDDEN, "no_credential", "no credential for this provider",
                    "permission_error");
    ctx->key = byok::SecretString(sys->view());
    ctx->key_hint.clear();
    if (d.route == byok::Route::Fallback) {
        ngx_byok_count_fallback(d.reason);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      BYOK_LOG "fallback: project \"%s\" provider \"%s\" -> \"%s\" reason %s",
                      ctx->snap.project.c_str(), d.provider->id.c_str(), d.target->id.c_str(),
                      d.reason.c_str());
    }
    return NGX_OK;
}

ngx_int_t decide(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    ByokMain *m = main_of(r);
    if (ctx->body_read) {
        try {
            if (!scan_body(r, ctx))
                return fail(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR, "internal_error",
                            "cannot read the request body", "api_error");
        } catch (const byok::BodyError &e) {
            return fail(r, ctx, NGX_HTTP_BAD_REQUEST, e.code, e.what());
        }
        if (ctx->model && !byok::safe_header_value(ctx->model->model))
            return fail(r, ctx, NGX_HTTP_BAD_REQUEST, "invalid_model",
                        "invalid characters in \"model\"");
    }

    byok::RouteInput &in = ctx->input;
    in.catalog = &m->catalog;
    in.tier = ctx->snap.tier;
    in.policy = ctx->snap.policy;
    in.project_keys.clear();
    // A malformed record goes through the decrypt attempt below like any
    // other undecryptable one, so it is logged and counted the same way.
    for (const auto &k : ctx->snap.keys) {
        in.project_keys.emplace_back(k.provider, k.malformed || k.is_active
                                                     ? byok::KeyState::Usable
                                                     : byok::KeyState::Inactive);
    }
    in.system_keys.clear();
    for (const auto &sk : m->system_keys) in.system_keys.push_back(sk.provider);
    in.fallback_provider = m->fallback;
    in.fallback_on_rate_limit = ctx->snap.fallback_on_rate_limit;
    in.client_retrying = ngx_byok_idempotency_repeat(r, ctx->sha) || ctx->client_retrying;
    in.bodiless = ctx->unified && (!ctx->body_read || ctx->body_kind != byok::BodyKind::Json);
    in.default_provider = ctx->snap.default_provider;
    in.native_provider = ctx->native_provider;
    in.header_provider = ctx->header_provider;
    in.model = ctx->model ? std::string_view(ctx->model->model) : std::string_view();

    for (int attempt = 0; attempt < 2; attempt++) {
        ctx->decision = byok::decide_route(in);
        if (ctx->decision.route != byok::Route::Byok) break;
        const byok::StoredKey *sk = ctx->snap.find_key(ctx->decision.target->id);
        try {
            if (sk == nullptr) throw byok::Error("record vanished");
            if (sk->malformed) throw byok::Error("the stored record is malformed");
            ctx->key = byok::open_stored_key(m->ring, ctx->snap.project, *sk);
            ctx->key_hint = sk->key_hint;
            break;
        } catch (const byok::Error &e) {
            ngx_byok_count(BYOK_DECRYPT_FAILURE);
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          BYOK_LOG
                          "stored key of project \"%s\" for provider \"%s\" does not decrypt: %s",
                          ctx->snap.project.c_str(), ctx->decision.target->id.c_str(), e.what());
            for (auto &pk : in.project_keys)
                if (pk.first == ctx->decision.target->id) pk.second = byok::KeyState::DecryptError;
        }
    }
    ctx->decided = true;
    const byok::RouteDecision &d = ctx->decision;
    if (auto list = byok::models_list_answer(in, d, sv(r->method_name), ctx->rest)) {
        ctx->stage = Stage::Done;
        ngx_http_finalize_request(r, ngx_byok_send_json(r, NGX_HTTP_OK, *list));
        return NGX_DONE;
    }
    if (d.route == byok::Route::Denied)
        return fail(r, ctx, d.status ? d.status : NGX_HTTP_FORBIDDEN, d.error_code, d.error_message,
                    d.status == NGX_HTTP_FORBIDDEN ? "permission_error"
                    : d.status >= 500              ? "api_error"
                                                   : "invalid_request_error");
    if (d.route != byok::Route::Byok && take_operator_key(r, ctx) != NGX_OK) return NGX_DONE;
    if (d.target->per_key_endpoint) return resolve_endpoint(r, ctx);
    return proxy_decision(r, ctx);
}

// A custom endpoint is chosen by the tenant: resolve it ourselves, refuse
// private addresses (SPEC §10) and connect to the address that was checked.
ngx_int_t resolve_endpoint(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    const byok::StoredKey *sk = ctx->snap.find_key(ctx->decision.target->id);
    if (sk == nullptr || sk->endpoint.empty())
        return fail(r, ctx, 422, "no_endpoint", "no endpoint configured for this provider");
    byok::Url url = byok::parse_url(sk->endpoint, "endpoint");
    ctx->stage = Stage::WaitResolve;
    ctx->resumed = false;
    ctx->waiting_resolve = false;
    ngx_int_t rc =
        ngx_byok_resolve_checked(r, url, [ctx](const std::string &ip, const std::string &error) {
            ctx->pinned_ip = ip;
            ctx->resolve_error = error;
            ctx->resumed = true;
            if (ctx->waiting_resolve) {
                ngx_http_request_t *req = ctx->r;
                ngx_connection_t *c = req->connection;
                ngx_http_core_run_phases(req);
                ngx_http_run_posted_requests(c);
            }
        });
    if (rc != NGX_OK) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    if (!ctx->resumed) {
        ctx->waiting_resolve = true;  // the answer arrives from a posted event
        return NGX_AGAIN;
    }
    return after_resolve(r, ctx);
}

ngx_int_t after_resolve(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    if (ctx->pinned_ip.empty()) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      BYOK_LOG "custom endpoint of project \"%s\" refused: %s",
                      ctx->snap.project.c_str(), ctx->resolve_error.c_str());
        return fail(r, ctx, NGX_HTTP_BAD_GATEWAY, "endpoint_refused",
                    "the custom endpoint was refused: " + ctx->resolve_error, "api_error");
    }
    return proxy_decision(r, ctx);
}

ngx_int_t proxy_decision(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    const byok::RouteDecision &d = ctx->decision;
    byok::RouteInput &in = ctx->input;
    ngx_int_t rc = setup_upstream(r, ctx, d);
    if (rc != NGX_OK) return rc;

    ctx->stage = Stage::Proxying;
    // Each location intercepts exactly the failures a retry may follow;
    // the others reach the client as the provider sent them.
    byok::RetryOn on = byok::retry_on(in, d);
    if (on == byok::RetryOn::ServerErrorsAnd429) return NGX_DECLINED;
    ngx_str_t name = ngx_string("@byok_direct");
    if (on == byok::RetryOn::ServerErrors) name = ngx_string("@byok_fallback_5xx");
    ctx->jumped = true;
    (void)ngx_http_named_location(r, &name);
    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}

// Re-entry through error_page after the direct call failed before any byte.
ngx_int_t retry(ngx_http_request_t *r, ByokRequestCtx *ctx) {
    std::string reason = "upstream_error";
    ngx_uint_t status = NGX_HTTP_BAD_GATEWAY;
    if (r->upstream_states && r->upstream_states->nelts) {
        auto *st = static_cast<ngx_http_upstream_state_t *>(r->upstream_states->elts);
        ngx_http_upstream_state_t &last = st[r->upstream_states->nelts - 1];
        if (last.status) status = last.status;
        if (last.bytes_received > 0 && last.status)
            reason = "upstream_" + std::to_string(last.status);
    }
    auto next = byok::decide_retry(ctx->input, ctx->decision, reason);
    if (!next) {
        return fail(r, ctx, status, "upstream_error", "the provider failed: " + reason,
                    "api_error");
    }
    ctx->decision = *next;
    ctx->stage = Stage::Fallback;
    if (take_operator_key(r, ctx) != NGX_OK) return NGX_DONE;
    ngx_int_t rc = setup_upstream(r, ctx, ctx->decision);
    return rc == NGX_OK ? NGX_DECLINED : rc;
}

ngx_int_t dispatch(ngx_http_request_t *r, ByokRequestCtx *ctx) {
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
            return decide(r, ctx);
        case Stage::WaitResolve:
            if (!ctx->resumed) return NGX_AGAIN;
            ctx->resumed = false;
            return after_resolve(r, ctx);
        case Stage::Proxying:
            if (ctx->jumped) {
                ctx->jumped = false;  // now in @byok_direct or @byok_fallback_5xx
                return NGX_DECLINED;
            }
            return retry(r, ctx);
        case Stage::Fallback:
        case Stage::KeyTest:
            return NGX_DECLINED;
        case Stage::Done:
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    return NGX_DECLINED;
}

ngx_int_t access_handler(ngx_http_request_t *r) {
    auto *lcf =
        static_cast<ngx_byok_loc_conf_t *>(ngx_http_get_module_loc_conf(r, ngx_http_byok_module));
    if (!lcf->gateway || r != r->main) return NGX_DECLINED;
    ByokRequestCtx *ctx = ngx_byok_request_ctx(r, true);
    if (ctx == nullptr) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    try {
        return dispatch(r, ctx);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, BYOK_LOG "gateway: %s", e.what());
        return fail(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR, "internal_error",
                    "internal gateway error", "api_error");
    }
}

// --- response headers, accounting ---

ngx_int_t set_header(ngx_http_request_t *r, const char *name, std::string_view value) {
    ngx_table_elt_t *h = static_cast<ngx_table_elt_t *>(ngx_list_push(&r->headers_out.headers));
    if (h == nullptr) return NGX_ERROR;
    u_char *v = static_cast<u_char *>(ngx_pnalloc(r->pool, value.size()));
    if (v == nullptr && !value.empty()) return NGX_ERROR;
    ngx_memcpy(v, value.data(), value.size());
    h->hash = 1;
    h->key.data = (u_char *)name;
    h->key.len = ngx_strlen(name);
    h->value.data = v;
    h->value.len = value.size();
    return NGX_OK;
}

ngx_int_t header_filter(ngx_http_request_t *r) {
    if (r == r->main) {
        ByokRequestCtx *ctx = ngx_byok_request_ctx(r, false);
        if (ctx != nullptr && ctx->decided && ctx->stage != Stage::KeyTest) {
            const byok::RouteDecision &d = ctx->decision;
            set_header(r, "x-byok-route", byok::route_name(d.route));
            if (d.provider) set_header(r, "x-byok-provider", d.provider->id);
            if (d.route == byok::Route::Fallback) set_header(r, "x-byok-fallback-reason", d.reason);
        }
    }
    return g_next_header_filter(r);
}

ngx_int_t log_handler(ngx_http_request_t *r) {
    ByokRequestCtx *ctx = ngx_byok_request_ctx(r, false);
    if (ctx == nullptr || !ctx->decided || ctx->stage == Stage::KeyTest) return NGX_OK;
    try {
        ByokMain *m = main_of(r);
        const byok::RouteDecision &d = ctx->decision;
        ngx_msec_t upstream_ms = 0;
        bool had_upstream = r->upstream_states && r->upstream_states->nelts;
        if (had_upstream) {
            auto *st = static_cast<ngx_http_upstream_state_t *>(r->upstream_states->elts);
            for (ngx_uint_t i = 0; i < r->upstream_states->nelts; i++)
                if (st[i].response_time != (ngx_msec_t)-1) upstream_ms += st[i].response_time;
        }
        ngx_byok_count_request(m->catalog, d.provider, d.route, r->headers_out.status, upstream_ms,
                               had_upstream);
        if (d.route != byok::Route::Denied && d.provider != nullptr && !ctx->snap.project.empty()) {
            ngx_byok_usage_add(m->admin.layout, ctx->snap.project, d.provider->id, d.route);
        }
    } catch (const std::exception &) {
    }
    return NGX_OK;
}

// --- variables ---

enum class Var {
    Project,
    Provider,
    Model,
    Route,
    Reason,
    KeyHint,
    RequestId,
    ExecServer,
    Upstream,
    UpstreamHost,
    UpstreamMethod
};

ngx_int_t variable(ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data) {
    ByokRequestCtx *ctx = ngx_byok_request_ctx(r, false);
    std::string_view val;
    std::string tmp;
    bool found = ctx != nullptr;
    if (ctx != nullptr) {
        const byok::RouteDecision &d = ctx->decision;
        switch (static_cast<Var>(data)) {
            case Var::Project:
                val = ctx->snap.project;
                break;
            case Var::Provider:
                if (ctx->decided && d.provider) val = d.provider->id;
                break;
            case Var::Model:
                val =
                    ctx->decided && !d.model.empty() ? std::string_view(d.model) : ctx->input.model;
                break;
            case Var::Route:
                if (ctx->decided) val = byok::route_name(d.route);
                break;
            case Var::Reason:
                if (ctx->decided && d.route == byok::Route::Fallback) val = d.reason;
                break;
            case Var::KeyHint:
                if (ctx->decided && d.route == byok::Route::Byok) val = ctx->key_hint;
                break;
            case Var::RequestId:
                found = false;
                break;
            case Var::ExecServer:
                val = ctx->snap.default_server;
                break;
            case Var::Upstream:
                val = ctx->upstream;
                found = !val.empty();
                break;
            case Var::UpstreamHost:
                val = ctx->upstream_host;
                break;
            case Var::UpstreamMethod:
                val = ctx->upstream_method;
                break;
        }
    }
    if (static_cast<Var>(data) == Var::RequestId) {
        auto *mcf = static_cast<ngx_byok_main_conf_t *>(
            ngx_http_get_module_main_conf(r, ngx_http_byok_module));
        ngx_http_variable_value_t *rid = ngx_http_get_indexed_variable(r, mcf->request_id_index);
        if (rid == nullptr || rid->not_found) {
            v->not_found = 1;
            return NGX_OK;
        }
        *v = *rid;
        return NGX_OK;
    }
    if (!found) {
        v->not_found = 1;
        return NGX_OK;
    }
    return ngx_byok_variable_value(r, v, val);
}

struct VarDef {
    ngx_str_t name;
    Var which;
};
VarDef g_vars[] = {
    {ngx_string("byok_project"), Var::Project},
    {ngx_string("byok_provider"), Var::Provider},
    {ngx_string("byok_model"), Var::Model},
    {ngx_string("byok_route"), Var::Route},
    {ngx_string("byok_fallback_reason"), Var::Reason},
    {ngx_string("byok_key_hint"), Var::KeyHint},
    {ngx_string("byok_request_id"), Var::RequestId},
    {ngx_string("byok_execution_server"), Var::ExecServer},
    {ngx_string("byok_upstream"), Var::Upstream},
    {ngx_string("byok_upstream_host"), Var::UpstreamHost},
    {ngx_string("byok_upstream_method"), Var::UpstreamMethod},
};

}  // namespace

ngx_int_t ngx_byok_variable_value(ngx_http_request_t *r, ngx_http_variable_value_t *v,
                                  std::string_view val) {
    u_char *p = static_cast<u_char *>(ngx_pnalloc(r->pool, val.size() + 1));
    if (p == nullptr) return NGX_ERROR;
    ngx_memcpy(p, val.data(), val.size());
    v->data = p;
    v->len = val.size();
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    return NGX_OK;
}

ByokRequestCtx::~ByokRequestCtx() {
    ngx_byok_redis_cancel(waiter);
    for (auto &w : wipe_on_exit) byok::wipe(w.first, w.second);
}

ByokRequestCtx *ngx_byok_request_ctx(ngx_http_request_t *r, bool create) {
    auto *ctx = static_cast<ByokRequestCtx *>(ngx_http_get_module_ctx(r, ngx_http_byok_module));
    if (ctx != nullptr) return ctx->tag == ByokRequestCtx::kTag ? ctx : nullptr;
    // r->ctx is cleared by named-location jumps; the cleanup entry survives.
    for (ngx_pool_cleanup_t *cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ctx_cleanup && static_cast<ByokRequestCtx *>(cln->data)->r == r) {
            ctx = static_cast<ByokRequestCtx *>(cln->data);
            ngx_http_set_ctx(r, ctx, ngx_http_byok_module);
            return ctx;
        }
    }
    if (!create) return nullptr;
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool, sizeof(ByokRequestCtx));
    if (cln == nullptr) return nullptr;
    ctx = new (cln->data) ByokRequestCtx();
    ctx->r = r;
    cln->handler = ctx_cleanup;
    ngx_http_set_ctx(r, ctx, ngx_http_byok_module);
    return ctx;
}

ngx_int_t ngx_byok_install_headers(ngx_http_request_t *r, ByokRequestCtx *ctx,
                                   const std::vector<byok::Header> &add, bool keep_client) {
    if (!ctx->have_client_headers) {
        ctx->client_headers = r->headers_in.headers;
        ctx->have_client_headers = true;
    }
    ngx_list_t list;
    if (ngx_list_init(&list, r->pool, 20, sizeof(ngx_table_elt_t)) != NGX_OK) return NGX_ERROR;

    auto push = [&](const ngx_table_elt_t &src) -> bool {
        auto *h = static_cast<ngx_table_elt_t *>(ngx_list_push(&list));
        if (h == nullptr) return false;
        *h = src;
        return true;
    };
    // A default header the client sent itself is kept as the client's.
    auto client_has = [&](const std::string &name) {
        bool seen = false;
        ngx_byok_each_header(ctx->client_headers, [&](const ngx_table_elt_t &h) {
            seen = seen || ngx_byok_header_is(h, name);
            return !seen;
        });
        return seen;
    };
    if (keep_client) {
        bool ok = ngx_byok_each_header(ctx->client_headers, [&](const ngx_table_elt_t &h) {
            if (is_client_secret_header(h)) return true;
            for (const auto &a : add) {
                if (!a.default_only && ngx_byok_header_is(h, a.name)) return true;  // ours wins
            }
            return push(h);
        });
        if (!ok) return NGX_ERROR;
    }
    for (const auto &a : add) {
        if (keep_client && a.default_only && client_has(a.name)) continue;
        ngx_table_elt_t h{};
        h.hash = 1;
        h.key.len = a.name.size();
        h.key.data =
            static_cast<u_char *>(ngx_pnalloc(r->pool, a.name.size() + a.value.size() + 2));
        if (h.key.data == nullptr) return NGX_ERROR;
        ngx_memcpy(h.key.data, a.name.data(), a.name.size());
        h.key.data[a.name.size()] = '\0';
        h.value.data = h.key.data + a.name.size() + 1;
        h.value.len = a.value.size();
        ngx_memcpy(h.value.data, a.value.data(), a.value.size());
        h.value.data[a.value.size()] = '\0';
        h.lowcase_key = static_cast<u_char *>(ngx_pnalloc(r->pool, a.name.size()));
        if (h.lowcase_key == nullptr) return NGX_ERROR;
        ngx_strlow(h.lowcase_key, h.key.data, h.key.len);
        ctx->wipe_on_exit.emplace_back(h.value.data, h.value.len);
        if (!push(h)) return NGX_ERROR;
    }
    r->headers_in.headers = list;
    r->headers_in.authorization = nullptr;
    return NGX_OK;
}

ngx_int_t ngx_byok_add_phase_handler(ngx_conf_t *cf, ngx_http_phases phase,
                                     ngx_http_handler_pt handler) {
    auto *cmcf = static_cast<ngx_http_core_main_conf_t *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module));
    auto *h = static_cast<ngx_http_handler_pt *>(ngx_array_push(&cmcf->phases[phase].handlers));
    if (h == nullptr) return NGX_ERROR;
    *h = handler;
    return NGX_OK;
}

ngx_int_t ngx_byok_gateway_init(ngx_conf_t *cf) {
    for (auto &def : g_vars) {
        ngx_http_variable_t *v = ngx_http_add_variable(cf, &def.name, NGX_HTTP_VAR_NOCACHEABLE);
        if (v == nullptr) return NGX_ERROR;
        v->get_handler = variable;
        v->data = static_cast<uintptr_t>(def.which);
    }
    if (ngx_byok_add_phase_handler(cf, NGX_HTTP_ACCESS_PHASE, access_handler) != NGX_OK ||
        ngx_byok_add_phase_handler(cf, NGX_HTTP_LOG_PHASE, log_handler) != NGX_OK)
        return NGX_ERROR;
    g_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = header_filter;
    return NGX_OK;
}
